"""aiortc peers of the media server: the relay (SFU-like) and the recorder.

DESIGN §1/§5: 1:1 calls are browser-to-browser; these peers earn their cost with three or more
participants, when browser-to-browser fails, and while recording (with both consents).

Shape (docs/media-contract.md, "Relay and recording"):
- every participant publishes its audio + video on one "publish" RTCPeerConnection (client
  offers sendonly, the server answers), and subscribes to every other participant on one
  connection per source (client offers recvonly, the server answers with relayed tracks). One
  connection per direction and source means no renegotiation ever, which aiortc handles badly.
- video is forwarded as it arrives: each complete VP8 frame the publisher's receiver
  assembles goes to every subscriber's sender as is (no decode, no re-encode: a relayed
  stream costs a fraction of the codec's CPU, bench/README.md), and a subscriber's keyframe
  request goes on to the publisher. Nothing decodes video (the recorder muxes the same
  frames). Audio is forwarded the same way (Opus packets) and decoded only while recording,
  for the recorder's mix, which reads it through MediaRelay; so does everything on an aiortc
  whose receiver cannot be hooked (decoded, each subscriber encodes). A drain keeps every
  decoded published track consumed, so frames never pile up in aiortc's receive queue.
- the recorder takes the same forwarded video (from a key frame) and relayed audio; a change
  in who publishes closes the current file and opens a new one.

The socket.io handlers are registered by register_peer_events(), called once by the server
core, which also tells us when a socket leaves (forget) and when a room ends (end_room).
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import inspect
import logging
import queue
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from av.packet import Packet
from sqlalchemy.orm import Session

from media_server import peers_recorder as rec

log = logging.getLogger(__name__)

SDP_MAX = 100_000
SID_MAX = 64
DEFAULT_MAX_PUBLISHERS = 6
ROLE_ORDER = {"patient": 0, "doctor": 1}
RECORD_SETTLE_SECONDS = 1.0
# A consent withdrawn in the web app during a recording stops it within this time.
CONSENT_RECHECK_SECONDS = 5.0  # publishers changing in a burst make one new file, not several
VIDEO_TIME_BASE = fractions.Fraction(1, 90_000)  # RTP's video clock, as aiortc maps it
AUDIO_TIME_BASE = fractions.Fraction(1, 48_000)  # Opus's RTP clock
FORWARD_BACKLOG = 30  # frames a reader may fall behind (1 s of video at 30 fps, 0.6 s of audio)
KEYFRAME_RETRY_FRAMES = 30  # frames waited for a requested keyframe before asking again
# Every WebRTC browser has both (RFC 7742, RFC 7874): one codec a kind, so what a publisher
# sends can be forwarded to any subscriber as it is.
FORWARDED_CODECS = {
    kind: [c for c in RTCRtpSender.getCapabilities(kind).codecs if c.mimeType.lower() in names]
    for kind, names in (("video", ("video/vp8", "video/rtx")), ("audio", ("audio/opus",)))
}


class PeerError(Exception):
    """Refused; `code` goes back in the ack."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


class IdentityLike(Protocol):
    room: str
    consultation_id: int
    user_id: int | None
    role: str
    admitted: bool


@dataclass(frozen=True)
class PeerIdentity:
    room: str
    consultation_id: int
    user_id: int | None
    role: str
    admitted: bool


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


def is_vp8_keyframe(data: bytes) -> bool:
    """RFC 6386 §9.1: the frame tag's bit 0 is clear on a key frame, and the start code
    follows the tag."""
    return len(data) >= 6 and not data[0] & 1 and data[3:6] == b"\x9d\x01\x2a"


_GAP = object()  # in a forwarding queue: frames were dropped here, the next delta is broken


class _EncodedTee:
    """Stands in for the queue where aiortc's receiver puts each complete encoded frame for
    its decoder thread (a private attribute of RTCRtpReceiver, aiortc 1.13–1.16; tests/media
    cover it): every frame goes to each forwarding reader (subscribers, the recorder's video)
    and to the decoder only while `decoding` (audio, for a recording's mix). The end (None)
    always reaches the decoder thread, which then stops."""

    PRIVATE = "_RTCRtpReceiver__decoder_queue"

    @classmethod
    def attach(cls, receiver: RTCRtpReceiver) -> _EncodedTee | None:
        """None when this aiortc has no such queue: the relay then decodes the track and
        encodes it for every subscriber, as MediaRelay does, which costs CPU but works."""
        if not isinstance(getattr(receiver, cls.PRIVATE, None), queue.Queue):
            log.warning("aiortc's receiver changed: media is re-encoded, not forwarded")
            return None
        return cls(receiver)

    def __init__(self, receiver: RTCRtpReceiver) -> None:
        self.receiver = receiver
        self.decoder_queue: queue.Queue = getattr(receiver, self.PRIVATE)
        self.outs: set[asyncio.Queue] = set()
        self.decoding = False
        self._requests: set[asyncio.Task] = set()
        setattr(receiver, self.PRIVATE, self)

    def put(self, item: Any) -> None:
        if item is None:  # the receiver stopped: every reader ends, the decoder thread too
            for out in self.outs:
                out.put_nowait(None)
            self.decoder_queue.put(None)
            return
        frame = item[1]
        for out in self.outs:
            if out.qsize() >= FORWARD_BACKLOG:
                # A reader not reading (still connecting, or stalled) gets no stale media
                # later; what it gets next starts with the gap.
                while not out.empty():
                    out.get_nowait()
                out.put_nowait(_GAP)
            out.put_nowait(frame)
        if self.decoding:
            self.decoder_queue.put(item)

    def get(self, *args: Any, **kwargs: Any) -> Any:  # the decoder thread
        return self.decoder_queue.get(*args, **kwargs)

    def request_keyframe(self) -> None:
        for source in self.receiver.getSynchronizationSources():
            task = asyncio.ensure_future(self._pli(source.source))
            self._requests.add(task)  # held: the loop keeps tasks weakly
            task.add_done_callback(self._requests.discard)

    async def _pli(self, ssrc: int) -> None:
        with contextlib.suppress(ConnectionError):  # the publisher left meanwhile
            await self.receiver._send_rtcp_pli(ssrc)


class _Forwarded(MediaStreamTrack):
    """A reader of a tee: the publisher's encoded frames, as av.Packet."""

    def __init__(self, tee: _EncodedTee) -> None:
        super().__init__()
        self._tee = tee
        self._frames: asyncio.Queue = asyncio.Queue()
        tee.outs.add(self._frames)

    async def _next(self) -> Any:
        """The next frame, or _GAP; MediaStreamError at the end."""
        frame = await self._frames.get()
        if frame is None or self.readyState != "live":
            self.stop()
            raise MediaStreamError
        return frame

    def stop(self) -> None:
        self._tee.outs.discard(self._frames)
        super().stop()


class ForwardedAudio(_Forwarded):
    """A copy of a published audio as the publisher's Opus packets: a subscriber's sender
    sends them without decoding or encoding (a lost packet is the receiver's to conceal)."""

    kind = "audio"

    async def recv(self) -> Packet:
        while (frame := await self._next()) is _GAP:
            pass
        packet = Packet(frame.data)
        packet.pts = frame.timestamp
        packet.time_base = AUDIO_TIME_BASE
        return packet


class ForwardedVideo(_Forwarded):
    """A copy of a published video as the publisher's encoded VP8 frames (av.Packet): a
    subscriber's sender packetizes them without encoding, the recorder muxes them as they are.

    With `from_keyframe` (the recorder, which has no decoder to ask for one) the copy starts
    at a key frame the publisher is asked for, and after a gap waits for the next one: a delta
    frame against a picture the file never had would play as garbage."""

    kind = "video"
    encoded = True  # for the recorder: packets to mux, not pictures to encode

    def __init__(self, tee: _EncodedTee, *, from_keyframe: bool = False) -> None:
        super().__init__(tee)
        self._from_keyframe = from_keyframe
        self._awaiting_keyframe = False
        self._skipped = 0
        if from_keyframe:
            self._await_keyframe()

    def _await_keyframe(self) -> None:
        self._awaiting_keyframe = True
        self._skipped = 0
        self._tee.request_keyframe()

    def request_keyframe(self) -> None:
        """The reader lost frames of its own: it starts again at the next key frame."""
        if self._from_keyframe:
            self._await_keyframe()

    async def recv(self) -> Packet:
        while True:
            frame = await self._next()
            if frame is _GAP:
                if self._from_keyframe:  # a subscriber's decoder asks for a key frame itself
                    self._await_keyframe()
                continue
            key = is_vp8_keyframe(frame.data)
            if self._awaiting_keyframe:
                if not key:
                    self._skipped += 1
                    if self._skipped % KEYFRAME_RETRY_FRAMES == 0:  # a request or answer lost
                        self._tee.request_keyframe()
                    continue
                self._awaiting_keyframe = False
            packet = Packet(frame.data)
            packet.pts = frame.timestamp
            packet.time_base = VIDEO_TIME_BASE
            packet.is_keyframe = key
            return packet


def _prefer_forwarded_codecs(pc: RTCPeerConnection) -> None:
    for transceiver in pc.getTransceivers():
        if transceiver.kind in FORWARDED_CODECS:
            transceiver.setCodecPreferences(FORWARDED_CODECS[transceiver.kind])


@dataclass
class Publisher:
    sid: str
    room: str
    pc: RTCPeerConnection
    role: str = ""
    tracks: dict[str, MediaStreamTrack] = field(default_factory=dict)  # kind → remote track
    drains: list[asyncio.Task] = field(default_factory=list)
    video_tee: _EncodedTee | None = None
    audio_tee: _EncodedTee | None = None
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
            tee = _EncodedTee.attach(receiver)
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
            _prefer_forwarded_codecs(pc)
            for track in publisher.tracks.values():
                tee = publisher.video_tee if track.kind == "video" else publisher.audio_tee
                if tee is None:
                    pc.addTrack(self.relay.subscribe(track, buffered=False))
                    continue
                if track.kind == "audio":
                    pc.addTrack(ForwardedAudio(tee))
                    continue
                sender = pc.addTrack(ForwardedVideo(tee))
                # The subscriber's decoder starts at a keyframe, and asks for one after a loss:
                # only the publisher can make it.
                sender._send_keyframe = tee.request_keyframe  # type: ignore[method-assign]
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
            _prefer_forwarded_codecs(pc)
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
            return rec.both_consented(session, consultation_id)
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


# ---------------------------------------------------------------------------------------------
# socket.io
# ---------------------------------------------------------------------------------------------


def _sdp(data: Any) -> str:
    sdp = data.get("sdp") if isinstance(data, dict) else None
    if not isinstance(sdp, str) or not sdp or len(sdp) > SDP_MAX:
        raise PeerError("bad_request")
    return sdp


def _source(data: Any) -> str:
    source = data.get("source") if isinstance(data, dict) else None
    if not isinstance(source, str) or not source or len(source) > SID_MAX:
        raise PeerError("bad_request")
    return source


def register_peer_events(
    sio,
    *,
    lookup: Callable[[str], IdentityLike | Awaitable[IdentityLike | None] | None],
    session_factory: Callable[[], Session] | None,
    cfg: dict,
    guard: Callable[[str], Awaitable[bool]] | None = None,
) -> RelayHub:
    """Register the relay.* and record.* handlers on `sio`; returns the hub for the core's
    forget(sid) / end_room(room) / close() calls.

    lookup(sid) (sync or async) says who a socket is; guard(sid), when given, runs first and
    drops the event (no ack) when it returns False: the core's flood gate and kick state.
    """

    async def notify(room: str, event: str, payload: dict) -> None:
        await sio.emit(event, payload, room=room)

    hub = RelayHub(
        ice_servers=cfg.get("MEDIA_ICE_SERVERS") or [],
        max_publishers=int(cfg.get("MEDIA_RELAY_MAX_PUBLISHERS") or DEFAULT_MAX_PUBLISHERS),
        recordings_dir=str(cfg.get("MEDIA_RECORDINGS_DIR") or ""),
        session_factory=session_factory,
        notify=notify,
    )

    async def identity(sid: str) -> IdentityLike | None:
        who = lookup(sid)
        if inspect.isawaitable(who):
            who = await who
        return who

    async def admitted(sid: str) -> IdentityLike:
        who = await identity(sid)
        if who is None:
            raise PeerError("not_found")
        if not who.admitted:
            raise PeerError("forbidden")
        return who

    def handler(fn: Callable[[str, Any], Awaitable[dict]]):
        async def wrapped(sid: str, data: Any = None) -> dict | None:
            if guard is not None and not await guard(sid):
                return None
            if data is not None and not isinstance(data, dict):
                return {"ok": False, "error": "bad_request"}
            try:
                result = await fn(sid, data or {})
            except PeerError as exc:
                return {"ok": False, "error": exc.code}
            except Exception:
                log.exception("peer event failed")
                return {"ok": False, "error": "server_error"}
            return {"ok": True, **result}

        return wrapped

    async def still_there(sid: str, room: str) -> bool:
        """After a negotiation: the socket may have disconnected or hung up meanwhile, and
        forget(sid) ran before the connection was stored, so it is the caller's to close."""
        who = await identity(sid)
        return who is not None and who.admitted and who.room == room

    async def publish(sid: str, data: dict) -> dict:
        who = await admitted(sid)
        answer = await hub.publish(sid, who.room, _sdp(data), role=who.role)
        if not await still_there(sid, who.room):
            await hub.unpublish(sid)
            raise PeerError("not_found")
        return {"sdp": answer, "type": "answer"}

    async def subscribe(sid: str, data: dict) -> dict:
        who = await admitted(sid)
        source, sdp = _source(data), _sdp(data)
        source_who = await identity(source)
        if source_who is None or source_who.room != who.room or not source_who.admitted:
            raise PeerError("not_found")
        answer = await hub.subscribe(sid, who.room, source, sdp)
        if not await still_there(sid, who.room):
            await hub.unsubscribe(sid, source)
            raise PeerError("not_found")
        return {"sdp": answer, "type": "answer"}

    async def unsubscribe(sid: str, data: dict) -> dict:
        await admitted(sid)
        await hub.unsubscribe(sid, _source(data))
        return {}

    async def unpublish(sid: str, data: dict) -> dict:
        await admitted(sid)
        await hub.unpublish(sid)
        return {}

    async def state(sid: str, data: dict) -> dict:
        who = await admitted(sid)
        return {"sources": hub.sources(who.room), "recording": hub.is_recording(who.room)}

    async def record_start(sid: str, data: dict) -> dict:
        who = await admitted(sid)
        if who.role != "doctor":
            raise PeerError("forbidden")
        await hub.start_recording(who.room, who.consultation_id, by_sid=sid)
        return {}

    async def record_stop(sid: str, data: dict) -> dict:
        who = await admitted(sid)
        if who.role != "doctor":
            raise PeerError("forbidden")
        saved = await hub.stop_recording(who.room)
        return {"recording_id": str(saved[-1].public_id) if saved else None}

    for event, fn in (
        ("relay.publish", publish),
        ("relay.subscribe", subscribe),
        ("relay.unsubscribe", unsubscribe),
        ("relay.unpublish", unpublish),
        ("relay.state", state),
        ("record.start", record_start),
        ("record.stop", record_stop),
    ):
        sio.on(event, handler(fn))
    return hub
