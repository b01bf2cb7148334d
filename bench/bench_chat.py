"""Bench: chat through the real media server against a bare python-socketio server doing the
same durable insert per message, and (information only) an echo that stores nothing.

Clients: real socket.io clients (two per room, as in a consultation), all in this process.
Each sends a message and waits until the room's broadcast of it comes back to itself; the
figure is that round trip (send → own `chat.message`), and messages per second.

Servers, each in its own process on a fresh migrated database (SQLite file by default;
DATABASE_URL=postgresql://... makes a fresh PostgreSQL database):
- chat: media_server.server.MediaServer as `python -m media_server` runs it (join token at
  connect, validation, limits, per-room order, ChatWriter's group commit with the status
  rule in the insert); its per-connection chat limit is lifted, so the cost is measured.
- bare: a bare AsyncServer whose `chat.send` inserts the row with the driver alone (asyncpg
  pool / one aiosqlite connection, a transaction per message), then broadcasts it and acks.
- echo: a bare AsyncServer that only broadcasts the payload back (stores nothing).

Phases: "paced" (every client sends one message a second, the contract's limit: the p99) and
"saturated" (closed loop as fast as it goes: the throughput). Each is compared chat against
bare with bench/fair.compare (alternated, ≥ 5 rounds, median of per-round ratios, no verdict
when the machine's load exceeds its cores). Targets (issue 16): paced p99 ≤ 1.5× bare's
(fair's ratio bare/chat ≥ 0.67), throughput ≥ 0.7× bare's. Every acked message must be one
row (checked).

Run: .venv/bin/python bench/bench_chat.py  (≈ 4 min; try: --clients 40 --seconds 2)
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
THROUGHPUT_TARGET, P99_TARGET = 0.70, 1.50  # chat against bare (issue 16)
# Paced clients start at one of this many offsets in the second: ceil(clients / PACED_SLOTS)
# messages arrive together every 1 / PACED_SLOTS s (five every 10 ms for 500 clients).
PACED_SLOTS = 100


# ---------------------------------------------------------------------------------------------
# Servers (each runs in a child process: `bench_chat.py --serve NAME [DATABASE_URL] --port N`)
# ---------------------------------------------------------------------------------------------


def bare_app(store: Any = None) -> tuple[Any, Any]:
    """A bare AsyncServer on aiohttp: `chat.send` stores the message with `store` (None: the
    echo, nothing stored), broadcasts it to the room and acks."""
    import socketio
    from aiohttp import web

    sio = socketio.AsyncServer(
        async_mode="aiohttp", cors_allowed_origins=[ORIGIN], logger=False, engineio_logger=False
    )
    app = web.Application()
    sio.attach(app)
    who: dict[str, tuple[str, int, int]] = {}

    @sio.on("connect")
    async def connect(sid: str, environ: dict, auth: Any = None) -> None:
        auth = auth or {}
        who[sid] = (auth.get("room", "r"), auth.get("cid", 0), auth.get("uid", 0))
        await sio.enter_room(sid, who[sid][0])

    @sio.on("chat.send")
    async def send(sid: str, data: Any) -> dict:
        room, cid, uid = who[sid]
        message = dict(data)
        if store is not None:
            message["id"] = await store(cid, uid, data["client_msg_id"], data["body"])
        await sio.emit("chat.message", message, to=room)
        return {"ok": True, "message": message}

    return sio, app


async def bare_insert(url: str) -> Any:
    """The simplest fast durable insert: the driver alone, one transaction per message."""
    from datetime import UTC, datetime

    from models import uuid7

    sql = (
        "INSERT INTO chat_message (public_id, consultation_id, author_id, body, client_msg_id,"
        " created_at) VALUES ({}) RETURNING id"
    )
    if url.startswith("postgresql"):
        import asyncpg

        dsn = url.replace("postgresql+psycopg://", "postgresql://")
        pool = await asyncpg.create_pool(dsn, min_size=8, max_size=8)
        pg_sql = sql.format("$1, $2, $3, $4, $5, $6")

        async def insert_pg(cid: int, uid: int, cmid: str, body: str) -> int:
            return await pool.fetchval(pg_sql, uuid7(), cid, uid, body, cmid, datetime.now(UTC))

        return insert_pg

    import aiosqlite

    db = await aiosqlite.connect(url.removeprefix("sqlite:///"))
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=30000"):
        await db.execute(f"PRAGMA {pragma}")
    lite_sql = sql.format("?, ?, ?, ?, ?, ?")

    lock = asyncio.Lock()  # one writer at a time on SQLite: a transaction per message

    async def insert_sqlite(cid: int, uid: int, cmid: str, body: str) -> int:
        now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
        async with lock:
            async with db.execute(lite_sql, (uuid7().hex, cid, uid, body, cmid, now)) as cur:
                (new_id,) = await cur.fetchone()
            await db.commit()  # the ack waits for it, as the chat server's does
        return new_id

    return insert_sqlite


def serve_bare(port: int, url: str | None) -> None:
    from aiohttp import web

    async def build() -> Any:
        store = await bare_insert(url) if url else None
        return bare_app(store)[1]

    web.run_app(build(), host="127.0.0.1", port=port, print=None, access_log=None)


def serve_chat(port: int, database_url: str, secret: str) -> None:
    from aiohttp import web

    from config import build_config
    from media_server.server import MediaServer

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
        }
    )
    server = MediaServer(cfg)
    web.run_app(server.app, host="127.0.0.1", port=port, print=None, access_log=None)


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
    def __init__(self, tag: str, n: int, auth: dict[str, Any]) -> None:
        import socketio

        self.tag = tag  # client ids differ per server: one table, one unique key
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
        cid = f"{self.tag}{self.n}-{self.seq}"
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
    """The bench's own client process only (its 1,500 clients' pauses are not the servers'
    latency): what exists now is frozen out of the collector's sight, young objects
    collected less often. The servers run with Python's defaults."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


async def run_phase(
    clients: list[Client], seconds: float, *, paced: bool, pid: int
) -> dict[str, float]:
    for c in clients:
        c.rtts = []
    cpu0 = cpu_seconds(pid)
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
    rtts = sorted(r for c in clients for r in c.rtts)
    q = statistics.quantiles(rtts, n=100)
    return {
        "messages": len(rtts),
        "per_second": len(rtts) / elapsed,
        "p50_ms": q[49] * 1000,
        "p99_ms": q[98] * 1000,
        "cpu_ms_per_msg": (cpu_seconds(pid) - cpu0) * 1000 / max(1, len(rtts)),
    }


class Bench:
    """The three servers' client groups, connected once, on one event loop driven from sync
    code (fair.compare calls one phase of one server at a time)."""

    def __init__(self, servers: dict[str, tuple[str, int]], auths: list[dict[str, Any]]):
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.servers = servers
        self.groups = {n: [Client(n, i, a) for i, a in enumerate(auths)] for n in servers}
        self.figures: dict[tuple[str, str], list[dict[str, float]]] = {}
        for name, (url, _) in servers.items():
            clients = self.groups[name]
            for i in range(0, len(clients), 50):
                group = clients[i : i + 50]
                self.loop.run_until_complete(asyncio.gather(*(c.connect(url) for c in group)))

    def phase(self, name: str, phase: str, seconds: float) -> dict[str, float]:
        pid = self.servers[name][1]
        run = run_phase(self.groups[name], seconds, paced=phase == "paced", pid=pid)
        figures = self.loop.run_until_complete(run)
        self.figures.setdefault((name, phase), []).append(figures)
        return figures

    def side(self, name: str, phase: str, key: str, seconds: float) -> Any:
        return lambda: self.phase(name, phase, seconds)[key]

    def sent(self, name: str) -> int:
        return sum(c.seq for c in self.groups[name])

    def close(self) -> None:
        for clients in self.groups.values():
            gone = asyncio.gather(*(c.sio.disconnect() for c in clients), return_exceptions=True)
            self.loop.run_until_complete(gone)
        self.loop.close()


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
    """Join tokens for the chat server; room, consultation and user for the bare ones."""
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
                token = mint_join_token(grant)
                auths.append(
                    {"token": token, "last_seen": 0, "room": str(cpub), "cid": cid, "uid": uid}
                )
    return auths


def stored_rows(app: Any, tag: str) -> int:
    from sqlalchemy import func, select

    from app.extensions import db
    from models import ChatMessage

    with app.app_context():
        query = select(func.count()).where(ChatMessage.client_msg_id.like(f"{tag}%"))
        return int(db.session.scalar(query))


# ---------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--serve", nargs="*")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--clients", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=10, help="per phase and round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if args.serve:
        name, *rest = args.serve
        if name == "chat":
            serve_chat(args.port, rest[0], os.environ["BENCH_SECRET"])
        else:
            serve_bare(args.port, rest[0] if rest else None)
        return 0

    from bench.common import create_bench_app, fresh_database_url, machine_load
    from bench.fair import compare, print_summary

    rooms_n = max(1, args.clients // 2)
    with fresh_database_url() as url, tempfile.TemporaryDirectory() as storage:
        backend = "PostgreSQL" if url.startswith("postgresql") else "SQLite"
        app = create_bench_app(url, storage)
        plan = [("chat", ["chat", url]), ("bare", ["bare", url]), ("echo", ["echo"])]
        against, p99_target, throughput_target = "bare", 1 / P99_TARGET, THROUGHPUT_TARGET
        names = [name for name, _ in plan]
        print(
            f"bench_chat: {backend}, {rooms_n * 2} clients in {rooms_n} rooms, chat against "
            f"{against}, {args.rounds} rounds of {args.seconds:g} s per phase; {machine_load()}"
        )
        rooms = load_rooms(app, rooms_n)
        auths = mint_auths(app, rooms)  # valid 300 s: every server connects well within that
        os.environ["BENCH_SECRET"] = str(app.config["SECRET_KEY"])  # the chat server's key
        procs: dict[str, subprocess.Popen] = {}
        servers: dict[str, tuple[str, int]] = {}
        bench = None
        try:
            for name, serve_args in plan:
                port = free_port()
                procs[name] = start_server(serve_args, port)
                servers[name] = (f"http://127.0.0.1:{port}", procs[name].pid)
            bench = Bench(servers, auths)
            # The harness's own collector pauses are not the servers' latency.
            freeze_collector()
            for name in names:
                bench.phase(name, "warm-up", 2)
            s = args.seconds
            comparisons = [
                compare(
                    f"chat paced p99 (ratio {against}/chat)",
                    bench.side("chat", "paced", "p99_ms", s),
                    bench.side(against, "paced", "p99_ms", s),
                    unit="ms",
                    target=p99_target,
                    higher_is_better=False,
                    rounds=args.rounds,
                ),
                compare(
                    f"chat saturated throughput (ratio chat/{against})",
                    bench.side("chat", "saturated", "per_second", s),
                    bench.side(against, "saturated", "per_second", s),
                    unit="msg/s",
                    target=throughput_target,
                    higher_is_better=True,
                    rounds=args.rounds,
                ),
            ]
            for phase in ("paced", "saturated"):  # information only
                if "echo" in names:
                    bench.phase("echo", phase, s)
            sent = {name: bench.sent(name) for name in ("chat", against)}
        finally:
            if bench:
                bench.close()
            for proc in procs.values():
                stop_server(proc)
        stored = {name: stored_rows(app, name) for name in ("chat", against)}

    print(
        f"\n  {'phase':<10} {'server':<7} {'msg/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'CPU ms/msg':>11}"
    )
    for phase in ("paced", "saturated"):
        for name in names:
            runs = bench.figures[(name, phase)]
            med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            print(
                f"  {phase:<10} {name:<7} {med['per_second']:>8.0f} {med['p50_ms']:>8.1f} "
                f"{med['p99_ms']:>8.1f} {med['cpu_ms_per_msg']:>11.2f}"
            )
    print("  (medians over the rounds; echo: one round, stores nothing, information only)")
    for name in ("chat", against):  # every send waited for its own broadcast: one row each
        check = "ok" if stored[name] == sent[name] else "MISMATCH"
        print(f"  {name}: messages acked {sent[name]}, rows stored {stored[name]} ({check})")
    print(f"  at the end: {machine_load()}")
    print(
        f"  targets: paced p99 ≤ {P99_TARGET}× bare's (ratio ≥ {1 / P99_TARGET:.2f}), "
        f"throughput ≥ {THROUGHPUT_TARGET}× bare's"
    )
    status = print_summary(comparisons)
    return status or int(any(stored[n] != sent[n] for n in stored))


if __name__ == "__main__":
    sys.exit(main())
