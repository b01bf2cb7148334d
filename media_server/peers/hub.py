"""RelayHub: every aiortc peer of this process, by room — the publish and subscribe
connections of the relay, and the room's recording (consent checked at the start and
re-checked during it, a new file when the publishers change)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from sqlalchemy.orm import Session

from media_server.peers import recorder as rec
from media_server.peers.forwarding import (
    EncodedTee,
    ForwardedAudio,
    ForwardedVideo,
    prefer_forwarded_codecs,
)
from models import recording_consents

log = logging.getLogger("media_server.peers")

DEFAULT_MAX_PUBLISHERS = 6
ROLE_ORDER = {"patient": 0, "doctor": 1}
# Publishers changing in a burst make one new file, not several.
RECORD_SETTLE_SECONDS = 1.0
# A consent withdrawn in the web app during a recording stops it within this time.
CONSENT_RECHECK_SECONDS = 5.0


class PeerError(Exception):
    """Refused; `code` goes back in the ack."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def rtc_configuration(ice_servers: list[dict] | None) -> RTCConfiguration:
    servers = []
    for entry in ice_servers or []:
        urls = entry.get("urls")
        if not urls:
            continue
        servers.append(
            RTCIceServer(
                urls=urls, username=entry.get("username"), credential=entry.get("credential")
            )
        )
    return RTCConfiguration(iceServers=servers)


async def _drain(track: MediaStreamTrack) -> None:
    """Consume a relayed copy so the source keeps being read (and its queue stays empty)."""
    with contextlib.suppress(MediaStreamError, asyncio.CancelledError):
        while True:
            await track.recv()


@dataclass
class Publisher:
    sid: str
    room: str
    pc: RTCPeerConnection
    role: str = ""
    tracks: dict[str, MediaStreamTrack] = field(default_factory=dict)  # kind → remote track
    drains: list[asyncio.Task] = field(default_factory=list)
    video_tee: EncodedTee | None = None
    audio_tee: EncodedTee | None = None
    # Changes with every publish connection: a subscriber seeing a new `pub` for the same sid
    # knows its connection to the old one was closed and subscribes again.
    pub: str = field(default_factory=lambda: secrets.token_hex(6))

    def as_source(self) -> dict[str, Any]:
        return {
            "sid": self.sid,
            "pub": self.pub,
            "audio": "audio" in self.tracks,
            "video": "video" in self.tracks,
        }


@dataclass
class RoomRecording:
    room: str
    consultation_id: int
    started_by: str  # the doctor's sid: the recording stops when that socket leaves
    recorder: rec.Recorder | None = None
    restart: asyncio.Task | None = None
    watcher: asyncio.Task | None = None
    saved: list[rec.SavedRecording] = field(default_factory=list)


class RelayHub:
    """Every aiortc peer of this process, by room. Transport-agnostic: socket.io is a wrapper."""

    def __init__(
        self,
        *,
        ice_servers: list[dict] | None = None,
        max_publishers: int = DEFAULT_MAX_PUBLISHERS,
        recordings_dir: str = "",
        session_factory: Callable[[], Session] | None = None,
        notify: Callable[[str, str, dict], Awaitable[None]] | None = None,
        consent_recheck_seconds: float = CONSENT_RECHECK_SECONDS,
    ) -> None:
        self.consent_recheck_seconds = consent_recheck_seconds
        self.ice_servers = ice_servers or []
        self.max_publishers = max_publishers
        self.recordings_dir = recordings_dir
        self.session_factory = session_factory
        # notify(room, event, payload): how the room hears of changes (sio.emit in production)
        self.notify = notify
        self.relay = MediaRelay()
        self.publishers: dict[str, Publisher] = {}
        self.subscriptions: dict[tuple[str, str], RTCPeerConnection] = {}  # (subscriber, source)
        self._sub_room: dict[tuple[str, str], str] = {}
        self.recordings: dict[str, RoomRecording] = {}
        self._lock = asyncio.Lock()
        self._saving: set[asyncio.Future] = set()  # stops whose file is still being saved

    # --- queries --------------------------------------------------------------------------

    def sources(self, room: str) -> list[dict[str, Any]]:
        return [p.as_source() for p in self.publishers.values() if p.room == room]

    def is_recording(self, room: str) -> bool:
        return room in self.recordings

    def peer_count(self, room: str | None = None) -> int:
        pubs = [p for p in self.publishers.values() if room is None or p.room == room]
        subs = [k for k, r in self._sub_room.items() if room is None or r == room]
        return len(pubs) + len(subs)

    # --- relay ----------------------------------------------------------------------------

    def _new_pc(self) -> RTCPeerConnection:
        return RTCPeerConnection(rtc_configuration(self.ice_servers))

    async def publish(self, sid: str, room: str, offer_sdp: str, *, role: str = "") -> str:
        """The client's sendonly offer → our answer. Replaces this sid's previous publish."""
        others = [p for p in self.publishers.values() if p.room == room and p.sid != sid]
        if len(others) >= self.max_publishers:
            raise PeerError("room_full")
        await self.unpublish(sid, announce=False)
        pc = self._new_pc()
        publisher = Publisher(sid=sid, room=room, pc=pc, role=role)

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind in publisher.tracks:
                return  # one track of each kind per publisher
            publisher.tracks[track.kind] = track
            receiver = next(t.receiver for t in pc.getTransceivers() if t.receiver.track is track)
            tee = EncodedTee.attach(receiver)
            if track.kind == "video":
                publisher.video_tee = tee
                if tee is not None:
                    return  # nothing decodes it: there is no decoded copy to keep consumed
            else:
                # Decoded only while recording (the recorder mixes everybody's voice); the
                # recording's start sees this publisher and switches it on.
                publisher.audio_tee = tee
            copy = self.relay.subscribe(track, buffered=False)
            publisher.drains.append(asyncio.ensure_future(_drain(copy)))

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                current = self.publishers.get(sid)
                if current is publisher:
                    await self.unpublish(sid)

        try:
            answer_sdp = await self._answer(pc, offer_sdp)
        except PeerError:
            await self._close_publisher(publisher)
            raise
        # Another publish of this sid may have finished while we negotiated: the last one
        # wins, and the one it replaces is closed, never left open beside it.
        while self.publishers.get(sid) is not None:
            await self.unpublish(sid, announce=False)
        self.publishers[sid] = publisher
        await self._announce(room)
        await self._publishers_changed(room)
        return answer_sdp

    async def subscribe(self, sid: str, room: str, source: str, offer_sdp: str) -> str:
        """The client's recvonly offer → our answer carrying `source`'s relayed tracks."""
        publisher = self.publishers.get(source)
        if publisher is None or publisher.room != room or source == sid:
            raise PeerError("not_found")
        await self.unsubscribe(sid, source)
        pc = self._new_pc()
        key = (sid, source)

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState in ("failed", "closed") and self.subscriptions.get(key) is pc:
                await self.unsubscribe(sid, source)

        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
            if not pc.getTransceivers():
                raise ValueError("an offer without audio or video")
            prefer_forwarded_codecs(pc)
            for track in publisher.tracks.values():
                tee = publisher.video_tee if track.kind == "video" else publisher.audio_tee
                if tee is None:
                    pc.addTrack(self.relay.subscribe(track, buffered=False))
                    continue
                if track.kind == "audio":
                    pc.addTrack(ForwardedAudio(tee))
                    continue
                tee.forward_keyframe_requests(pc.addTrack(ForwardedVideo(tee)))
                tee.request_keyframe()
            answer = await pc.createAnswer()
            await pc.setLocalDescription(answer)
        except Exception as exc:
            await pc.close()
            log.info("subscribe offer refused: %s", exc)
            raise PeerError("bad_request") from exc
        while key in self.subscriptions:  # a concurrent subscribe of the same pair finished
            await self.unsubscribe(sid, source)
        if self.publishers.get(source) is not publisher:
            # The source left or published anew while we negotiated: unpublish() could not
            # see this connection, so it is closed here.
            await self._close_pc_tracks(pc)
            raise PeerError("not_found")
        self.subscriptions[key] = pc
        self._sub_room[key] = room
        return pc.localDescription.sdp

    async def _answer(self, pc: RTCPeerConnection, offer_sdp: str) -> str:
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
            if not pc.getTransceivers():
                raise ValueError("an offer without audio or video")
            prefer_forwarded_codecs(pc)
            answer = await pc.createAnswer()
            await pc.setLocalDescription(answer)
        except Exception as exc:  # aiortc raises ValueError and friends on a bad SDP
            log.info("publish offer refused: %s", exc)
            raise PeerError("bad_request") from exc
        return pc.localDescription.sdp

    async def unsubscribe(self, sid: str, source: str) -> None:
        key = (sid, source)
        pc = self.subscriptions.pop(key, None)
        self._sub_room.pop(key, None)
        if pc is not None:
            await self._close_pc_tracks(pc)

    @staticmethod
    async def _close_pc_tracks(pc: RTCPeerConnection) -> None:
        # Stop the relayed copies we gave the senders: MediaRelay then forgets them.
        for sender in pc.getSenders():
            if sender.track is not None:
                sender.track.stop()
        await pc.close()

    async def _close_publisher(self, publisher: Publisher) -> None:
        for task in publisher.drains:
            task.cancel()
        await publisher.pc.close()  # ends the remote tracks: every relayed copy ends too

    async def unpublish(self, sid: str, *, announce: bool = True) -> None:
        publisher = self.publishers.pop(sid, None)
        if publisher is None:
            return
        for key in [k for k in self.subscriptions if k[1] == sid]:
            await self.unsubscribe(*key)
        await self._close_publisher(publisher)
        if announce:
            await self._announce(publisher.room)
            await self._publishers_changed(publisher.room)

    async def forget(self, sid: str) -> None:
        """The socket left the room or disconnected: close everything it had."""
        for key in [k for k in self.subscriptions if k[0] == sid]:
            await self.unsubscribe(*key)
        await self.unpublish(sid)
        for recording in list(self.recordings.values()):
            if recording.started_by == sid:
                await self.stop_recording(recording.room)

    async def end_room(self, room: str) -> None:
        await self.stop_recording(room)
        for key in [k for k, r in self._sub_room.items() if r == room]:
            await self.unsubscribe(*key)
        for sid in [s for s, p in self.publishers.items() if p.room == room]:
            await self.unpublish(sid, announce=False)
        await self._announce(room)

    async def close(self) -> None:
        for room in {p.room for p in self.publishers.values()} | set(self.recordings):
            await self.end_room(room)
        for key in list(self.subscriptions):
            await self.unsubscribe(*key)
        if self._saving:  # a stop already under way (consent withdrawn, the doctor left) saves
            await asyncio.gather(*self._saving)

    async def _announce(self, room: str) -> None:
        if self.notify is not None:
            await self.notify(room, "relay.sources", {"sources": self.sources(room)})

    # --- recording ------------------------------------------------------------------------

    async def start_recording(self, room: str, consultation_id: int, *, by_sid: str) -> None:
        if room in self.recordings:
            raise PeerError("already_recording")
        if self.session_factory is None or not self.recordings_dir:
            raise PeerError("unavailable")
        allowed = await asyncio.to_thread(self._check_consent, consultation_id)
        if not allowed:
            raise PeerError("consent_missing")
        if room in self.recordings:  # a concurrent start won while we were in the database
            raise PeerError("already_recording")
        recording = RoomRecording(room=room, consultation_id=consultation_id, started_by=by_sid)
        self.recordings[room] = recording
        try:
            await self._open_file(recording)
        except Exception as exc:  # disk full, unwritable directory: say so, record nothing
            log.exception("could not start a recording")
            self.recordings.pop(room, None)
            if recording.recorder is not None:
                await recording.recorder.stop()
                recording.recorder.discard()
            raise PeerError("unavailable") from exc
        recording.watcher = asyncio.ensure_future(self._watch_consent(recording))
        if self.notify is not None:
            await self.notify(room, "record.state", {"recording": True})

    def _check_consent(self, consultation_id: int) -> bool:
        session = self.session_factory()
        try:
            return recording_consents(session, consultation_id).both
        finally:
            session.close()

    async def stop_recording(self, room: str, *, reason: str = "") -> list[rec.SavedRecording]:
        recording = self.recordings.pop(room, None)
        if recording is None:
            return []
        self._decode_audio(room, False)
        if recording.restart is not None:
            recording.restart.cancel()
        if recording.watcher is not None and recording.watcher is not asyncio.current_task():
            recording.watcher.cancel()
        # Everybody learns at once that the recording has stopped (the recorder takes no more
        # media from here on); encoding what is queued and saving the file can take seconds on
        # a loaded machine, and nobody should read «Идёт запись» meanwhile.
        saving = asyncio.get_running_loop().create_future()
        self._saving.add(saving)
        try:
            if self.notify is not None:
                state: dict[str, Any] = {"recording": False}
                if reason:
                    state["reason"] = reason
                await self.notify(room, "record.state", state)
            async with self._lock:  # a roll-over in progress finishes saving its file first
                await self._close_file(recording)
        finally:
            self._saving.discard(saving)
            saving.set_result(None)
        return recording.saved

    async def _watch_consent(self, recording: RoomRecording) -> None:
        """Consent is the ledger's, not the moment's: withdrawn during the call (web app),
        the recording stops and what was recorded until then is kept."""
        while self.recordings.get(recording.room) is recording:
            await asyncio.sleep(self.consent_recheck_seconds)
            try:
                allowed = await asyncio.to_thread(self._check_consent, recording.consultation_id)
            except Exception:
                log.exception("consent re-check failed; the next one retries")
                continue
            if not allowed and self.recordings.get(recording.room) is recording:
                log.info("recording of %s stopped: consent withdrawn", recording.consultation_id)
                await self.stop_recording(recording.room, reason="consent_withdrawn")
                return

    async def _open_file(self, recording: RoomRecording) -> None:
        # The patient's video first: a browser plays a file's first video stream only, and the
        # patient is who the record is about (VLC and the like offer the others).
        publishers = sorted(
            (p for p in self.publishers.values() if p.room == recording.room),
            key=lambda p: ROLE_ORDER.get(p.role, len(ROLE_ORDER)),
        )
        tracks = [
            ForwardedVideo(p.video_tee, from_keyframe=True)
            if track.kind == "video" and p.video_tee is not None
            else self.relay.subscribe(track, buffered=track.kind == "audio")
            for p in publishers
            for track in p.tracks.values()
        ]
        self._decode_audio(recording.room, True)
        if not tracks:
            return  # nothing published yet: a file opens when someone publishes
        recorder = rec.Recorder(self.recordings_dir, tracks)
        recording.recorder = recorder
        await recorder.start()

    def _decode_audio(self, room: str, on: bool) -> None:
        """The recorder mixes decoded voices; forwarding needs no decoding."""
        for p in self.publishers.values():
            if p.room == room and p.audio_tee is not None:
                p.audio_tee.decoding = on

    async def _close_file(self, recording: RoomRecording) -> None:
        recorder, recording.recorder = recording.recorder, None
        if recorder is None:
            return
        try:
            path = await recorder.stop()
            if path is None:
                return
            saved = await asyncio.to_thread(
                rec.save_recording,
                self.session_factory,
                recorder,
                path,
                consultation_id=recording.consultation_id,
            )
        except Exception:
            # The file is removed (save_recording discards it): a file nobody can list or play
            # helps nobody. The room carries on; the log says what was lost.
            log.exception("recording of consultation %s lost", recording.consultation_id)
            return
        recording.saved.append(saved)
        log.info("recording %s saved (%s bytes)", saved.public_id, saved.size_bytes)

    async def _publishers_changed(self, room: str) -> None:
        recording = self.recordings.get(room)
        if recording is None:
            return
        if recording.restart is not None:
            recording.restart.cancel()
        recording.restart = asyncio.ensure_future(self._roll_over(recording))

    async def _roll_over(self, recording: RoomRecording) -> None:
        await asyncio.sleep(RECORD_SETTLE_SECONDS)
        if self.recordings.get(recording.room) is not recording:
            return
        recording.restart = None  # from here on the roll-over must not be cancelled half-way
        async with self._lock:
            await self._close_file(recording)
            if self.recordings.get(recording.room) is recording:
                await self._open_file(recording)
