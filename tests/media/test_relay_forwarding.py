"""Forwarding in the relay hub: VP8 and Opus pass through as encoded (decoded only for a
recording), re-encoding when aiortc lacks the hooked internals, the bounded backlog of a slow
subscriber, and key frames for late subscribers and the recorder's copy."""

from __future__ import annotations

import asyncio
import fractions
from types import SimpleNamespace

import pytest

from media_server.peers import RelayHub
from tests.media import peer_clients as pc
from tests.media_fixtures import run

# Pure functions / in-memory peers: no database (run once, on SQLite).
pytestmark = pytest.mark.no_db


def test_video_is_forwarded_as_encoded_and_a_late_subscriber_gets_a_keyframe(monkeypatch):
    """Direct on the hub: the publisher's VP8 frames reach subscribers as they are (the only
    encoder that runs is the publisher's own, the only decoders the viewers'), and a
    subscriber who comes well after the stream's first keyframe still gets the picture: its
    keyframe request reaches the publisher."""
    from aiortc.codecs.vpx import Vp8Decoder, Vp8Encoder

    from media_server.peers.forwarding import ForwardedVideo

    encoders: set[int] = set()
    decoders: set[int] = set()
    encode, decode = Vp8Encoder.encode, Vp8Decoder.decode

    def counted(self, frame, force_keyframe=False):
        encoders.add(id(self))
        return encode(self, frame, force_keyframe)

    def counted_decode(self, encoded_frame):
        decoders.add(id(self))
        return decode(self, encoded_frame)

    monkeypatch.setattr(Vp8Encoder, "encode", counted)
    monkeypatch.setattr(Vp8Decoder, "decode", counted_decode)

    async def scenario():
        hub = RelayHub()
        source = await pc.publish(lambda sdp: hub.publish("a", "c:1", sdp), 200, audio=False)
        requests: list[int] = []  # keyframe requests the publisher's sender receives
        (sender,) = source.getSenders()
        make_keyframe = sender._send_keyframe
        sender._send_keyframe = lambda: (requests.append(1), make_keyframe())
        early, late = pc.Counter(), pc.Counter()
        first = await pc.subscribe(lambda sdp: hub.subscribe("b", "c:1", "a", sdp), early)
        await pc.wait_for(lambda: early.frames >= 45, timeout=30)  # ≈ 1.5 s into the stream
        before = len(requests)
        second = await pc.subscribe(lambda sdp: hub.subscribe("c", "c:1", "a", sdp), late)
        arrived = await pc.wait_for(lambda: late.frames >= 10, timeout=30)
        asked = len(requests) - before
        tracks = [
            type(s.track)
            for conn in hub.subscriptions.values()
            for s in conn.getSenders()
            if s.track is not None and s.track.kind == "video"
        ]
        for counter in (early, late):
            counter.cancel()
        for conn in (source, first, second):
            await conn.close()
        await hub.close()
        return early.frames, arrived, late.levels, tracks, asked

    early_frames, arrived, late_levels, tracks, asked = run(scenario(), timeout=90)
    assert early_frames >= 45
    assert asked >= 1, "the late subscriber's keyframe request did not reach the publisher"
    assert arrived, "the late subscriber got no picture"
    assert abs(late_levels[0] - 200) < 20, late_levels
    assert tracks == [ForwardedVideo, ForwardedVideo]
    assert len(encoders) == 1, "the relay encoded video itself"
    assert len(decoders) == 2, "the relay decoded video nobody records (only the two viewers')"


def test_audio_is_forwarded_as_opus_and_decoded_only_while_recording(monkeypatch):
    """Each subscriber gets the publisher's Opus packets (the relay encodes no audio); the
    relay decodes a publisher's audio only while the room records, for the recorder's mix."""
    from aiortc.codecs.opus import OpusDecoder, OpusEncoder

    from media_server.peers.forwarding import ForwardedAudio

    encoders: set[int] = set()
    decoders: set[int] = set()
    encode, decode = OpusEncoder.encode, OpusDecoder.decode

    def counted_encode(self, frame, force_keyframe=False):
        encoders.add(id(self))
        return encode(self, frame, force_keyframe)

    def counted_decode(self, encoded_frame):
        decoders.add(id(self))
        return decode(self, encoded_frame)

    monkeypatch.setattr(OpusEncoder, "encode", counted_encode)
    monkeypatch.setattr(OpusDecoder, "decode", counted_decode)

    async def scenario():
        hub = RelayHub()
        source = await pc.publish(lambda sdp: hub.publish("a", "c:1", sdp), 90)
        listeners = [pc.Counter(), pc.Counter()]
        subs = [
            await pc.subscribe(lambda sdp, s=s: hub.subscribe(s, "c:1", "a", sdp), counter)
            for s, counter in zip(("b", "c"), listeners, strict=True)
        ]
        heard = await pc.wait_for(lambda: min(c.audio_frames for c in listeners) >= 50, 30)
        tee = hub.publishers["a"].audio_tee
        tracks = [
            type(s.track)
            for conn in hub.subscriptions.values()
            for s in conn.getSenders()
            if s.track is not None and s.track.kind == "audio"
        ]
        decoders_before = len(decoders)
        tee.decoding = True  # what a recording's start does
        await pc.wait_for(lambda: len(decoders) > decoders_before, 10)
        recording_decodes = len(decoders) - decoders_before
        for counter in listeners:
            counter.cancel()
        for conn in (source, *subs):
            await conn.close()
        await hub.close()
        return heard, tracks, decoders_before, recording_decodes

    heard, tracks, decoders_before, recording_decodes = run(scenario(), timeout=60)
    assert heard, "a subscriber got no audio"
    assert tracks == [ForwardedAudio, ForwardedAudio]
    assert len(encoders) == 1, "the relay encoded audio itself"
    assert decoders_before == 2, "only the two listeners decode until a recording starts"
    assert recording_decodes == 1, "recording decodes the publisher's audio once, for the mix"


@pytest.mark.parametrize("hook", ["DECODER_QUEUE", "SEND_PLI", "SEND_KEYFRAME", "ENCODER_PACK"])
def test_without_the_receiver_internals_video_is_re_encoded_not_lost(monkeypatch, hook):
    """An aiortc that lacks any of the internals the forwarding hooks (a future release: here
    each one's name points at nothing) costs the relay CPU, not the picture: the tee is never
    attached and subscribers get decoded and re-encoded video."""
    from aiortc.contrib.media import RelayStreamTrack

    from media_server.peers import forwarding

    monkeypatch.setattr(forwarding, hook, "_no_such_aiortc_internal")

    async def scenario():
        hub = RelayHub()
        source = await pc.publish(lambda sdp: hub.publish("a", "c:1", sdp), 120, audio=False)
        viewer = pc.Counter()
        sub = await pc.subscribe(lambda sdp: hub.subscribe("b", "c:1", "a", sdp), viewer)
        arrived = await pc.wait_for(lambda: viewer.frames >= 10, timeout=30)
        tee = hub.publishers["a"].video_tee
        (track,) = [s.track for s in hub.subscriptions[("b", "a")].getSenders() if s.track]
        viewer.cancel()
        for conn in (source, sub):
            await conn.close()
        await hub.close()
        return arrived, viewer.levels, tee, type(track)

    arrived, levels, tee, track_type = run(scenario(), timeout=60)
    assert tee is None
    assert track_type is RelayStreamTrack
    assert arrived and abs(levels[0] - 120) < 20, levels


def test_the_installed_aiortc_has_every_hooked_internal():
    """The check itself, on a real receiver of the installed aiortc: nothing is missing (the
    relay forwards), and a receiver without the frame queue is seen as lacking it."""
    from aiortc import RTCPeerConnection

    from media_server.peers.forwarding import DECODER_QUEUE, missing_aiortc_hooks

    async def scenario():
        pc = RTCPeerConnection()
        receiver = pc.addTransceiver("video").receiver
        hooked = missing_aiortc_hooks(receiver)
        delattr(receiver, DECODER_QUEUE)
        unhooked = missing_aiortc_hooks(receiver)
        await pc.close()
        return hooked, unhooked

    assert run(scenario()) == ([], [DECODER_QUEUE])


@pytest.mark.no_db
def test_a_subscriber_that_does_not_read_keeps_at_most_a_second_of_video():
    """A subscriber still connecting (or stalled) is not sent a stale backlog later, and its
    memory stays bounded; with no recording the decoder gets only the end."""
    import queue

    from aiortc.mediastreams import MediaStreamError

    from media_server.peers.forwarding import FORWARD_BACKLOG, EncodedTee, ForwardedVideo

    async def scenario():
        receiver = SimpleNamespace(_RTCRtpReceiver__decoder_queue=queue.Queue())
        decoder = receiver._RTCRtpReceiver__decoder_queue
        tee = EncodedTee(receiver)
        track = ForwardedVideo(tee)
        for n in range(100):
            tee.put(("vp8", SimpleNamespace(data=bytes([n]), timestamp=n * 3000)))
        kept = track._frames.qsize()
        first = await track.recv()
        tee.put(None)  # the publisher's receiver stopped
        while track._frames.qsize() > 1:
            await track.recv()
        try:
            await track.recv()
        except MediaStreamError:
            ended = track.readyState
        return kept, first.pts, decoder.qsize(), ended

    kept, first_pts, decoded, ended = run(scenario())
    assert kept <= FORWARD_BACKLOG
    assert first_pts >= (100 - FORWARD_BACKLOG) * 3000  # the newest frames, not the oldest
    assert decoded == 1  # no recording: nothing to decode, but the end stops its thread
    assert ended == "ended"


def vp8_stream(count: int, *, key_at: tuple[int, ...] = ()) -> list[tuple[bytes, bool]]:
    """`count` real VP8 frames of a moving picture (libvpx through PyAV) with what the encoder
    says of each: (bitstream, is it a key frame). Frames in `key_at` are forced key frames."""
    import av

    codec = av.CodecContext.create("libvpx", "w")
    codec.width, codec.height, codec.pix_fmt = 160, 120, "yuv420p"
    codec.time_base = fractions.Fraction(1, 30)
    codec.options = {"deadline": "realtime", "cpu-used": "8", "kf-max-dist": "10000"}
    out: list[tuple[bytes, bool]] = []
    for n in range(count):
        frame = av.VideoFrame(160, 120, "yuv420p")
        for plane in frame.planes:
            plane.update(bytes([(n * 7 + i) % 256 for i in range(plane.buffer_size)]))
        frame.pts = n
        frame.pict_type = av.video.frame.PictureType.I if n in key_at else 0
        out.extend((bytes(packet), packet.is_keyframe) for packet in codec.encode(frame))
    out.extend((bytes(packet), packet.is_keyframe) for packet in codec.encode(None))
    return out


def test_the_keyframe_test_and_the_size_agree_with_the_encoder():
    from media_server.peers.forwarding import is_vp8_keyframe
    from media_server.peers.recorder import vp8_size

    stream = vp8_stream(40, key_at=(17, 31))
    assert [n for n, (_, key) in enumerate(stream) if key] == [0, 17, 31]
    for data, key in stream:
        assert is_vp8_keyframe(data) is key
    assert vp8_size(stream[17][0]) == (160, 120)


def test_the_recorders_copy_starts_at_a_keyframe_and_after_a_gap_waits_for_one():
    """The recorder muxes forwarded frames and has no decoder to ask for a key frame: its copy
    asks the publisher, skips the delta frames before the key frame (asking again after a
    second without one), and does the same after frames were dropped. A subscriber's copy
    passes everything (its decoder asks by itself)."""
    import queue

    from media_server.peers.forwarding import (
        FORWARD_BACKLOG,
        KEYFRAME_RETRY_FRAMES,
        EncodedTee,
        ForwardedVideo,
    )

    vp8 = SimpleNamespace(mimeType="video/VP8")
    first_key = 10 + KEYFRAME_RETRY_FRAMES + 5  # the publisher's answer to the second request
    second_key = first_key + 20 + FORWARD_BACKLOG + 5
    stream = vp8_stream(second_key + 10, key_at=(first_key, second_key))
    asked: list[int] = []

    async def scenario():
        receiver = SimpleNamespace(
            _RTCRtpReceiver__decoder_queue=queue.Queue(),
            getSynchronizationSources=lambda: [SimpleNamespace(source=1234)],
        )

        async def pli(ssrc: int) -> None:
            asked.append(ssrc)

        receiver._send_rtcp_pli = pli
        decoder = receiver._RTCRtpReceiver__decoder_queue
        tee = EncodedTee(receiver)
        viewer = ForwardedVideo(tee)

        def feed(frames: range) -> None:
            for n in frames:
                tee.put((vp8, SimpleNamespace(data=stream[n][0], timestamp=n * 3000)))

        async def take(track: ForwardedVideo) -> list[bytes]:
            got = []
            while not track._frames.empty():
                try:  # recv() skips what it must not return, then waits for more
                    got.append(bytes(await asyncio.wait_for(track.recv(), 0.05)))
                except TimeoutError:
                    break
            return got

        feed(range(10))
        viewed = await take(viewer)
        recorder = ForwardedVideo(tee, from_keyframe=True)  # a recording starts at a delta
        recorded: list[bytes] = []
        for n in range(10, first_key + 20):  # both read as the frames come
            feed(range(n, n + 1))
            recorded += await take(recorder)
            viewed += await take(viewer)
        await asyncio.sleep(0)  # the keyframe requests run
        asks_at_start = len(asked)
        # The recorder stalls for more than the backlog: the tee drops what it did not read.
        feed(range(first_key + 20, second_key + 10))
        await asyncio.sleep(0)
        after_gap = await take(recorder)
        return asks_at_start, recorded, viewed, after_gap, len(asked), decoder.qsize()

    asks_at_start, recorded, viewed, after_gap, asks, decoded = run(scenario())
    frames = [data for data, _ in stream]
    assert asks_at_start == 2, "asked once at the start, and again after a second without one"
    assert recorded == frames[first_key : first_key + 20], "not from the key frame on, or not all"
    assert viewed == frames[: first_key + 20]  # the viewer: everything, in order
    assert after_gap == frames[second_key : second_key + 10], "a delta of a lost chain was kept"
    assert asks == 3, "the gap asked for a key frame"
    assert decoded == 0, "nothing is decoded"
