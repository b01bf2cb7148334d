"""Forwarding without decoding: the publisher's encoded frames (VP8 video, Opus audio) go to
every subscriber's sender and to the recorder as they are.

This hooks into aiortc's internals (the receiver's queue of encoded frames, its PLI sender,
the sender's keyframe request, the encoders' `pack` of an av.Packet). `missing_aiortc_hooks`
checks each of them on the receiver at hand; when one is missing, the relay takes the public
path instead (MediaRelay: decode once, encode per subscriber), which costs CPU but works.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import inspect
import logging
import queue
from typing import Any

from aiortc import RTCPeerConnection, RTCRtpSender
from aiortc.codecs.opus import OpusEncoder
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from av.packet import Packet

log = logging.getLogger("media_server.peers")

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

# The aiortc internals the forwarding uses (aiortc 1.13–1.16), by name, each checked before use:
# the receiver's queue of complete encoded frames for its decoder thread (an instance's);
DECODER_QUEUE = "_RTCRtpReceiver__decoder_queue"
# the receiver's coroutine that asks the publisher for a key frame (RTCP PLI);
SEND_PLI = "_send_rtcp_pli"
# the sender's method called when its subscriber asks for a key frame (replaced per sender);
SEND_KEYFRAME = "_send_keyframe"
# the encoders' packetizer of an already encoded frame (what a sender does with an av.Packet).
ENCODER_PACK = "pack"


def missing_aiortc_hooks(receiver: RTCRtpReceiver) -> list[str]:
    """The internals above that this aiortc lacks for `receiver` (none: forwarding works)."""
    missing = []
    if not isinstance(getattr(receiver, DECODER_QUEUE, None), queue.Queue):
        missing.append(DECODER_QUEUE)
    if not inspect.iscoroutinefunction(getattr(receiver, SEND_PLI, None)):
        missing.append(SEND_PLI)
    if not callable(getattr(RTCRtpSender, SEND_KEYFRAME, None)):
        missing.append(SEND_KEYFRAME)
    for encoder in (Vp8Encoder, OpusEncoder):
        if not callable(getattr(encoder, ENCODER_PACK, None)):
            missing.append(f"{encoder.__name__}.{ENCODER_PACK}")
    return missing


def is_vp8_keyframe(data: bytes) -> bool:
    """RFC 6386 §9.1: the frame tag's bit 0 is clear on a key frame, and the start code
    follows the tag."""
    return len(data) >= 6 and not data[0] & 1 and data[3:6] == b"\x9d\x01\x2a"


_GAP = object()  # in a forwarding queue: frames were dropped here, the next delta is broken


class EncodedTee:
    """Stands in for the queue where aiortc's receiver puts each complete encoded frame for
    its decoder thread (DECODER_QUEUE; tests/media cover it): every frame goes to each
    forwarding reader (subscribers, the recorder's video) and to the decoder only while
    `decoding` (audio, for a recording's mix). The end (None) always reaches the decoder
    thread, which then stops."""

    @classmethod
    def attach(cls, receiver: RTCRtpReceiver) -> EncodedTee | None:
        """None when this aiortc lacks one of the hooks (missing_aiortc_hooks): the relay then
        decodes the track and encodes it for every subscriber, as MediaRelay does."""
        missing = missing_aiortc_hooks(receiver)
        if missing:
            log.warning("aiortc lacks %s: media is re-encoded, not forwarded", ", ".join(missing))
            return None
        return cls(receiver)

    def __init__(self, receiver: RTCRtpReceiver) -> None:
        self.receiver = receiver
        self.decoder_queue: queue.Queue = getattr(receiver, DECODER_QUEUE)
        self.outs: set[asyncio.Queue] = set()
        self.decoding = False
        self._requests: set[asyncio.Task] = set()
        setattr(receiver, DECODER_QUEUE, self)

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
            await getattr(self.receiver, SEND_PLI)(ssrc)

    def forward_keyframe_requests(self, sender: RTCRtpSender) -> None:
        """A subscriber's decoder starts at a key frame and asks for one after a loss: only the
        publisher can make it, so the sender's request goes on to the publisher."""
        setattr(sender, SEND_KEYFRAME, self.request_keyframe)


class _Forwarded(MediaStreamTrack):
    """A reader of a tee: the publisher's encoded frames, as av.Packet."""

    def __init__(self, tee: EncodedTee) -> None:
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

    def __init__(self, tee: EncodedTee, *, from_keyframe: bool = False) -> None:
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


def prefer_forwarded_codecs(pc: RTCPeerConnection) -> None:
    for transceiver in pc.getTransceivers():
        if transceiver.kind in FORWARDED_CODECS:
            transceiver.setCodecPreferences(FORWARDED_CODECS[transceiver.kind])
