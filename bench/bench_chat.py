"""Bench: chat through the media server against a bare python-socketio echo server.

500 connected clients in 250 rooms (two per room, as in a consultation). Each client sends a
message and waits until the room's broadcast of it comes back to itself, then sends the next
(closed loop): the figure is the round trip (send → own `chat.message`) and messages per second.
The same clients, in the same run, do the same against a bare AsyncServer on aiohttp whose
`chat.send` handler only emits the payload back to the room (the baseline).

The chat server is the real one (media_server.server.MediaServer: token check at connect,
validation, limits, the database insert with its status check, per-room ordering) on a fresh
migrated database (SQLite file by default; DATABASE_URL=postgresql://... uses a fresh
PostgreSQL database). Each server runs in its own process; the clients share one process.
The per-connection chat limit (5 burst, 1/s) would cap a closed loop at 500 msg/s, so the
bench raises it (MEDIA_CHAT_BURST / MEDIA_CHAT_PER_SECOND overrides): what is measured is the
cost of the work per message, not the limit.

Phases per server: "paced" (every client sends one message a second — the contract's limit, a
realistic full load: 500 msg/s offered) and "saturated" (closed loop as fast as it goes).

Targets (issue 5): chat throughput ≥ 0.7× the echo server's, chat p99 ≤ 1.5× the echo's p99.

Run: `.venv/bin/python bench/bench_chat.py` (≈2 minutes). Options: --clients, --seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

ORIGIN = "http://bench.local"
THROUGHPUT_TARGET, P99_TARGET = 0.70, 1.50  # chat / echo (issue 5)
# Paced clients start at one of this many offsets in the second: ceil(clients / PACED_SLOTS)
# messages arrive together every 1 / PACED_SLOTS s (five every 10 ms for 500 clients).
PACED_SLOTS = 100


# ---------------------------------------------------------------------------------------------
# Servers (each runs in a child process: `bench_chat.py --serve chat|echo --port N`)
# ---------------------------------------------------------------------------------------------


def serve_echo(port: int) -> None:
    import socketio
    from aiohttp import web

    sio = socketio.AsyncServer(
        async_mode="aiohttp", cors_allowed_origins=[ORIGIN], logger=False, engineio_logger=False
    )
    app = web.Application()
    sio.attach(app)
    rooms: dict[str, str] = {}

    @sio.on("connect")
    async def connect(sid: str, environ: dict, auth: Any = None) -> None:
        room = (auth or {}).get("room", "r")
        rooms[sid] = room
        await sio.enter_room(sid, room)

    @sio.on("chat.send")
    async def send(sid: str, data: Any) -> dict:
        await sio.emit("chat.message", data, to=rooms[sid])
        return {"ok": True}

    freeze_collector()  # the chat server's own setting (tune_collector): a like-for-like baseline
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def serve_chat(port: int, database_url: str, secret: str, workers: int) -> None:
    from aiohttp import web

    from config import build_config
    from media_server.server import MediaServer, tune_collector, tune_process

    if not os.environ.get("BENCH_DEFAULT_SWITCH"):
        tune_process()  # what `python -m media_server` does
    cfg = build_config()
    cfg.update(
        {
            "SECRET_KEY": secret,
            "MEDIA_TOKEN_SECRET": "",
            "SQLALCHEMY_DATABASE_URI": database_url,
            "MEDIA_ALLOWED_ORIGINS": [ORIGIN],
            "MEDIA_REDIS_URL": "",
            "MEDIA_CHAT_BURST": 1_000_000,
            "MEDIA_CHAT_PER_SECOND": 1_000_000,
            "MEDIA_FLOOD_EVENTS": 1_000_000,
            "MEDIA_DB_WORKERS": workers,
        }
    )
    server = MediaServer(cfg)
    if not os.environ.get("BENCH_DEFAULT_SWITCH"):
        tune_collector()  # as `python -m media_server` does
    if os.environ.get("BENCH_TRACE"):
        _trace_stages(server)
    profile_to = os.environ.get("BENCH_PROFILE")  # --profile: where the cost goes (event loop)
    if profile_to:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    web.run_app(server.app, host="127.0.0.1", port=port, print=None, access_log=None)
    if profile_to:
        profiler.disable()
        profiler.dump_stats(profile_to)


def _trace_stages(server: Any) -> None:
    """--trace: where a message's time goes inside the chat server (printed at exit). The
    first seconds (the warm-up's burst) are left out of the figures."""
    import atexit
    import collections

    store, writer = server.store, server.writer
    stages: dict[str, list[float]] = collections.defaultdict(list)
    # (when, stage, ms): the same figures per chat phase (the server idles during the echo's)
    timeline: list[tuple[float, str, float]] = []
    sizes: list[int] = []
    queued_at: dict[int, float] = {}
    first = [0.0]
    chat_send, writer_send = server.chat_send, writer.send
    send_batch, thread_batch = store.send_batch_async, store.send_batch

    def keep(stage: str, ms: float) -> None:
        now = time.perf_counter()
        first[0] = first[0] or now
        if now - first[0] > 3:
            stages[stage].append(ms)
            timeline.append((now, stage, ms))

    handler_at: dict[Any, float] = {}  # the handler's start, by its task
    writer_done_at: dict[Any, float] = {}

    async def timed_writer_send(item: Any) -> Any:
        task = asyncio.current_task()
        queued_at[id(item)] = t = time.perf_counter()
        keep("handler, before the writer", (t - handler_at.get(task, t)) * 1000)
        try:
            return await writer_send(item)
        finally:
            writer_done_at[task] = time.perf_counter()

    def timed_thread_batch(items: list) -> list:
        t = time.perf_counter()
        try:
            return thread_batch(items)
        finally:
            keep("transaction in its thread", (time.perf_counter() - t) * 1000)

    async def timed_batch(items: list) -> list:
        t = time.perf_counter()
        for item in items:
            keep("queued for the writer", (t - queued_at.pop(id(item), t)) * 1000)
        try:
            return await send_batch(items)
        finally:
            keep("transaction as the loop sees it", (time.perf_counter() - t) * 1000)
            sizes.append(len(items))

    async def timed_send(conn: Any, data: dict) -> dict:
        task = asyncio.current_task()
        handler_at[task] = t = time.perf_counter()
        try:
            return await chat_send(conn, data)
        finally:
            end = time.perf_counter()
            keep("chat.send handler", (end - t) * 1000)
            handler_at.pop(task, None)
            if task in writer_done_at:  # the writer's answer, the broadcast and the lock
                keep("handler, after the writer", (end - writer_done_at.pop(task)) * 1000)

    if store.dialect == "sqlite":  # the checkpointer: how long the log grew, and its pauses
        checkpoint = store.checkpoint

        def timed_checkpoint() -> tuple[int, int, int]:
            t = time.perf_counter()
            result = checkpoint()
            keep("checkpoint: log frames seen", float(result[1]))
            keep("checkpoint" + (" (writer paused)" if writer._pauses else ""),
                 (time.perf_counter() - t) * 1000)  # fmt: skip
            return result

        store.checkpoint = timed_checkpoint

    if store.dialect == "postgresql":  # the statement's round trip alone, as the loop sees it
        pg_execute = store._pg_send.execute

        async def timed_pg_execute(params: dict) -> Any:
            t = time.perf_counter()
            try:
                return await pg_execute(params)
            finally:
                keep("PostgreSQL statement", (time.perf_counter() - t) * 1000)

        store._pg_send.execute = timed_pg_execute

    WATCH.reset()  # from here: the startup's collections (imports, tune_collector) are not it
    store.send_batch_async = timed_batch
    store.send_batch = timed_thread_batch  # what send_batch_async runs in a thread
    writer.send = timed_writer_send
    server.chat_send = timed_send
    server.sio.handlers["/"]["chat.send"] = server._guarded(timed_send)

    def report() -> None:
        def q(xs: list[float]) -> str:
            xs = sorted(xs) or [0.0]
            return f"p50 {xs[len(xs) // 2]:.1f} p99 {xs[int(len(xs) * 0.99)]:.1f} max {xs[-1]:.1f}"

        def unit(stage: str) -> str:
            return "frames" if stage.endswith("frames seen") else "ms"

        phases: list[dict[str, list[float]]] = []
        last = -1e9
        for when, stage, ms in timeline:
            if not stage.startswith("checkpoint"):  # it runs every second, idle or not
                if when - last > 2:  # an idle gap: the next phase
                    phases.append(collections.defaultdict(list))
                last = when
            if not phases:
                continue
            phases[-1][stage].append(ms)
        for n, phase in enumerate(phases, 1):
            for stage, values in phase.items():
                print(f"  [trace] phase {n} {stage} ({len(values)}): {unit(stage)} {q(values)}")
        for stage, values in stages.items():
            print(f"  [trace] {stage} ({len(values)}): {unit(stage)} {q(values)}")
        print(f"  [trace] batch size {q([float(n) for n in sizes])}")
        print(
            f"  [trace] full garbage collections {WATCH.count}: "
            f"longest {WATCH.longest:.1f} ms, total {WATCH.ms:.0f} ms",
            flush=True,
        )
        hwm = next(
            (ln.split()[1] for ln in open("/proc/self/status") if ln.startswith("VmHWM")), "?"
        )
        print(f"  [trace] chat server peak resident set {int(hwm) // 1024} MiB", flush=True)

        kinds = collections.Counter(type(o).__name__ for o in gc.get_objects())
        print(
            f"  [trace] objects the collector tracks: {sum(kinds.values())}, most: "
            + ", ".join(f"{k} {n}" for k, n in kinds.most_common(8)),
            flush=True,
        )

    atexit.register(report)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args: list[str], port: int) -> subprocess.Popen:
    import urllib.request

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--serve", *args, "--port", str(port)],
        cwd=ROOT,
        env=env,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("bench server exited")
        try:
            # The echo server has no /healthz: any HTTP answer from engine.io's path will do.
            urllib.request.urlopen(
                f"http://127.0.0.1:{port}/socket.io/?EIO=4&transport=polling", timeout=1
            ).close()
            return proc
        except OSError as exc:
            if getattr(exc, "code", None):  # an HTTP error is an answer
                return proc
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("bench server did not start")


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# ---------------------------------------------------------------------------------------------
# Clients
# ---------------------------------------------------------------------------------------------


class Client:
    def __init__(self, n: int, auth: dict[str, Any]) -> None:
        import socketio

        self.n = n
        self.auth = auth
        self.sio = socketio.AsyncClient(reconnection=False)
        self.pending: dict[str, float] = {}
        self.waiter: asyncio.Future | None = None
        self.rtts: list[float] = []
        self.seq = 0
        self.sio.on("chat.message", self._message)
        self.gone: str | None = None
        self.sio.on("disconnect", self._disconnected)

    async def _disconnected(self, *reason: Any) -> None:
        self.gone = str(reason[0]) if reason else "unknown reason"

    async def _message(self, data: dict[str, Any]) -> None:
        sent = self.pending.pop(data.get("client_msg_id", ""), None)
        if sent is not None:
            self.rtts.append(time.perf_counter() - sent)
            if self.waiter and not self.waiter.done():
                self.waiter.set_result(None)

    async def connect(self, url: str) -> None:
        from socketio import exceptions as socketio_errors

        # On a busy shared machine a handshake can miss engine.io's 5 s timeout: try again.
        for attempt in range(3):
            try:
                await self.sio.connect(
                    url, headers={"Origin": ORIGIN}, auth=self.auth, transports=["websocket"]
                )
                return
            except socketio_errors.ConnectionError:
                if attempt == 2:
                    raise
                await asyncio.sleep(1)

    async def send_one(self) -> None:
        self.seq += 1
        cid = f"c{self.n}-{self.seq}"
        self.waiter = asyncio.get_running_loop().create_future()
        self.pending[cid] = time.perf_counter()
        waiter = self.waiter

        def ack(answer: Any = None, *_rest: Any) -> None:
            # A refusal means the message was not stored: say which, instead of a 30 s wait.
            if isinstance(answer, dict) and not answer.get("ok") and not waiter.done():
                waiter.set_exception(RuntimeError(f"{cid}: the server answered {answer}"))

        await self.sio.emit(
            "chat.send", {"client_msg_id": cid, "body": f"message {self.seq}"}, callback=ack
        )
        try:
            await asyncio.wait_for(waiter, 30)
        except TimeoutError:
            state = "connected" if self.sio.connected else f"disconnected ({self.gone})"
            raise RuntimeError(f"{cid}: no chat.message in 30 s; client {state}") from None


def cpu_seconds(pid: int, tid: int | None = None) -> float:
    """utime + stime of a process (Linux /proc): the server's own CPU, whatever the load;
    with `tid`, of that thread only (the main thread's id is the process's)."""
    path = f"/proc/{pid}/task/{tid}/stat" if tid else f"/proc/{pid}/stat"
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def freeze_collector() -> None:
    """What media_server.server.tune_collector() does, for the bench's own processes: what
    exists now is frozen out of the collector's sight, young objects collected less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


class CollectorWatch:
    """This process's full collections. In the client a pause delays every reply in flight,
    whichever server is being measured, so each phase reports them beside its figures; the
    chat server's --trace reports its own."""

    def __init__(self) -> None:
        self.reset()
        self._started = 0.0
        gc.callbacks.append(self._on_gc)

    def reset(self) -> None:
        self.count, self.ms, self.longest = 0, 0.0, 0.0

    def _on_gc(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        elif info.get("generation") == 2:
            ms = (time.perf_counter() - self._started) * 1000
            self.count += 1
            self.ms += ms
            self.longest = max(self.longest, ms)


WATCH = CollectorWatch()


async def run_phase(
    clients: list[Client], seconds: float, *, paced: bool, pid: int
) -> dict[str, float]:
    for c in clients:
        c.rtts = []
    cpu0, loop0 = cpu_seconds(pid), cpu_seconds(pid, pid)
    gc0 = (WATCH.count, WATCH.ms)
    stop_at = time.perf_counter() + seconds

    async def loop(c: Client) -> None:
        # Spread the first sends so the paced phase does not start as one burst.
        await asyncio.sleep((c.n % PACED_SLOTS) / PACED_SLOTS if paced else 0)
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            await c.send_one()
            if paced:
                await asyncio.sleep(max(0.0, 1.0 - (time.perf_counter() - started)))

    t0 = time.perf_counter()
    await asyncio.gather(*(loop(c) for c in clients))
    elapsed = time.perf_counter() - t0
    cpu, loop_cpu = cpu_seconds(pid) - cpu0, cpu_seconds(pid, pid) - loop0
    rtts = sorted(r for c in clients for r in c.rtts)
    q = statistics.quantiles(rtts, n=100)
    return {
        "messages": len(rtts),
        "cpu_ms_per_msg": cpu * 1000 / max(1, len(rtts)),
        # The event loop's thread alone (the rest: database threads)
        "loop_ms_per_msg": loop_cpu * 1000 / max(1, len(rtts)),
        "per_second": len(rtts) / elapsed,
        "p50_ms": q[49] * 1000,
        "p99_ms": q[98] * 1000,
        "client_gc": WATCH.count - gc0[0],
        "client_gc_ms": WATCH.ms - gc0[1],
    }


async def measure(
    servers: dict[str, tuple[str, int]],
    auths: list[dict[str, Any]],
    seconds: float,
    rounds: int,
    sent: dict[str, int],
    phases: tuple[str, ...] = ("paced", "saturated"),
) -> dict[str, dict[str, dict[str, float]]]:
    """Both servers stay up with their own 500 clients; the phases alternate between them,
    round after round, so a neighbour's burst on this shared machine hits both alike. Each
    figure is the median over the rounds."""
    groups: dict[str, list[Client]] = {}
    for name, (url, _) in servers.items():
        groups[name] = [Client(i, a) for i, a in enumerate(auths)]
        for i in range(0, len(auths), 50):
            await asyncio.gather(*(c.connect(url) for c in groups[name][i : i + 50]))
    runs: dict[str, dict[str, list[dict[str, float]]]] = {
        name: {phase: [] for phase in phases} for name in servers
    }
    # The harness's own pauses are not the servers' latency: with Flask, SQLAlchemy and 1,000
    # clients in this process, a full collection stopped every client for ≈ 200 ms, once or
    # twice a phase, and that one pause was the phase's p99 (--trace prints them per round).
    # The servers' collectors are tuned the same way (tune_collector()).
    freeze_collector()
    try:
        for name, (_, pid) in servers.items():
            await run_phase(groups[name], 2, paced=False, pid=pid)  # warm-up
        for _ in range(rounds):
            for phase in phases:
                for name, (_, pid) in servers.items():
                    figures = await run_phase(
                        groups[name], seconds, paced=phase == "paced", pid=pid
                    )
                    runs[name][phase].append(figures)
                    if os.environ.get("BENCH_TRACE"):
                        f = figures
                        print(
                            f"  [round] {phase:<9} {name}: p50 {f['p50_ms']:.1f} "
                            f"p99 {f['p99_ms']:.1f} ms; CPU/msg {f['cpu_ms_per_msg']:.2f} "
                            f"(loop {f['loop_ms_per_msg']:.2f}) ms; client full collections "
                            f"{f['client_gc']} ({f['client_gc_ms']:.0f} ms)",
                            flush=True,
                        )
    finally:
        for clients in groups.values():
            await asyncio.gather(*(c.sio.disconnect() for c in clients), return_exceptions=True)
    sent["chat"] = sum(c.seq for c in groups["chat"])
    return {
        name: {
            phase: {k: statistics.median(r[k] for r in results) for k in results[0]}
            for phase, results in phases.items()
        }
        for name, phases in runs.items()
    }


async def database_floor(
    url: str,
    rooms: list[tuple[int, Any, int, int]],
    seconds: float,
    per_slot: int,
    tag: str = "floor",
) -> dict[str, float]:
    """The chat's database path alone, in this process: the server's ChatWriter and insert (no
    socket.io) fed as the paced phase feeds the server — `per_slot` messages together every
    1 / PACED_SLOTS s (the clients' start offsets), each from another room. What a message's
    round trip cannot go below on this machine, whatever the server does around it."""
    from media_server.store import ChatStore, ChatWriter, SendItem

    store = ChatStore(url, workers=2)
    try:
        infos = [await store.run(store.consultation, r[0]) for r in rooms]
        writer = ChatWriter(store)
        took: list[float] = []

        async def one(tick: int, k: int) -> None:
            info = infos[(tick * per_slot + k) % len(infos)]
            cid = f"{tag}-{tick}-{k}"
            item = SendItem(info, info.patient_user_id, "floor", cid, "message")
            started = time.perf_counter()
            if (await writer.send(item)).outcome != "stored":
                raise RuntimeError(f"{cid} was not stored")
            took.append((time.perf_counter() - started) * 1000)

        for tick in range(int(seconds * PACED_SLOTS)):
            started = time.perf_counter()
            await asyncio.gather(*(one(tick, k) for k in range(per_slot)))
            await asyncio.sleep(max(0.0, 1 / PACED_SLOTS - (time.perf_counter() - started)))
        q = statistics.quantiles(took, n=100)
        return {"messages": len(took), "p50_ms": q[49], "p99_ms": q[98]}
    finally:
        await store.aclose()


def without_flush(app: Any) -> None:
    """The bench database's new sessions commit without waiting for the WAL flush."""
    from sqlalchemy import text

    from app.extensions import db

    with db.engine.connect() as conn:
        name = conn.execute(text("SELECT current_database()")).scalar()
        conn.execute(text(f'ALTER DATABASE "{name}" SET synchronous_commit = off'))
        conn.commit()


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------


def load_rooms(app: Any, rooms: int) -> list[tuple[int, Any, int, int]]:
    """`rooms` in-progress duty consultations, each with a patient account and a second
    account acting as the doctor. Returns (consultation id, public id, patient uid, doctor uid)."""
    from datetime import UTC, datetime

    from sqlalchemy import insert, select
    from werkzeug.security import generate_password_hash

    from app.accounts import get_role
    from app.demo import ensure_roles
    from app.extensions import db
    from bench.common import BENCH_PASSWORD, load_patient_accounts
    from models import Consultation, Patient

    with app.app_context():
        ensure_roles()
        role_id = get_role("Patient").id
        db.session.commit()
        pw = generate_password_hash(BENCH_PASSWORD, "pbkdf2:sha256:1000")
        now = datetime.now(UTC)
        with db.engine.begin() as conn:
            first = load_patient_accounts(
                conn,
                count=rooms * 2,
                first_n=1,
                role_id=role_id,
                password_hash=pw,
                phone_prefix="+7913",
                email_prefix="chat",
                patronymic="",
                now=now,
            )
            patients = conn.execute(
                select(Patient.id, Patient.user_id)
                .where(Patient.id >= first)
                .order_by(Patient.id)
                .limit(rooms * 2)
            ).all()
            conn.execute(
                insert(Consultation.__table__),
                [
                    {"kind": "duty", "status": "in_progress", "patient_id": patients[2 * i].id}
                    for i in range(rooms)
                ],
            )
            cons = conn.execute(
                select(Consultation.id, Consultation.public_id, Consultation.patient_id).order_by(
                    Consultation.id
                )
            ).all()
        by_patient = {p.id: p.user_id for p in patients}
        doctor_of = {patients[2 * i].id: patients[2 * i + 1].user_id for i in range(rooms)}
        return [
            (c.id, c.public_id, by_patient[c.patient_id], doctor_of[c.patient_id]) for c in cons
        ]


def mint_auths(app: Any, rooms: list[tuple[int, Any, int, int]]) -> list[dict[str, Any]]:
    from app.media_tokens import JoinGrant, mint_join_token

    auths = []
    with app.app_context():
        for cid, cpub, patient_uid, doctor_uid in rooms:
            for uid, role in ((patient_uid, "patient"), (doctor_uid, "doctor")):
                grant = JoinGrant(
                    user_id=uid,
                    consultation_id=cid,
                    consultation_public_id=cpub,
                    role=role,
                    name=role,
                    media=True,
                    chat=True,
                    session_generation=0,  # a fresh account, never signed out
                )
                auths.append({"token": mint_join_token(grant), "last_seen": 0, "room": str(cpub)})
    return auths


# ---------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--serve", nargs="*")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--clients", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=10, help="per phase and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=4, help="database threads of the server")
    parser.add_argument("--trace", action="store_true", help="chat server: time per stage")
    parser.add_argument(
        "--phase", choices=("both", "paced", "saturated"), default="both", help="phases to run"
    )
    parser.add_argument("--profile", help="write the chat server's cProfile stats to this file")
    args = parser.parse_args()
    if args.serve:
        if args.serve[0] == "echo":
            serve_echo(args.port)
        else:
            serve_chat(args.port, args.serve[1], os.environ["BENCH_SECRET"], int(args.serve[2]))
        return

    from bench.common import create_bench_app, fresh_database_url, machine_load

    rooms_n = args.clients // 2
    if args.trace:
        os.environ["BENCH_TRACE"] = "1"
    if args.profile:
        os.environ["BENCH_PROFILE"] = str(Path(args.profile).resolve())
    with fresh_database_url() as url, tempfile.TemporaryDirectory() as storage:
        backend = "PostgreSQL" if url.startswith("postgresql") else "SQLite"
        app = create_bench_app(url, storage)
        with app.app_context():
            from sqlalchemy import text

            from app.extensions import db

            if backend == "SQLite":  # the service's own setting (config.SQLiteConnection)
                with db.engine.connect() as conn:
                    backend += f" ({conn.execute(text('PRAGMA journal_mode')).scalar()})"
        print(f"bench_chat: {backend}, {rooms_n * 2} clients in {rooms_n} rooms, {machine_load()}")
        rooms = load_rooms(app, rooms_n)
        auths = mint_auths(app, rooms)  # valid 300 s: both servers connect well within that
        os.environ["BENCH_SECRET"] = str(app.config["SECRET_KEY"])  # the chat server's key
        procs: dict[str, subprocess.Popen] = {}
        servers: dict[str, tuple[str, int]] = {}
        try:
            for name, serve_args in (
                ("echo", ["echo"]),
                ("chat", ["chat", url, str(args.workers)]),
            ):
                port = free_port()
                procs[name] = start_server(serve_args, port)
                servers[name] = (f"http://127.0.0.1:{port}", procs[name].pid)
            sent: dict[str, int] = {}
            phases = ("paced", "saturated") if args.phase == "both" else (args.phase,)
            results = asyncio.run(measure(servers, auths, args.seconds, args.rounds, sent, phases))
        finally:
            for proc in procs.values():
                stop_server(proc)
        floor = unflushed = None
        per_slot = -(-len(auths) // PACED_SLOTS)
        if "paced" in phases:
            floor = asyncio.run(database_floor(url, rooms, args.seconds, per_slot))
            sent["chat"] += int(floor["messages"])
            if backend == "PostgreSQL":
                # The commit's WAL flush is the durability SQLite's WAL/NORMAL does not pay
                # per commit. Measured, never used by the service: the bench's own database,
                # the servers gone, only the floor's new connections take it.
                with app.app_context():
                    without_flush(app)
                unflushed = asyncio.run(
                    database_floor(url, rooms, args.seconds, per_slot, tag="unflushed")
                )
                sent["chat"] += int(unflushed["messages"])
        with app.app_context():
            from sqlalchemy import func, select

            from app.extensions import db
            from models import ChatMessage

            stored = db.session.scalar(select(func.count()).select_from(ChatMessage))

    print()
    print(
        f"  {'phase':<10} {'server':<6} {'messages':>9} {'msg/s':>8} {'p50 ms':>8} "
        f"{'p99 ms':>8} {'CPU ms/msg':>11}"
    )
    for phase in phases:
        for name in ("echo", "chat"):
            r = results[name][phase]
            print(
                f"  {phase:<10} {name:<6} {r['messages']:>9} {r['per_second']:>8.0f} "
                f"{r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f} {r['cpu_ms_per_msg']:>11.2f}"
            )
    # Every send waited for its own broadcast, so each must be exactly one row.
    check = "ok" if stored == sent["chat"] else "MISMATCH"
    print(
        f"  chat messages sent {sent['chat']}, rows stored {stored} ({check}); "
        f"medians of {args.rounds} rounds per figure"
    )
    print(f"  at the end: {machine_load()}")
    print()
    print(
        f"Ratios chat / echo (targets: throughput ≥ {THROUGHPUT_TARGET:.2f}, "
        f"p99 ≤ {P99_TARGET:.2f})"
    )
    for phase in phases:
        e, c = results["echo"][phase], results["chat"][phase]
        thr = c["per_second"] / e["per_second"]
        p99 = c["p99_ms"] / e["p99_ms"]
        cpu = c["cpu_ms_per_msg"] / e["cpu_ms_per_msg"]
        verdict = "ok" if thr >= THROUGHPUT_TARGET and p99 <= P99_TARGET else "MISS"
        print(
            f"  {phase:<10} throughput {thr:.2f}  p50 {c['p50_ms'] / e['p50_ms']:.2f}  "
            f"p99 {p99:.2f}  server CPU per message {cpu:.2f}  {verdict}"
        )
    if floor:
        room = (P99_TARGET - 1) * results["echo"]["paced"]["p99_ms"]
        print(
            f"  paced: the database path alone (ChatWriter and insert, no socket.io, {per_slot} "
            f"messages every {1000 / PACED_SLOTS:.0f} ms) p50 {floor['p50_ms']:.1f} / "
            f"p99 {floor['p99_ms']:.1f} ms; "
            f"the p99 target leaves the chat {room:.1f} ms over the echo's p99"
        )
    if unflushed:
        print(
            f"  paced: the same path without waiting for the commit's WAL flush "
            f"(synchronous_commit=off, measured only) p50 {unflushed['p50_ms']:.1f} / "
            f"p99 {unflushed['p99_ms']:.1f} ms"
        )


if __name__ == "__main__":
    main()
