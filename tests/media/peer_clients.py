"""aiortc client peers for the relay and recorder tests: synthetic tracks and frame counters."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import av
from aiortc import RTCPeerConnection, RTCSessionDescription, VideoStreamTrack
from aiortc.contrib.media import MediaStreamError
from aiortc.mediastreams import AudioStreamTrack, MediaStreamTrack

WIDTH, HEIGHT = 320, 240


class MarkedVideoTrack(VideoStreamTrack):
    """30 fps of small frames whose grey level names the sender (0..255), so a receiver can tell
    whose video it is getting, not merely that frames arrive."""

    def __init__(self, level: int, width: int = WIDTH, height: int = HEIGHT) -> None:
        super().__init__()
        self.level = level
        self.width, self.height = width, height
        self._luma = bytes([level]) * (width * height)
        self._chroma = bytes([128]) * (width * height // 4)

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        frame = av.VideoFrame(self.width, self.height, "yuv420p")
        frame.planes[0].update(self._luma)
        frame.planes[1].update(self._chroma)
        frame.planes[2].update(self._chroma)
        frame.pts, frame.time_base = pts, time_base
        return frame


def mean_luma(frame: av.VideoFrame) -> float:
    y = frame.reformat(format="gray")
    data = bytes(y.planes[0])
    # sample the centre row: cheap, and codecs keep flat grey flat
    row = y.planes[0].line_size * (y.height // 2)
    line = data[row : row + y.width]
    return sum(line) / max(1, len(line))


class Counter:
    """Counts the video frames a received track delivers, and remembers their grey level; and
    the audio frames."""

    def __init__(self) -> None:
        self.frames = 0
        self.audio_frames = 0
        self.levels: list[float] = []
        self.first = asyncio.Event()
        self.tasks: list[asyncio.Task] = []

    def consume(self, track: MediaStreamTrack) -> None:
        self.tasks.append(asyncio.ensure_future(self._run(track)))

    async def _run(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError, asyncio.CancelledError):
            while True:
                frame = await track.recv()
                if track.kind != "video":
                    self.audio_frames += 1
                    continue
                self.frames += 1
                if self.frames % 10 == 1:
                    self.levels.append(mean_luma(frame))
                self.first.set()

    def cancel(self) -> None:
        for task in self.tasks:
            task.cancel()


Answerer = Callable[[str], Awaitable[str]]


async def publish(answer_for: Answerer, level: int, *, audio: bool = True) -> RTCPeerConnection:
    """A publishing client: sendonly video (and audio), the server answers."""
    pc = RTCPeerConnection()
    pc.addTransceiver(MarkedVideoTrack(level), direction="sendonly")
    if audio:
        pc.addTransceiver(AudioStreamTrack(), direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())  # aiortc: gathering is complete here
    answer = await answer_for(pc.localDescription.sdp)
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    return pc


async def subscribe(answer_for: Answerer, counter: Counter) -> RTCPeerConnection:
    """A subscribing client: recvonly audio + video from one source."""
    pc = RTCPeerConnection()
    pc.on("track", counter.consume)
    pc.addTransceiver("video", direction="recvonly")
    pc.addTransceiver("audio", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    answer = await answer_for(pc.localDescription.sdp)
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    return pc


async def wait_for(predicate: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if predicate():
            return True
        await asyncio.sleep(step)
    return predicate()
