"""Relay bench: server CPU per forwarded 640×480 stream against the floor of forwarding the same
packets through SRTP alone, and the time from admitting the patient to the first remote video
frame.

A real media server (`python -m media_server`, its own process, so its CPU is its own) on a fresh
database; real socket.io clients and aiortc peers in this process, fed by FFmpeg's `testsrc`
(640×480, 30 fps, moving) through aiortc's MediaPlayer.

1. CPU: one participant publishes video only; K subscribers (1, then 2) receive it through the
   relay. The server's CPU (utime + stime from /proc) over a fixed number of frames delivered to
   every subscriber, per frame and per subscriber stream. The floor, in the same run: a bare
   asyncio loop in its own process that receives the same stream's SRTP packets over UDP (the
   source's frames VP8-encoded at the bitrate the relay saw, packetized by aiortc, protected
   with pylibsrtp), unprotects each and protects it again for each receiver (pylibsrtp, aiortc's
   SRTP) and sends it on: what forwarding must do at the least. The two alternate through
   bench/fair.compare (≥ 5 rounds). Target (issue 16): ≤ 2× the floor. For information (no
   target): aiortc's VP8 decode + encode of the same frames (what a relay that re-encoded would
   pay), and one receiver while the doctor records the call.
2. Latency: the doctor publishes and waits; the patient waits in the waiting room; from the
   doctor's `room.admit` to the first decoded video frame at each side (patient sees the doctor,
   doctor sees the patient), for a few fresh consultations.

Where the parts are: `relay_world.py` (the source, the media server's process, the
consultations), `relay_clients.py` (the relay's side: the clients and what they measure),
`relay_floor.py` (what the relay is measured against: the SRTP floor, and re-encoding for
information); this script alternates the rounds and prints the figures and the verdicts.

Run: .venv/bin/python bench/bench_relay.py [--frames 300] [--rounds 5]  (try: --frames 60)
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import create_bench_app, fresh_database_url, machine_load
from fair import compare, print_summary
from relay_clients import measure_cpu, measure_latency
from relay_floor import codec_alone, floor_round, rtp_stream, serve_floor
from relay_world import SOURCE, make_consultations, recorded_file, source_frames, start_media_server

TARGET_RATIO = 2.0  # relay CPU ≤ 2× the SRTP forwarding floor


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=300, help="frames measured per round")
    parser.add_argument("--rounds", type=int, default=5, help="fair rounds per comparison")
    parser.add_argument("--admissions", type=int, default=3, help="admissions timed")
    parser.add_argument("--floor", nargs="+", help=argparse.SUPPRESS)  # the floor's process
    args = parser.parse_args()
    if args.floor:
        port, key, *outs = args.floor
        pairs = [(bytes.fromhex(k), int(p)) for k, p in (o.split(":") for o in outs)]
        serve_floor(int(port), bytes.fromhex(key), pairs)
        return 0

    configs = (1, 2)
    rounds = max(args.rounds, 5)
    with fresh_database_url() as database_url, tempfile.TemporaryDirectory() as workdir:
        app = create_bench_app(database_url, str(Path(workdir) / "storage"))
        # A fresh consultation per relay round (an admitted patient stays admitted a while).
        rooms = iter(make_consultations(app, len(configs) * (rounds + 1) + 1 + args.admissions))
        proc, url = start_media_server(database_url, workdir)
        comparisons, info = [], []
        try:
            print(f"media server pid {proc.pid} at {url}; source {SOURCE}; {machine_load()}")
            frames = source_frames(args.frames)
            for receivers in configs:

                def relay_once(receivers: int = receivers) -> dict:
                    return asyncio.run(
                        measure_cpu(
                            url, next(rooms), proc.pid, args.frames, receivers, 1, record=False
                        )
                    )

                probe = relay_once()  # a warm-up, and the bitrates the floor's stream takes
                stream = rtp_stream(frames, probe["send_bps"])
                runs: list[dict] = []

                def relay(receivers: int = receivers, runs: list = runs) -> float:
                    run = relay_once()
                    runs.append(run)
                    return run["cpu"] * 1000 / run["delivered"] / receivers

                def floor(receivers: int = receivers, stream: list = stream) -> float:
                    return asyncio.run(floor_round(stream, receivers))

                comparisons.append(
                    compare(
                        f"relay CPU per stream, {receivers} receiver(s) (ratio floor/relay)",
                        relay,
                        floor,
                        unit="ms/frame",
                        target=1 / TARGET_RATIO,
                        higher_is_better=False,
                        rounds=rounds,
                    )
                )
                codec = codec_alone(
                    frames, receivers, send_bps=probe["send_bps"], recv_bps=probe["recv_bps"]
                )
                info.append((receivers, runs, codec * 1000 / args.frames / receivers))
            recording = asyncio.run(
                measure_cpu(url, next(rooms), proc.pid, args.frames, 1, 1, record=True)
            )
            recording["file"] = recorded_file(app, recording["recording_id"])
            latencies = [
                asyncio.run(measure_latency(url, next(rooms))) for _ in range(args.admissions)
            ]
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()

    print()
    print("CPU per forwarded 640×480 stream, ms per frame (medians over the rounds)")
    forwarding_ms = 0.0
    for (receivers, runs, codec_ms), comparison in zip(info, comparisons, strict=True):
        relay_ms = statistics.median(comparison.ours)
        forwarding_ms = forwarding_ms or relay_ms
        wall = statistics.median(r["wall"] for r in runs)
        fps = statistics.median(r["delivered"] / r["wall"] for r in runs)
        cpu_share = statistics.median(r["cpu"] / r["wall"] for r in runs)
        print(
            f"  {receivers} receiver(s): relay {relay_ms:.2f}, SRTP floor "
            f"{statistics.median(comparison.baseline):.2f}, re-encoding (aiortc VP8 decode + "
            f"encode, information) {codec_ms:.2f}; {fps:.1f} fps over {wall:.1f} s, server "
            f"{cpu_share * 100:.0f}% of a core; publisher "
            f"{statistics.median(r['send_bps'] for r in runs) / 1000:.0f} kbit/s, each "
            f"subscriber {statistics.median(r['recv_bps'] for r in runs) / 1000:.0f} kbit/s"
        )
    recording_ms = recording["cpu"] * 1000 / recording["delivered"]
    print(
        f"  while recording (1 receiver, no target): {recording_ms:.2f} ms/frame, "
        f"{recording['cpu'] / recording['wall'] * 100:.0f}% of a core; the recording adds "
        f"{recording_ms - forwarding_ms:.2f} ms a frame"
    )
    size, seconds = recording["file"]
    print(
        f"  the file: {size / 1e6:.1f} MB for {seconds:.1f} s, {size * 8 / seconds / 1000:.0f} "
        f"kbit/s, {size * 60 / seconds / 1e6:.1f} MB a minute (the publisher's video as sent)"
    )
    print()
    print("Admit → first remote video frame (s)")
    for n, (patient_sees, doctor_sees) in enumerate(latencies, 1):
        print(
            f"  admission {n}: patient sees doctor {patient_sees:.3f}   "
            f"doctor sees patient {doctor_sees:.3f}"
        )
    pat = [x for x, _ in latencies]
    doc = [y for _, y in latencies]
    print(
        f"  median:  patient sees doctor {statistics.median(pat):.3f}   "
        f"doctor sees patient {statistics.median(doc):.3f}"
    )
    print(f"\n{machine_load()}; target: relay ≤ {TARGET_RATIO:g}× the floor (ratio ≥ 0.50)")
    return print_summary(comparisons)


if __name__ == "__main__":
    sys.exit(main())
