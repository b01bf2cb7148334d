"""The relay's side of the bench: real socket.io clients and aiortc peers in this process,
talking to the media server as the call page does, and what is measured through them: the
server's CPU per frame delivered to 1 or 2 subscribers (also while the doctor records), and the
time from the doctor's `room.admit` to the first remote video frame on each side.
"""

from __future__ import annotations

import asyncio
import statistics
import time

import socketio
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaPlayer
from aiortc.mediastreams import MediaStreamError
from relay_world import ORIGIN, SOURCE, cpu_seconds

WARMUP_FRAMES = 60  # bitrate ramp-up and the first keyframe are not steady state


# ---------------------------------------------------------------------------------------------
# Clients
# ---------------------------------------------------------------------------------------------


class Client:
    def __init__(self, url: str, mint) -> None:
        self.url, self.mint = url, mint
        self.sio = socketio.AsyncClient(reconnection=False)
        self.events: dict[str, list] = {}
        self.changed = asyncio.Event()
        self.sio.on("*", self._record)
        self.pcs: list[RTCPeerConnection] = []

    async def _record(self, event: str, *args) -> None:
        self.events.setdefault(event, []).append(args[0] if args else None)
        self.changed.set()

    async def connect(self) -> Client:
        await self.sio.connect(
            self.url,
            headers={"Origin": ORIGIN},
            auth={"token": self.mint()},
            transports=["websocket"],
            wait_timeout=10,
        )
        await self.until(lambda: self.events.get("joined"))
        return self

    @property
    def sid(self) -> str:
        return self.events["joined"][-1]["sid"]

    async def until(self, predicate, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(f"waited for an event; got {list(self.events)}")
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), 0.2)
            except TimeoutError:
                pass

    async def call(self, event: str, data: dict) -> dict:
        ack = await self.sio.call(event, data, timeout=30)
        if not ack.get("ok"):
            raise RuntimeError(f"{event}: {ack}")
        return ack

    async def publish(self, player: MediaPlayer) -> RTCPeerConnection:
        pc = RTCPeerConnection()
        self.pcs.append(pc)
        pc.addTransceiver(player.video, direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        ack = await self.call("relay.publish", {"sdp": pc.localDescription.sdp})
        await pc.setRemoteDescription(RTCSessionDescription(sdp=ack["sdp"], type="answer"))
        return pc

    async def subscribe(self, source: str, on_frame) -> RTCPeerConnection:
        pc = RTCPeerConnection()
        self.pcs.append(pc)
        tasks = []

        @pc.on("track")
        def on_track(track) -> None:
            if track.kind == "video":
                tasks.append(asyncio.ensure_future(_count(track, on_frame)))

        pc.addTransceiver("video", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        ack = await self.call("relay.subscribe", {"source": source, "sdp": pc.localDescription.sdp})
        await pc.setRemoteDescription(RTCSessionDescription(sdp=ack["sdp"], type="answer"))
        pc._bench_tasks = tasks  # type: ignore[attr-defined]
        return pc

    async def close(self) -> None:
        for pc in self.pcs:
            for task in getattr(pc, "_bench_tasks", []):
                task.cancel()
            await pc.close()
        await self.sio.disconnect()


async def _count(track, on_frame) -> None:
    try:
        while True:
            await track.recv()
            on_frame()
    except (MediaStreamError, asyncio.CancelledError):
        return


async def enter(doctor: Client, patient: Client, *, admit: bool = True) -> None:
    await doctor.call("room.enter", {})
    await patient.call("room.enter", {})
    if admit:
        await doctor.call("room.admit", {"sid": patient.sid})
        await patient.until(lambda: patient.events.get("room.admitted"))


# ---------------------------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------------------------


async def rtp_bytes(pc: RTCPeerConnection, kind: str, field: str) -> int:
    report = await pc.getStats()
    return sum(getattr(s, field, 0) for s in report.values() if s.type == kind)


async def remote_sent(pc: RTCPeerConnection) -> tuple[int, float]:
    """What the server's sender says it sent to this subscriber (its last RTCP sender report):
    bytes and the report's time. aiortc's inbound stats carry no byte count."""
    report = await pc.getStats()
    for s in report.values():
        if s.type == "remote-outbound-rtp":
            return s.bytesSent, s.remoteTimestamp.timestamp()
    return 0, 0.0


def bitrate(first: tuple[int, float], last: tuple[int, float]) -> int | None:
    if last[1] <= first[1]:
        return None
    return int((last[0] - first[0]) * 8 / (last[1] - first[1]))


async def measure_cpu(
    url: str, tokens: dict, pid: int, frames: int, receivers: int, repeat: int, *, record: bool
) -> dict:
    """Patient publishes; `receivers` doctor sockets (the doctor's tabs) subscribe to it, one
    connection each (a socket has one subscription per source); with `record`, the doctor
    records the call over the measured windows."""
    doctor = await Client(url, tokens["doctor"]).connect()
    patient = await Client(url, tokens["patient"]).connect()
    await enter(doctor, patient)
    watchers = [doctor]
    for _ in range(receivers - 1):
        tab = await Client(url, tokens["doctor"]).connect()
        await tab.call("room.enter", {})
        watchers.append(tab)
    player = MediaPlayer(SOURCE, format="lavfi")
    publishing = await patient.publish(player)
    counts = [0] * receivers
    subscriptions = []
    for i, watcher in enumerate(watchers):

        def bump(i: int = i) -> None:
            counts[i] += 1

        subscriptions.append(await watcher.subscribe(patient.sid, bump))
    await doctor.until(lambda: min(counts) >= WARMUP_FRAMES, timeout=60)
    if record:
        await doctor.call("record.start", {})
        await asyncio.sleep(1)  # the keyframe the decoder starts at, the recorder's first frame
    sent0 = await rtp_bytes(publishing, "outbound-rtp", "bytesSent")
    got0 = [await remote_sent(pc) for pc in subscriptions]
    start = time.monotonic()
    windows = []
    for _ in range(repeat):
        base = min(counts)
        cpu0, wall0 = cpu_seconds(pid), time.monotonic()
        while min(counts) < base + frames:
            await asyncio.sleep(0.02)
        cpu1, wall1 = cpu_seconds(pid), time.monotonic()
        windows.append((cpu1 - cpu0, wall1 - wall0, min(counts) - base))
    sent1 = await rtp_bytes(publishing, "outbound-rtp", "bytesSent")
    got1 = [await remote_sent(pc) for pc in subscriptions]
    seconds = time.monotonic() - start
    saved = (await doctor.call("record.stop", {}))["recording_id"] if record else None
    if record and saved is None:
        raise RuntimeError("the recording was not saved")
    rates = [r for r in (bitrate(a, b) for a, b in zip(got0, got1, strict=True)) if r]
    for client in [*watchers, patient]:
        await client.close()
    player.video.stop()
    # The quietest window: other work on a shared machine only ever adds CPU time.
    cpu, wall, delivered = min(windows, key=lambda w: w[0] / w[2])
    return {
        "cpu": cpu,
        "wall": wall,
        "delivered": delivered,
        "receivers": receivers,
        "recording_id": saved,
        "send_bps": int((sent1 - sent0) * 8 / seconds),
        # the subscribers' mean; the publisher's when no two sender reports fell in the window
        "recv_bps": int(statistics.mean(rates)) if rates else int((sent1 - sent0) * 8 / seconds),
    }


async def measure_latency(url: str, tokens: dict) -> tuple[float, float]:
    doctor = await Client(url, tokens["doctor"]).connect()
    patient = await Client(url, tokens["patient"]).connect()
    doctor_player = MediaPlayer(SOURCE, format="lavfi")
    patient_player = MediaPlayer(SOURCE, format="lavfi")
    await doctor.call("room.enter", {})
    await doctor.publish(doctor_player)
    await patient.call("room.enter", {})
    await doctor.until(
        lambda: any(
            p["sid"] == patient.sid and p["state"] == "waiting"
            for p in max(
                doctor.events.get("room.state", [{}]), key=lambda s: s.get("version", 0)
            ).get("participants", [])
        )
    )
    seen: dict[str, float] = {}

    def first(who: str):
        def mark() -> None:
            seen.setdefault(who, time.monotonic())

        return mark

    async def patient_side() -> None:
        await patient.until(lambda: patient.events.get("room.admitted"))
        # What the page does once admitted: publish, and subscribe to every listed source.
        await patient.publish(patient_player)
        state = await patient.call("relay.state", {})
        for source in state["sources"]:
            if source["sid"] != patient.sid:
                await patient.subscribe(source["sid"], first("patient sees doctor"))

    async def doctor_side() -> None:
        await doctor.until(
            lambda: any(
                s["sid"] == patient.sid
                for e in doctor.events.get("relay.sources", [])
                for s in e["sources"]
            )
        )
        await doctor.subscribe(patient.sid, first("doctor sees patient"))

    started = time.monotonic()
    await doctor.call("room.admit", {"sid": patient.sid})
    await asyncio.gather(patient_side(), doctor_side())
    while len(seen) < 2 and time.monotonic() - started < 30:
        await asyncio.sleep(0.005)
    await doctor.close()
    await patient.close()
    doctor_player.video.stop()
    patient_player.video.stop()
    return (
        seen.get("patient sees doctor", float("nan")) - started,
        seen.get("doctor sees patient", float("nan")) - started,
    )
