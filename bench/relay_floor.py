"""What the relay is measured against. The floor (the target): the same stream's SRTP packets
forwarded by a bare asyncio loop in a process of its own (`bench_relay.py --floor`), each
unprotected and protected again per receiver with pylibsrtp (aiortc's SRTP library): the least
forwarding must do. For information, no target: re-encoding instead of forwarding (aiortc's VP8
decode + encode of the same frames, in this process).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
from aiortc.codecs.vpx import Vp8Decoder, Vp8Encoder
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtp import RtpPacket
from common import ROOT
from pylibsrtp import Policy, Session
from relay_world import cpu_seconds, free_port

VIDEO_TIME_BASE = Fraction(1, 90000)
RELAY_SCRIPT = Path(__file__).resolve().with_name("bench_relay.py")  # its --floor runs the floor


# ---------------------------------------------------------------------------------------------
# The floor: SRTP unprotect/protect in a bare asyncio loop (another process)
# ---------------------------------------------------------------------------------------------


def rtp_stream(frames: list[av.VideoFrame], bps: int) -> list[list[bytes]]:
    """The frames as the publisher sends them: aiortc's VP8 encoder at `bps`, its packetizer,
    RTP packets (plain, per frame)."""
    encoder = Vp8Encoder()
    encoder.target_bitrate = bps
    stream, seq = [], 0
    for i, frame in enumerate(frames):
        frame.pts, frame.time_base = i * 3000, VIDEO_TIME_BASE
        payloads, timestamp = encoder.encode(frame)
        packets = []
        for j, payload in enumerate(payloads):
            packet = RtpPacket(
                payload_type=96,
                marker=int(j == len(payloads) - 1),
                sequence_number=seq & 0xFFFF,
                timestamp=timestamp,
                ssrc=0x0B1A,
                payload=payload,
            )
            packets.append(packet.serialize())
            seq += 1
        stream.append(packets)
    return stream


def serve_floor(port: int, key_in: bytes, outs: list[tuple[bytes, int]]) -> None:
    """The floor's process: unprotect each packet, protect it for each receiver, send it."""
    inbound = Session(policy=Policy(key=key_in, ssrc_type=Policy.SSRC_ANY_INBOUND))
    sessions = [
        (Session(policy=Policy(key=key, ssrc_type=Policy.SSRC_ANY_OUTBOUND)), ("127.0.0.1", p))
        for key, p in outs
    ]

    class Forward(asyncio.DatagramProtocol):
        def connection_made(self, transport) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr) -> None:
            plain = inbound.unprotect(data)
            for session, dest in sessions:
                self.transport.sendto(session.protect(plain), dest)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(Forward, local_addr=("127.0.0.1", port))
        print("ready", flush=True)
        await asyncio.Future()

    asyncio.run(run())


class Count(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.packets = 0

    def datagram_received(self, data: bytes, addr) -> None:
        self.packets += 1


async def floor_round(stream: list[list[bytes]], receivers: int) -> float:
    """One round of the floor: a fresh forwarding process (fresh SRTP sessions: the same
    packets are never a replay), the stream sent at 30 fps; its CPU ms per frame and stream."""
    loop = asyncio.get_running_loop()
    key_in = os.urandom(30)
    sender = Session(policy=Policy(key=key_in, ssrc_type=Policy.SSRC_ANY_OUTBOUND))
    protected = [[sender.protect(p) for p in packets] for packets in stream]
    counters, outs = [], []
    for _ in range(receivers):
        transport, counter = await loop.create_datagram_endpoint(Count, local_addr=("127.0.0.1", 0))
        counters.append((transport, counter))
        outs.append(f"{os.urandom(30).hex()}:{transport.get_extra_info('sockname')[1]}")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(RELAY_SCRIPT), "--floor", str(port), key_in.hex(), *outs],
        cwd=ROOT,
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        await loop.run_in_executor(None, proc.stdout.readline)  # "ready"
        out, _ = await loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, remote_addr=("127.0.0.1", port)
        )
        total = sum(len(p) for p in protected)
        cpu0 = cpu_seconds(proc.pid)
        for packets in protected:
            for packet in packets:
                out.sendto(packet)
            await asyncio.sleep(1 / 30)
        deadline = time.monotonic() + 5
        while min(c.packets for _, c in counters) < total and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        cpu = cpu_seconds(proc.pid) - cpu0
        out.close()
    finally:
        proc.kill()
        proc.wait()
        for transport, _ in counters:
            transport.close()
    return cpu * 1000 / len(stream) / receivers


# ---------------------------------------------------------------------------------------------
# The codec alone (this process)
# ---------------------------------------------------------------------------------------------


def codec_alone(
    frames: list[av.VideoFrame], receivers: int, *, send_bps: int, recv_bps: int
) -> float:
    """CPU seconds to decode the frames once and encode them `receivers` times, with aiortc's
    VP8 codec and its settings, at the bitrates the relay run measured (the publisher's, for the
    bitstream decoded; the subscribers', for the encoders): the same work, without the relay."""
    sender = Vp8Encoder()
    sender.target_bitrate = send_bps
    sender.encode(frames[0])  # opens the codec with aiortc's settings
    bitstream = []
    for i, frame in enumerate(frames):
        if i == 0:
            frame.pict_type = av.video.frame.PictureType.I
        bitstream.append(b"".join(bytes(p) for p in sender.codec.encode(frame)))
        frame.pict_type = av.video.frame.PictureType.NONE
    decoder = Vp8Decoder()
    encoders = [Vp8Encoder() for _ in range(receivers)]
    for encoder in encoders:
        encoder.target_bitrate = recv_bps
    started = time.process_time()
    for i, data in enumerate(bitstream):
        for decoded in decoder.decode(JitterFrame(data=data, timestamp=i * 3000)):
            decoded.pts, decoded.time_base = i * 3000, VIDEO_TIME_BASE
            for encoder in encoders:
                encoder.encode(decoded)
    return time.process_time() - started
