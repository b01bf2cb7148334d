"""The recorder: writes relayed tracks to a WebM file and records it as a `Recording` row.

aiortc's MediaRecorder is close but not enough here: it keeps the frames' RTP-derived
timestamps (random start, one clock per sender, so the file's duration and A/V alignment are
wrong once several participants are mixed into one file), encodes on the event loop, and
cannot size a video stream before another stream's first packet opens the container. This one
stamps every frame with the wall-clock time since the start of the file, encodes and muxes on
one worker thread, learns each video size from its first frame before writing anything, and
on stop fsyncs, hashes and atomically renames the file (DESIGN §4: medical files). Everybody's
audio is mixed into one Opus stream (a player plays one audio track of a file); each
publisher's video is its own VP8 stream, the patient's first, muxed as the publisher encoded
it (the relay's forwarded copy, from a key frame: no decode, no encode, the publisher's
bitrate). Video the relay could only decode (an aiortc it cannot hook) is encoded here.

Consent is checked by the hub, in the database, at every start and during the recording
(models.recording_consents, the web app's rule; docs/media-contract.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import tempfile
import time
import uuid
from array import array
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from fractions import Fraction
from pathlib import Path

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from sqlalchemy.orm import Session

from models import Recording, stored_file_path, utcnow

log = logging.getLogger(__name__)

CONTENT_TYPE = "video/webm"
FIRST_FRAME_TIMEOUT = 3.0  # seconds to wait for a video track's first frame (its size)
DEFAULT_SIZE = (640, 480)
AUDIO_RATE = 48000
CHUNK = 1024 * 1024
DRAIN_SECONDS = 15  # at stop, how long the writers may take to encode what is queued
MIX_TICK = 0.02  # seconds of audio per mixed frame (Opus's 20 ms)
MIX_SAMPLES = int(AUDIO_RATE * MIX_TICK)
PCM_FRAME_BYTES = 4  # s16 stereo: bytes per sample frame
MIX_BYTES = MIX_SAMPLES * PCM_FRAME_BYTES
PCM_START_BYTES = 2 * MIX_BYTES  # 40 ms of jitter buffer
PCM_MAX_BYTES = 10 * MIX_BYTES  # 200 ms: beyond that a participant's audio is trimmed
QUEUE_FRAMES = 90  # per track, ~3 s of video: the encoder may lag that much behind


# ---------------------------------------------------------------------------------------------
# Storage: models.stored_file_path's layout, which app/recordings.py reads
# ---------------------------------------------------------------------------------------------


def new_key() -> str:
    return uuid.uuid4().hex


def path_for_key(root: str | os.PathLike, key: str) -> Path:
    """The recording's file under MEDIA_RECORDINGS_DIR (`root`)."""
    return stored_file_path(Path(root).resolve(), key)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _probe_duration(path: Path) -> float | None:
    try:
        with av.open(str(path)) as container:
            if container.duration:
                return container.duration / 1_000_000
            best = 0.0
            for stream in container.streams:
                if stream.duration and stream.time_base:
                    best = max(best, float(stream.duration * stream.time_base))
            return best or None
    except Exception:
        log.exception("could not probe recording %s", path)
        return None


# ---------------------------------------------------------------------------------------------
# One file
# ---------------------------------------------------------------------------------------------


@dataclass
class _Lane:
    """One recorded track: its output stream and how far it has written."""

    track: MediaStreamTrack
    stream: av.stream.Stream
    last_pts: int = -1  # video: strictly increasing milliseconds
    frames: int = 0
    dropped: int = 0

    @property
    def encoded(self) -> bool:
        """VP8 packets muxed as they came (the relay's forwarded copy), not pictures to encode."""
        return bool(getattr(self.track, "encoded", False))


@dataclass(eq=False)
class _Pcm:
    """One participant's decoded audio waiting to be mixed."""

    track: MediaStreamTrack
    buffer: bytearray = field(default_factory=bytearray)
    live: bool = False
    heard: bool = False


def vp8_size(keyframe: bytes) -> tuple[int, int]:
    """Width and height from a VP8 key frame's header (RFC 6386 §9.1: after the start code,
    14 bits each, little-endian, under 2 bits of scaling)."""
    width = int.from_bytes(keyframe[6:8], "little") & 0x3FFF
    height = int.from_bytes(keyframe[8:10], "little") & 0x3FFF
    return (width, height) if width and height else DEFAULT_SIZE


def mix_pcm(chunks: list[bytes], size: int) -> bytes:
    """Sum signed 16-bit PCM chunks sample by sample, clipped; silence for none."""
    if not chunks:
        return bytes(size)
    if len(chunks) == 1:
        return chunks[0]
    arrays = [array("h", chunk) for chunk in chunks]
    mixed = array("h", (max(-32768, min(32767, sum(v))) for v in zip(*arrays, strict=True)))
    return mixed.tobytes()


@dataclass(frozen=True)
class SavedRecording:
    public_id: uuid.UUID
    storage_key: str
    size_bytes: int
    sha256: str
    duration_seconds: float | None


class Recorder:
    """Records the given tracks (already relayed copies: the recorder stops them) to one file."""

    def __init__(self, root: str | os.PathLike, tracks: list[MediaStreamTrack]) -> None:
        self.key = new_key()
        self.final_path = path_for_key(root, self.key)
        self.final_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=self.final_path.parent, prefix=".rec-", suffix=".part")
        os.close(fd)
        self.tmp_path = Path(tmp)
        self._tracks = tracks
        self._lanes: list[_Lane] = []
        self._tasks: list[asyncio.Task] = []  # the writers
        self._readers: list[asyncio.Task] = []
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="recorder")
        self._container: av.container.OutputContainer | None = None
        self._t0 = 0.0
        self._pcm: list[_Pcm] = []
        self._mix: _Lane | None = None
        self._stopped_at: float | None = None
        self.started_at: datetime | None = None
        self.ended_at: datetime | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._container = av.open(str(self.tmp_path), mode="w", format="webm")
        firsts: list[tuple[_Lane, object | None]] = []
        for track in self._tracks:
            first = None
            if track.kind == "video":
                try:
                    first = await asyncio.wait_for(track.recv(), FIRST_FRAME_TIMEOUT)
                except (TimeoutError, MediaStreamError):
                    first = None
                if first is None:
                    width, height = DEFAULT_SIZE
                elif getattr(track, "encoded", False):  # from a key frame, which has the size
                    width, height = vp8_size(bytes(first))
                else:
                    width, height = first.width, first.height
                stream = self._container.add_stream("libvpx", rate=30)
                stream.width, stream.height = width - width % 2, height - height % 2
                stream.pix_fmt = "yuv420p"
                stream.codec_context.time_base = Fraction(1, 1000)
                stream.time_base = Fraction(1, 1000)
                stream.options = {"deadline": "realtime", "cpu-used": "8"}
                stream.bit_rate = 600_000
            else:
                self._pcm.append(_Pcm(track))
                continue
            lane = _Lane(track=track, stream=stream)
            self._lanes.append(lane)
            firsts.append((lane, first))
        if self._pcm:
            # Everybody's voice in one audio stream: a player plays one audio track.
            stream = self._container.add_stream("libopus", rate=AUDIO_RATE)
            stream.layout = "stereo"
            self._mix = _Lane(track=self._pcm[0].track, stream=stream)
            self._lanes.append(self._mix)
        # Every stream is defined: the clock starts now, for all lanes at once.
        self._t0 = time.monotonic()
        self.started_at = utcnow()
        for lane, first in firsts:
            self._tasks.append(loop.create_task(self._run(lane, first)))
        for pcm in self._pcm:
            self._readers.append(loop.create_task(self._read_pcm(pcm)))
        if self._mix is not None:
            self._tasks.append(loop.create_task(self._run_mix(self._mix)))

    async def _read_pcm(self, pcm: _Pcm) -> None:
        """Decoded audio of one participant → its PCM buffer (s16, stereo, 48 kHz)."""
        resampler = av.AudioResampler(format="s16", layout="stereo", rate=AUDIO_RATE)
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await pcm.track.recv()
                for out in resampler.resample(frame):
                    pcm.buffer += bytes(out.planes[0])[: out.samples * PCM_FRAME_BYTES]
                    pcm.heard = True
                if len(pcm.buffer) > PCM_MAX_BYTES:  # a burst: keep the newest, stay live
                    del pcm.buffer[: len(pcm.buffer) - PCM_START_BYTES]

    async def _run_mix(self, lane: _Lane) -> None:
        """Every 20 ms of wall clock, one mixed frame: each participant's next 20 ms (silence
        for one with nothing buffered). A participant joins the mix once 40 ms are buffered,
        which absorbs network jitter; the mix's timestamps are the tick count, so the audio
        lasts exactly as long as the recording."""
        loop = asyncio.get_running_loop()
        tick = 0
        while True:
            due = self._t0 + tick * MIX_TICK
            if self._stopped_at is not None:
                if due >= self._stopped_at:
                    break  # behind on a loaded machine: catch up to the stop, not beyond
            elif (delay := due - time.monotonic()) > 0:
                await asyncio.sleep(delay)
                continue
            chunks = []
            for pcm in self._pcm:
                if not pcm.live and len(pcm.buffer) >= PCM_START_BYTES:
                    pcm.live = True
                if pcm.live and len(pcm.buffer) >= MIX_BYTES:
                    chunks.append(bytes(pcm.buffer[:MIX_BYTES]))
                    del pcm.buffer[:MIX_BYTES]
                elif pcm.live:
                    pcm.live = False  # ran dry: wait for 40 ms again
            frame = av.AudioFrame(format="s16", layout="stereo", samples=MIX_SAMPLES)
            frame.planes[0].update(mix_pcm(chunks, MIX_BYTES))
            frame.sample_rate = AUDIO_RATE
            frame.pts, frame.time_base = tick * MIX_SAMPLES, Fraction(1, AUDIO_RATE)
            await loop.run_in_executor(self._executor, self._encode, lane, frame)
            tick += 1

    def _encode(self, lane: _Lane, frame) -> None:
        if self._container is None:
            return
        for packet in lane.stream.encode(frame):
            self._container.mux(packet)
        lane.frames += 1

    async def _run(self, lane: _Lane, first: object | None) -> None:
        """Two halves per track: a reader that is always waiting on the relay (an unbuffered
        relay drops a frame nobody is waiting for) and stamps arrival times, and a writer that
        encodes on the worker thread. Between them a bounded queue: when the encoder cannot keep
        up (a loaded machine) the oldest frames go, never memory."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue(maxsize=QUEUE_FRAMES)

        def put(item) -> None:
            if queue.full() and lane.encoded:
                # Every queued delta frame depends on the oldest: all go, and the copy starts
                # again at a key frame (this frame belongs to the lost chain too).
                while not queue.empty():
                    queue.get_nowait()
                    lane.dropped += 1
                lane.track.request_keyframe()
                return
            if queue.full():
                queue.get_nowait()
                lane.dropped += 1
            queue.put_nowait(item)

        async def read() -> None:
            if first is not None:
                put((first, self._t0))
            try:
                while True:
                    frame = await lane.track.recv()
                    put((frame, time.monotonic()))
            except MediaStreamError:
                pass
            finally:
                if queue.full():
                    queue.get_nowait()
                queue.put_nowait(None)

        reader = loop.create_task(read())
        self._readers.append(reader)
        try:
            while (item := await queue.get()) is not None:
                frame, arrived = item
                await loop.run_in_executor(self._executor, self._write, lane, frame, arrived)
        finally:
            reader.cancel()

    def _write(self, lane: _Lane, frame, arrived: float) -> None:
        """On the worker thread: stamp with the arrival time, fit to the stream, encode, mux."""
        if self._container is None:
            return
        elapsed = max(0.0, arrived - self._t0)
        stream = lane.stream
        pts = max(int(elapsed * 1000), lane.last_pts + 1)
        lane.last_pts = pts
        if lane.encoded:
            frame.pts = frame.dts = pts
            frame.time_base = Fraction(1, 1000)
            frame.stream = stream
            self._container.mux(frame)
            lane.frames += 1
            return
        if (frame.width, frame.height) != (stream.width, stream.height) or (
            frame.format.name != "yuv420p"
        ):
            frame = frame.reformat(width=stream.width, height=stream.height, format="yuv420p")
        frame.pts, frame.time_base = pts, Fraction(1, 1000)
        for packet in stream.encode(frame):
            self._container.mux(packet)
        lane.frames += 1

    @property
    def frames_written(self) -> int:
        """Video frames, plus mixed audio once somebody's audio arrived (a file of generated
        silence alone is not a recording)."""
        video = sum(lane.frames for lane in self._lanes if lane is not self._mix)
        heard = any(pcm.heard for pcm in self._pcm)
        return video + (self._mix.frames if self._mix is not None and heard else 0)

    async def stop(self) -> Path | None:
        """Stop the tracks, flush the encoders, close and fsync the file, rename it into place.

        Returns the final path, or None when nothing was written (the temp file is removed).
        """
        self._stopped_at = time.monotonic()
        for track in self._tracks:
            track.stop()
        # An unbuffered relay copy does not wake a pending recv() on stop: end the readers,
        # which queue the end marker; the writers then finish what is queued, and stop.
        for reader in self._readers:
            reader.cancel()
        if self._tasks:
            _done, pending = await asyncio.wait(self._tasks, timeout=DRAIN_SECONDS)
            for task in pending:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self.ended_at = utcnow()
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, self._finish)
        finally:
            self._executor.shutdown(wait=False)

    def _finish(self) -> Path | None:
        container, self._container = self._container, None
        try:
            if container is not None:
                if self.frames_written:
                    for lane in (lane for lane in self._lanes if not lane.encoded):
                        for packet in lane.stream.encode(None):
                            container.mux(packet)
                container.close()
            if not self.frames_written:
                self.tmp_path.unlink(missing_ok=True)
                return None
            with self.tmp_path.open("rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(self.tmp_path, self.final_path)
            _fsync_dir(self.final_path.parent)
            return self.final_path
        except BaseException:
            self.tmp_path.unlink(missing_ok=True)
            raise

    def discard(self) -> None:
        self.tmp_path.unlink(missing_ok=True)
        self.final_path.unlink(missing_ok=True)


def save_recording(
    session_factory: Callable[[], Session],
    recorder: Recorder,
    path: Path,
    *,
    consultation_id: int,
) -> SavedRecording:
    """Blocking (run it in a thread): hash the closed file and commit its Recording row."""
    size = path.stat().st_size
    sha = _sha256(path)
    duration = _probe_duration(path)
    public_id = uuid.uuid4()
    session = session_factory()
    try:
        session.add(
            Recording(
                public_id=public_id,
                consultation_id=consultation_id,
                storage_key=recorder.key,
                content_type=CONTENT_TYPE,
                size_bytes=size,
                sha256=sha,
                duration_seconds=duration,
                started_at=recorder.started_at or utcnow(),
                ended_at=recorder.ended_at or utcnow(),
            )
        )
        session.commit()
    except BaseException:
        session.rollback()
        recorder.discard()  # a file without its row would be an orphan nobody can play
        raise
    finally:
        session.close()
    return SavedRecording(public_id, recorder.key, size, sha, duration)
