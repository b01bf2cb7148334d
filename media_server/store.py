"""The media server's database access: a sync SQLAlchemy engine used from a thread pool, and
for the chat insert asyncpg connections (PostgreSQL) or a SQLite connection of the event
loop's own.

The event loop never waits on the database: reads go through `ChatStore.run`, which hands
the work to a small executor of its own (sized to the connection pool, so threads never queue
on the pool). The chat insert stays on the loop, with no thread hop and no thread taking the
GIL from the loop between its steps: on PostgreSQL one statement awaited on an asyncpg
connection (`_PgSend`); on SQLite one statement called on the loop (`_SQLiteLoopWriter`) — it
appends to the write-ahead log in the page cache (no fsync: WAL with synchronous=NORMAL) and
never waits for the file's lock: when another connection holds it (the web app, a guest's
insert), that batch goes to a thread that waits.
Only models.py tables are used, through SQLAlchemy Core: the web app's ORM session, Flask and
`app/` stay out of this process (DESIGN §1). SQLAlchemy's asyncio engine for the same insert
was measured and not kept: its greenlet layer cost the loop more CPU than the hop to a thread
(bench/README.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Callable, Generator, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import asyncpg
from sqlalchemy import (
    JSON,
    ColumnElement,
    Connection,
    Engine,
    Integer,
    String,
    Text,
    Uuid,
    and_,
    any_,
    bindparam,
    cast,
    column,
    create_engine,
    event,
    func,
    or_,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import asyncpg as pg_asyncpg

from config import sqlite_connect_args
from models import (
    ChatMessage,
    ChatRead,
    Consultation,
    ConsultationKind,
    ConsultationStatus,
    Doctor,
    OblakoUser,
    Patient,
    uuid7,
)

T = TypeVar("T")

log = logging.getLogger("media_server")

# SQLite: the media server's commits leave the write-ahead log's checkpoints (copying it back
# into the database file, two fsyncs) to a thread of their own, once a second; a commit does
# one itself only when the log has grown to the backstop (the checkpointer fell behind).
CHECKPOINT_SECONDS = 1.0
CHECKPOINT_RESET_PAGES = 4_000  # ≈ 16 MB of log: finish a checkpoint between two batches
CHECKPOINT_BACKSTOP_PAGES = 10_000
# Passes beside the writer before it waits for the last one, while a pass takes this long.
CHECKPOINT_CATCH_UP_PASSES = 3
CHECKPOINT_CATCH_UP_SECONDS = 0.002

HISTORY_LIMIT = 500

_msg = ChatMessage.__table__
_read = ChatRead.__table__
_cons = Consultation.__table__
_user = OblakoUser.__table__
_patient = Patient.__table__
_doctor = Doctor.__table__


def chat_allowed(kind: str, status: str) -> bool:
    """The contract's rule: a duty booking chats from `scheduled` (the patient may write to the
    duty doctor before the call); every kind chats while `in_progress`; nothing else."""
    if status == ConsultationStatus.IN_PROGRESS:
        return True
    return kind == ConsultationKind.DUTY and status == ConsultationStatus.SCHEDULED


def chat_allowed_sql() -> ColumnElement[bool]:
    """chat_allowed() as a condition on the consultation row (the same rule, kept beside it)."""
    return or_(
        _cons.c.status == ConsultationStatus.IN_PROGRESS.value,
        and_(
            _cons.c.kind == ConsultationKind.DUTY.value,
            _cons.c.status == ConsultationStatus.SCHEDULED.value,
        ),
    )


_NEW_ROW = ("public_id", "consultation_id", "author_id", "body", "client_msg_id")


def _pg_send_statement():
    """PostgreSQL: a whole batch in ONE statement, run in autocommit — one round trip and its
    commit instead of BEGIN, status SELECT, INSERT and COMMIT (four, each one more GIL wait).

    The rows come as one JSON parameter (json_to_recordset), so the statement is one compiled
    form whatever the batch size, and the driver dumps one string (six arrays of Python
    objects cost the loop ≈ 0.2 ms a batch). Only rows of consultations whose chat is open go
    in; FOR SHARE on those consultation rows (in id order: no deadlocks) makes a concurrent
    transition (complete, cancel) wait for the insert, or the insert see it."""
    open_cons = (
        select(_cons.c.id)
        .where(_cons.c.id == any_(bindparam("cids", type_=ARRAY(Integer))), chat_allowed_sql())
        .order_by(_cons.c.id)
        .with_for_update(read=True)
        .cte("open_consultation")
    )
    types = (Uuid, Integer, Integer, Text, String)
    new = (
        func.json_to_recordset(cast(bindparam("rows", type_=Text), JSON))
        .table_valued(*(column(n, t) for n, t in zip(_NEW_ROW, types, strict=True)))
        .render_derived(name="new", with_types=True)
    )
    rows = select(
        *(new.c[n] for n in _NEW_ROW), bindparam("now", type_=_msg.c.created_at.type)
    ).join(open_cons, open_cons.c.id == new.c.consultation_id)
    return (
        postgresql.insert(_msg)
        .from_select([*_NEW_ROW, "created_at"], rows)
        .on_conflict_do_nothing(index_elements=["author_id", "client_msg_id"])
        .returning(_msg.c.id, _msg.c.author_id, _msg.c.client_msg_id)
    )


def _commits_leave_checkpoints(dbapi_conn: Any, _record: Any) -> None:
    # Per connection, so only the media server's: the web app keeps SQLite's default (1,000).
    dbapi_conn.execute(f"PRAGMA wal_autocheckpoint={CHECKPOINT_BACKSTOP_PAGES}")


def begin_immediate(conn: Connection) -> Any:
    """SQLite: take the write lock now (pysqlite would begin only at the first INSERT), so the
    status read and the insert are one snapshot that a web-app transition (complete, cancel)
    either precedes or waits for. Returns the driver's cursor; commit stays with `conn`."""
    cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    cur.execute("BEGIN IMMEDIATE")
    return cur


class _SQLiteSend:
    """SQLite: a batch is ONE statement in autocommit, whatever its size, then one read of
    the new rows. The INSERT … SELECT takes the write lock when it starts (a write statement
    begins a write transaction, as BEGIN IMMEDIATE), so its status rule and its rows are one
    snapshot that a web-app transition (complete, cancel) either precedes or waits for; it
    commits when it ends. Each driver step gives the GIL back and waits for it while the loop
    runs: BEGIN, a max(id) read, the INSERT, the read and COMMIT were five such waits, now two.

    As on PostgreSQL, the rows come as one parameter (a JSON array read by json_each), only
    those of consultations whose chat is open go in, and the new rows come back as one JSON
    array. Under the write lock SQLite gives a statement's new rows the ids after the largest
    one, one by one: they are the `rowcount` ids ending at `lastrowid` (both free, from the
    driver). Compiled once from the Core tables; the column types' own bind processors give
    the stored forms (SQLAlchemy's execution around each statement was ≈ 2/3 of the CPU)."""

    def __init__(self, dialect: Any) -> None:
        named = sqlite.dialect(paramstyle="named")  # the driver takes named parameters
        new = func.json_each(bindparam("rows")).table_valued("key", "value").alias("new")
        fields = [func.json_extract(new.c.value, f"$[{i}]") for i in range(len(_NEW_ROW) + 1)]
        rows = (
            select(*fields)
            .select_from(new.join(_cons, _cons.c.id == fields[1]))
            .where(chat_allowed_sql())
            .order_by(new.c.key)  # ids in the batch's order
        )
        insert = (
            sqlite.insert(_msg)
            .from_select([*_NEW_ROW, "created_at"], rows)
            # A row that already exists (a resend) is skipped: the caller looks it up.
            .on_conflict_do_nothing(index_elements=["author_id", "client_msg_id"])
            .compile(dialect=named)
        )
        self.insert_sql = str(insert)
        # The JSON paths and the status names, bound in the statement itself.
        self.insert_constants = {k: v for k, v in insert.params.items() if k != "rows"}
        stored = select(
            func.json_group_array(
                func.json_array(_msg.c.id, _msg.c.author_id, _msg.c.client_msg_id)
            )
        ).where(_msg.c.id.between(bindparam("first"), bindparam("last")))
        self.stored_sql = str(stored.compile(dialect=named))

        def stored_form(column: Any) -> Callable[[Any], Any]:
            # What SQLAlchemy itself binds for this column on this dialect (the decorator's
            # UTC rule, then SQLite's text forms); a type without a processor binds as it is.
            processor = column.type.dialect_impl(dialect).bind_processor(dialect)
            return processor or (lambda value: value)

        self.public_id = stored_form(_msg.c.public_id)
        self.created_at = stored_form(_msg.c.created_at)


class _Busy(Exception):
    """SQLite: another connection holds the write lock; nothing of the batch was written."""


class _SQLiteLoopWriter:
    """SQLite: the chat insert called on the event loop. In a thread, each of its steps gave
    the GIL back and waited for it while the loop ran, and the result waited for the loop's
    next turn: a batch took 20 ms as the loop saw it in bench_chat's saturated phase (p50; p99
    70 ms) for ≈ 1 ms of SQLite's own work — 1.5–1.9 ms on the loop (p99 6–7 ms).

    Its own connection, out of the pool: autocommit (the statement is the transaction), no
    lock wait (busy_timeout 0: `_Busy`, the caller sends that batch through a thread, which
    waits) and no checkpoint in a commit (wal_autocheckpoint 0: the checkpointer's thread
    does them; past the backstop the caller uses the threads, whose commits checkpoint)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._proxy: Any = None
        self._driver: Any = None

    def cursor(self) -> sqlite3.Cursor:
        if self._proxy is None:
            proxy = self._engine.raw_connection()
            self._driver = proxy.driver_connection
            proxy.detach()  # never back into the pool with these settings; closed with it
            self._driver.isolation_level = None
            self._driver.execute("PRAGMA busy_timeout=0")
            self._driver.execute("PRAGMA wal_autocheckpoint=0")
            self._proxy = proxy
        return self._driver.cursor()

    def close(self) -> None:
        if self._proxy is not None:
            self._proxy.close()
            self._proxy = self._driver = None


class _PgSend:
    """PostgreSQL: the batch statement (`_pg_send_statement`) on asyncpg connections, awaited
    on the loop, one connection per transaction in flight (ChatWriter runs at most `inflight`
    of them). asyncpg rather than psycopg's asyncio connection: a protocol fed by the loop,
    not a reader added and removed per wait, and a statement prepared once per connection (a
    lone transaction on a quiet loop: p50 0.67 → 0.30 ms, this process's CPU 0.31 → 0.11 ms;
    bench/README.md). A connection that fails (PostgreSQL restarted, the network) or a
    cancelled batch is dropped and that batch fails; the next batch opens a new one and the
    page resends."""

    def __init__(self, statement: Any, url: Any) -> None:
        compiled = statement.compile(dialect=pg_asyncpg.dialect())
        self.sql = str(compiled)
        self.order = tuple(compiled.positiontup or ())
        self.constants = {k: v for k, v in compiled.params.items() if v is not None}
        self._dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._free: list[asyncpg.Connection] = []

    async def execute(self, params: dict[str, Any]) -> list[tuple[int, int, str]]:
        conn = self._free.pop() if self._free else None
        if conn is None or conn.is_closed():
            conn = await asyncpg.connect(self._dsn, timeout=10)
        values = {**self.constants, **params}
        done = False
        try:
            rows = await conn.fetch(self.sql, *(values[k] for k in self.order))
            done = True
        finally:
            if done:
                self._free.append(conn)
            else:  # failed or cancelled half-way: its state is unknown
                conn.terminate()
        return rows  # type: ignore[return-value]

    async def close(self) -> None:
        while self._free:
            await self._free.pop().close()


def _one_round(items: list[SendItem]) -> bool:
    """No (author, client id) twice: the batch's insert is a single statement."""
    return len({(it.author_id, it.client_msg_id) for it in items}) == len(items)


def _missing_keys(items: list[SendItem], results: list[Any]) -> set[tuple[int, str]]:
    """(author, client id) of the messages no round stored: a resend, a conflict or closed."""
    return {(it.author_id, it.client_msg_id) for it, r in zip(items, results, strict=True) if not r}


def _store_rounds(
    items: list[SendItem], results: list[Any], now: datetime
) -> Generator[list[SendItem], Iterable[tuple[int, int, str]], None]:
    """The rounds of a batch's insert, for a sync or an async caller: yields the messages to
    insert and receives (id, author, client id) of those that went in. One row per (author,
    client id): the first of each goes in; if its chat was closed, a later one with the same
    key (another consultation) gets its own round. Fills `results` with the stored ones."""
    pending = list(range(len(items)))
    while pending:
        first_of: dict[tuple[int, str], int] = {}
        for i in pending:
            first_of.setdefault((items[i].author_id, items[i].client_msg_id), i)
        stored: set[tuple[int, str]] = set()
        for new_id, author_id, client_msg_id in (yield [items[i] for i in first_of.values()]):
            i = first_of[(author_id, client_msg_id)]
            results[i] = SendResult("stored", items[i].message(new_id, items[i].body, now))
            stored.add((author_id, client_msg_id))
        pending = [
            i
            for i in pending
            if (key := (items[i].author_id, items[i].client_msg_id)) not in stored
            and first_of[key] != i
        ]


def _run_rounds(
    rounds: Generator[list[SendItem], Iterable[tuple[int, int, str]], None],
    insert: Callable[[list[SendItem]], Iterable[tuple[int, int, str]]],
) -> None:
    """_store_rounds for a sync caller: `insert` stores a round's messages and names the new
    rows (the async caller, send_batch_async, awaits its insert in the same loop)."""
    try:
        firsts = next(rounds)
        while True:
            firsts = rounds.send(insert(firsts))
    except StopIteration:
        pass


@dataclass(frozen=True)
class ConsultationInfo:
    id: int
    public_id: uuid.UUID
    kind: str
    status: str
    patient_user_id: int | None
    doctor_user_id: int | None


@dataclass(frozen=True)
class SendItem:
    info: ConsultationInfo
    author_id: int
    author_name: str
    client_msg_id: str
    body: str

    def message(self, id_: int, body: str, created_at: datetime) -> dict[str, Any]:
        return message_dict(
            self.info,
            id=id_,
            client_msg_id=self.client_msg_id,
            author_id=self.author_id,
            author_name=self.author_name,
            body=body,
            created_at=created_at,
        )


@dataclass(frozen=True)
class SendResult:
    # "stored" (a new row) | "duplicate" (a resend of a stored one) | "closed" | "conflict"
    outcome: str
    message: dict[str, Any] | None = None


def _iso(value: datetime) -> str:
    if value.tzinfo is None:  # SQLite keeps no offset; every stored time is UTC (models.py)
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _engine_options(url: str) -> dict[str, Any]:
    if url.startswith("sqlite"):
        # The service's SQLite connection (WAL, synchronous=NORMAL, lock timeout: config.py),
        # used from the executor's threads.
        return {"connect_args": {**sqlite_connect_args(), "check_same_thread": False}}
    # No pre-ping: it is one more round trip per message. A connection that went stale
    # (PostgreSQL restarted) fails one batch, SQLAlchemy drops the pool, the page resends.
    return {"pool_size": 8, "max_overflow": 4, "pool_recycle": 3600}


class ChatStore:
    def __init__(self, url: str, *, workers: int = 8) -> None:
        self.engine: Engine = create_engine(url, **_engine_options(url))
        self.dialect = self.engine.dialect.name
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="media-db")
        # The send path's statements, built once: per transaction SQLAlchemy then only looks
        # up the compiled form (building them again cost a third of its CPU).
        if self.dialect == "postgresql":
            self._pg_send_q = _pg_send_statement()
            self._pg_send = _PgSend(self._pg_send_q, self.engine.url)
        if self.dialect == "sqlite":
            self._sqlite_send = _SQLiteSend(self.engine.dialect)
            self._loop_writer = _SQLiteLoopWriter(self.engine)
            self._log_frames = 0  # the log's length at the last checkpoint
            event.listen(self.engine, "connect", _commits_leave_checkpoints)
            self._checkpointer = ThreadPoolExecutor(1, thread_name_prefix="media-db-checkpoint")

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        if self.dialect == "sqlite":
            self._checkpointer.shutdown(wait=True, cancel_futures=True)
            self._loop_writer.close()
        self.engine.dispose()

    def checkpoint(self) -> tuple[int, int, int]:
        """SQLite: copy what the log holds back into the database file, beside the writers
        (PASSIVE: nobody waits for it). Returns SQLite's (busy, log frames, checkpointed)."""
        with self.engine.connect() as conn:
            busy, frames, done = conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").one()
        self._log_frames = frames
        return busy, frames, done

    async def checkpoints(self, writer: ChatWriter) -> None:
        """SQLite: checkpoint once a second until cancelled (the media server's lifetime)."""
        while True:
            await asyncio.sleep(CHECKPOINT_SECONDS)
            try:
                await self.checkpoint_once(writer)
            except Exception:  # a locked or busy file: the next second tries again
                log.exception("SQLite checkpoint failed")

    async def checkpoint_once(self, writer: ChatWriter) -> None:
        """A checkpoint beside the writer. The log restarts from its beginning only when a
        checkpoint has copied all of it and the next transaction begins: under a steady flow
        of batches, frames are added while it copies, that moment never comes, and the log
        grew to the backstop, where a commit paid the whole checkpoint (bench_chat, saturated:
        stalls of 80–90 ms). Past the reset size, the writer waits between two batches for
        the rest, which is small by then."""
        loop = asyncio.get_running_loop()

        async def timed_pass() -> tuple[int, float]:
            started = time.perf_counter()
            _, frames, _ = await loop.run_in_executor(self._checkpointer, self.checkpoint)
            return frames, time.perf_counter() - started

        frames, took = await timed_pass()
        # Even a checkpoint that copied all it saw leaves the batches committed meanwhile:
        # a second's worth after the first pass, as much to copy (and fsync) again. Passes
        # beside the writer first, each copying what came during the one before, so that the
        # writer waits only for the last few pages (bench_chat: 16–35 ms → ≈ 1 ms).
        if frames >= CHECKPOINT_RESET_PAGES:
            for _ in range(CHECKPOINT_CATCH_UP_PASSES):
                if took < CHECKPOINT_CATCH_UP_SECONDS:
                    break
                _, took = await timed_pass()
            async with writer.paused():
                await timed_pass()

    async def aclose(self) -> None:
        if self.dialect == "postgresql":
            await self._pg_send.close()
        await asyncio.to_thread(self.close)

    # --- reads -----------------------------------------------------------------------------

    def consultation(self, consultation_id: int) -> ConsultationInfo | None:
        patient_user = select(_patient.c.user_id).where(_patient.c.id == _cons.c.patient_id)
        doctor_user = select(_doctor.c.user_id).where(_doctor.c.id == _cons.c.doctor_id)
        stmt = select(
            _cons.c.id,
            _cons.c.public_id,
            _cons.c.kind,
            _cons.c.status,
            patient_user.scalar_subquery().label("patient_user_id"),
            doctor_user.scalar_subquery().label("doctor_user_id"),
        ).where(_cons.c.id == consultation_id)
        with self.engine.connect() as conn:
            row = conn.execute(stmt).first()
        return ConsultationInfo(*row) if row else None

    def user_name(self, user_id: int) -> str:
        stmt = select(_user.c.first_name, _user.c.last_name).where(_user.c.id == user_id)
        with self.engine.connect() as conn:
            row = conn.execute(stmt).first()
        return " ".join(p for p in (row or ()) if p)

    def join(
        self, consultation_id: int, user_id: int | None, after_id: int
    ) -> tuple[ConsultationInfo, str, list[dict[str, Any]]] | None:
        """What a connect needs, in one call: the consultation, the author's account name and
        the chat history after `after_id`. None when the consultation does not exist."""
        info = self.consultation(consultation_id)
        if info is None:
            return None
        name = self.user_name(user_id) if user_id is not None else ""
        return info, name, self.history(info, after_id)

    def history(self, info: ConsultationInfo, after_id: int) -> list[dict[str, Any]]:
        """Messages with id > after_id, oldest first, at most HISTORY_LIMIT (the newest ones
        when more are missing: the page shows the latest, older ones stay in the web app)."""
        stmt = (
            select(
                _msg.c.id,
                _msg.c.client_msg_id,
                _msg.c.author_id,
                _msg.c.body,
                _msg.c.created_at,
                _user.c.first_name,
                _user.c.last_name,
            )
            .join(_user, _user.c.id == _msg.c.author_id)
            .where(_msg.c.consultation_id == info.id, _msg.c.id > after_id)
            .order_by(_msg.c.id.desc())
            .limit(HISTORY_LIMIT)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(stmt).all()
        return [
            message_dict(
                info,
                id=r.id,
                client_msg_id=r.client_msg_id,
                author_id=r.author_id,
                author_name=" ".join(p for p in (r.first_name, r.last_name) if p),
                body=r.body,
                created_at=r.created_at,
            )
            for r in reversed(rows)
        ]

    # --- writes ----------------------------------------------------------------------------

    def send(self, item: SendItem) -> SendResult:
        return self.send_batch([item])[0]

    def send_batch(self, items: list[SendItem]) -> list[SendResult]:
        """Store messages once per (author, client_msg_id), in one statement (its own
        transaction, on both databases) that also re-reads each consultation's status: the
        database, not the token, says whether chat is open. One transaction for many messages
        is the group commit of ChatWriter."""
        with self.engine.connect() as conn:
            if self.dialect == "postgresql":
                conn = conn.execution_options(isolation_level="AUTOCOMMIT")
                stored = self._store(conn, items)
            else:
                # The driver's own autocommit (no BEGIN, no COMMIT): SQLAlchemy's AUTOCOMMIT
                # would cost a PRAGMA at the checkout and another at the return.
                driver: Any = conn.connection.driver_connection
                level, driver.isolation_level = driver.isolation_level, None
                try:
                    stored = self._store(conn, items)
                finally:
                    driver.isolation_level = level
        return self._results(items, *stored)

    async def send_batch_async(self, items: list[SendItem]) -> list[SendResult]:
        """send_batch from the event loop; returns after the commit. The insert runs on the
        loop (a resend's stored row is looked up in a thread: rare). SQLite: in a thread
        instead when another connection holds the file's write lock, when the log has outgrown
        the backstop, or for a batch that takes more than one round (a repeated client id)."""
        if self.dialect != "postgresql":
            if self._log_frames < CHECKPOINT_BACKSTOP_PAGES and _one_round(items):
                try:
                    return await self._send_sqlite_on_loop(items)
                except _Busy:
                    pass
            return await self.run(self.send_batch, items)
        results: list[SendResult | None] = [None] * len(items)
        now = datetime.now(UTC)
        rounds = _store_rounds(items, results, now)
        try:
            firsts = next(rounds)
            while True:
                firsts = rounds.send(await self._pg_send.execute(self._pg_params(firsts, now)))
        except StopIteration:
            pass
        return await self._results_async(items, results)

    async def _send_sqlite_on_loop(self, items: list[SendItem]) -> list[SendResult]:
        results: list[SendResult | None] = [None] * len(items)
        now = datetime.now(UTC)
        try:
            self._insert_sqlite(self._loop_writer.cursor(), items, results, now, lock_wait=False)
        except sqlite3.Error:
            # The batch fails (the page resends it); the next one opens a new connection, as
            # PostgreSQL's does: a connection in an unknown state is not used again.
            self._loop_writer.close()
            raise
        return await self._results_async(items, results)

    async def _results_async(
        self, items: list[SendItem], results: list[SendResult | None]
    ) -> list[SendResult]:
        """_results after an insert on the loop: the rows it did not store are looked up in a
        thread, only when there are any (a resend, a conflict or a closed chat: rare)."""
        keys = _missing_keys(items, results)
        existing = await self.run(self._existing_rows, keys) if keys else {}
        return self._results(items, results, existing)

    def _existing_rows(self, keys: set[tuple[int, str]]) -> dict[tuple[int, str], Any]:
        with self.engine.connect() as conn:
            return self._existing(conn, keys)

    def _store(
        self, conn: Connection, items: list[SendItem]
    ) -> tuple[list[SendResult | None], dict[tuple[int, str], Any]]:
        """The batch's statements, each one committed on its own (the caller's connection is
        in autocommit). Returns the new rows' results (None where nothing was inserted) and
        the existing rows for those."""
        results: list[SendResult | None] = [None] * len(items)
        now = datetime.now(UTC)
        if self.dialect == "postgresql":
            self._store_pg(conn, items, results, now)
        else:
            self._store_sqlite(conn, items, results, now)
        keys = _missing_keys(items, results)
        return results, self._existing(conn, keys) if keys else {}

    def _store_pg(
        self, conn: Connection, items: list[SendItem], results: list[Any], now: datetime
    ) -> None:
        _run_rounds(
            _store_rounds(items, results, now),
            lambda firsts: conn.execute(self._pg_send_q, self._pg_params(firsts, now)).all(),
        )

    @staticmethod
    def _pg_params(firsts: list[SendItem], now: datetime) -> dict[str, Any]:
        rows = [
            {
                "public_id": str(uuid7()),
                "consultation_id": it.info.id,
                "author_id": it.author_id,
                "body": it.body,
                "client_msg_id": it.client_msg_id,
            }
            for it in firsts
        ]
        return {"cids": sorted({it.info.id for it in firsts}), "rows": json.dumps(rows), "now": now}

    def _store_sqlite(
        self, conn: Connection, items: list[SendItem], results: list[Any], now: datetime
    ) -> None:
        cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        self._insert_sqlite(cur, items, results, now, lock_wait=True)

    def _insert_sqlite(
        self, cur: Any, items: list[SendItem], results: list[Any], now: datetime, *, lock_wait: bool
    ) -> None:
        """The batch's rounds on this cursor (in autocommit). Without `lock_wait`, a write
        lock held elsewhere raises `_Busy` — before anything of the batch was written, as
        only a one-round batch is sent that way."""
        q = self._sqlite_send
        created_at = q.created_at(now)

        def insert(firsts: list[SendItem]) -> list[tuple[int, int, str]]:
            # Every statement returns one row at most: each step releases the GIL and waits
            # to take it back while the loop runs, so a row-per-step RETURNING of a batch of
            # 150 waited for the loop 150 times (≈ 1 ms each when it was busy).
            rows = [
                [q.public_id(uuid7()), it.info.id, it.author_id, it.body,
                 it.client_msg_id, created_at]
                for it in firsts
            ]  # fmt: skip
            try:
                cur.execute(q.insert_sql, {**q.insert_constants, "rows": json.dumps(rows)})
            except sqlite3.OperationalError as exc:
                if lock_wait or (exc.sqlite_errorcode & 0xFF) != sqlite3.SQLITE_BUSY:
                    raise
                raise _Busy from exc
            if cur.rowcount <= 0:  # lastrowid would be an earlier statement's
                return []
            last = cur.lastrowid
            span = {"first": last - cur.rowcount + 1, "last": last}
            (stored,) = cur.execute(q.stored_sql, span).fetchone()
            return json.loads(stored)

        _run_rounds(_store_rounds(items, results, now), insert)

    @staticmethod
    def _results(
        items: list[SendItem],
        results: list[SendResult | None],
        existing: dict[tuple[int, str], Any],
    ) -> list[SendResult]:
        for i, r in enumerate(results):
            if r is not None:
                continue
            it = items[i]
            row = existing.get((it.author_id, it.client_msg_id))
            if row is None:
                results[i] = SendResult("closed")
            elif row.consultation_id != it.info.id:
                results[i] = SendResult("conflict")  # the same client id in another consultation
            else:
                results[i] = SendResult("duplicate", it.message(row.id, row.body, row.created_at))
        return results  # type: ignore[return-value]

    @staticmethod
    def _existing(conn: Connection, keys: set[tuple[int, str]]) -> dict[tuple[int, str], Any]:
        """The stored rows of these (author, client id) keys, by key."""
        stmt = select(
            _msg.c.id,
            _msg.c.consultation_id,
            _msg.c.author_id,
            _msg.c.client_msg_id,
            _msg.c.body,
            _msg.c.created_at,
        ).where(
            or_(*(and_(_msg.c.author_id == a, _msg.c.client_msg_id == c) for a, c in sorted(keys)))
        )
        return {(r.author_id, r.client_msg_id): r for r in conn.execute(stmt)}

    def mark_read(self, *, user_id: int, consultation_id: int, up_to: int) -> int:
        """Move the user's read mark forward (never back); returns the stored mark."""
        with self.engine.begin() as conn:
            # Never beyond the newest message of this consultation: the cabinet counts from it.
            newest = conn.execute(
                select(func.max(_msg.c.id)).where(_msg.c.consultation_id == consultation_id)
            ).scalar()
            up_to = min(up_to, newest or 0)
            now = datetime.now(UTC)
            ins = postgresql.insert(_read) if self.dialect == "postgresql" else sqlite.insert(_read)
            stmt = ins.values(
                user_id=user_id, consultation_id=consultation_id, last_read_id=up_to, updated_at=now
            )
            stmt = stmt.on_conflict_do_update(
                index_elements=["user_id", "consultation_id"],
                set_={"last_read_id": up_to, "updated_at": now},
                where=and_(_read.c.last_read_id < up_to),
            )
            conn.execute(stmt)
            mark = conn.execute(
                select(_read.c.last_read_id).where(
                    _read.c.user_id == user_id, _read.c.consultation_id == consultation_id
                )
            ).scalar()
        return int(mark or 0)


class ChatWriter:
    """Group commit: while a transaction is in flight, new messages queue up and the next
    transaction stores all of them. A lone message goes at once (no added latency when quiet);
    under load the commit and the round trips are paid once per batch, not once per message.

    `inflight` transactions may run at once: 1 on SQLite (one writer at a time anyway), a few on
    PostgreSQL so a message never waits for a whole batch ahead of it. Order inside a room
    does not depend on this: the server sends a room's messages one at a time."""

    def __init__(self, store: ChatStore, *, max_batch: int = 256, inflight: int = 0) -> None:
        self.store = store
        self.max_batch = max_batch
        self.inflight = inflight or (4 if store.dialect == "postgresql" else 1)
        self._queue: list[tuple[SendItem, asyncio.Future[SendResult]]] = []
        self._tasks: set[asyncio.Task] = set()  # held: the loop keeps tasks weakly
        self._pauses = 0

    async def send(self, item: SendItem) -> SendResult:
        fut: asyncio.Future[SendResult] = asyncio.get_running_loop().create_future()
        self._queue.append((item, fut))
        self._kick()
        return await fut

    def _kick(self) -> None:
        if self._queue and not self._pauses and len(self._tasks) < self.inflight:
            task = asyncio.get_running_loop().create_task(self._drain())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    @contextlib.asynccontextmanager
    async def paused(self) -> AsyncIterator[None]:
        """No transaction of the writer runs inside: those in flight finish first, new
        messages queue and go in the first batch after."""
        self._pauses += 1
        try:
            while self._tasks:
                await asyncio.wait(set(self._tasks))
            yield
        finally:
            self._pauses -= 1
            self._kick()

    async def _drain(self) -> None:
        try:
            while self._queue and not self._pauses:
                batch = self._queue[: self.max_batch]
                del self._queue[: self.max_batch]
                try:
                    results = await self.store.send_batch_async([item for item, _ in batch])
                except Exception as exc:  # every waiter hears about it; the next batch retries
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc)
                    continue
                for (_, fut), result in zip(batch, results, strict=True):
                    if not fut.done():
                        fut.set_result(result)
        finally:
            # Leave the set in the same step as the last look at the queue: the done callback
            # runs a step later, and a send() in between saw a writer that would never drain
            # its message (it waited for the process's next message; in a quiet room, forever).
            self._tasks.discard(asyncio.current_task())  # type: ignore[arg-type]


def message_dict(
    info: ConsultationInfo,
    *,
    id: int,
    client_msg_id: str,
    author_id: int | None,
    author_name: str,
    body: str,
    created_at: datetime,
) -> dict[str, Any]:
    """The contract's Message. A guest has no account (its line is authored by the invite:
    guest_chat.py); of the accounts, anyone but the consultation's patient is staff."""
    if author_id is None:
        role = "guest"
    else:
        role = "patient" if author_id == info.patient_user_id else "doctor"
    return {
        "id": id,
        "client_msg_id": client_msg_id,
        "author_id": author_id,
        "author_name": author_name,
        "author_role": role,
        "body": body,
        "created_at": _iso(created_at),
    }
