"""ChatStore: the media server's reads (consultation, names, history, read marks) through a
sync SQLAlchemy engine in a thread pool of its own, and the chat insert on the event loop
(postgres.py, sqlite.py) or, when the loop must not wait, in that pool."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, and_, create_engine, event, func, or_, select
from sqlalchemy.dialects import postgresql, sqlite

from config import sqlite_connect_args
from media_server.store.checkpoints import CHECKPOINT_BACKSTOP_PAGES, SQLiteCheckpoints
from media_server.store.messages import (
    HISTORY_LIMIT,
    ConsultationInfo,
    SendItem,
    SendResult,
    message_dict,
)
from media_server.store.postgres import PgSend, pg_params, pg_send_statement
from media_server.store.rounds import missing_keys, one_round, run_rounds, store_rounds
from media_server.store.sqlite import (
    Busy,
    SQLiteLoopWriter,
    SQLiteSend,
    commits_leave_checkpoints,
    insert_batch,
)
from models import ChatMessage, ChatRead, Consultation, Doctor, OblakoUser, Patient

T = TypeVar("T")

_msg = ChatMessage.__table__
_read = ChatRead.__table__
_cons = Consultation.__table__
_user = OblakoUser.__table__
_patient = Patient.__table__
_doctor = Doctor.__table__


def _engine_options(url: str) -> dict[str, Any]:
    if url.startswith("sqlite"):
        # The service's SQLite connection (WAL, synchronous=NORMAL, lock timeout: config.py),
        # used from the executor's threads.
        return {"connect_args": {**sqlite_connect_args(), "check_same_thread": False}}
    # No pre-ping: it is one more round trip per message. A connection that went stale
    # (PostgreSQL restarted) fails one batch, SQLAlchemy drops the pool, the page resends.
    return {"pool_size": 8, "max_overflow": 4, "pool_recycle": 3600}


class ChatStore(SQLiteCheckpoints):
    """The chat's database access for the media server (the package's docstring says how)."""

    def __init__(self, url: str, *, workers: int = 8) -> None:
        self.engine: Engine = create_engine(url, **_engine_options(url))
        self.dialect = self.engine.dialect.name
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="media-db")
        # The send path's statements, built once: per transaction SQLAlchemy then only looks
        # up the compiled form (building them again cost a third of its CPU).
        if self.dialect == "postgresql":
            self._pg_send_q = pg_send_statement()
            self._pg_send = PgSend(self._pg_send_q, self.engine.url)
        if self.dialect == "sqlite":
            self._sqlite_send = SQLiteSend(self.engine.dialect)
            self._loop_writer = SQLiteLoopWriter(self.engine)
            self._log_frames = 0  # the log's length at the last checkpoint
            event.listen(self.engine, "connect", commits_leave_checkpoints)
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
            if self._log_frames < CHECKPOINT_BACKSTOP_PAGES and one_round(items):
                try:
                    return await self._send_sqlite_on_loop(items)
                except Busy:
                    pass
            return await self.run(self.send_batch, items)
        results: list[SendResult | None] = [None] * len(items)
        now = datetime.now(UTC)
        rounds = store_rounds(items, results, now)
        try:
            firsts = next(rounds)
            while True:
                firsts = rounds.send(await self._pg_send.execute(pg_params(firsts, now)))
        except StopIteration:
            pass
        return await self._results_async(items, results)

    async def _send_sqlite_on_loop(self, items: list[SendItem]) -> list[SendResult]:
        results: list[SendResult | None] = [None] * len(items)
        now = datetime.now(UTC)
        try:
            insert_batch(
                self._sqlite_send,
                self._loop_writer.cursor(),
                items,
                results,
                now,
                lock_wait=False,
            )
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
        keys = missing_keys(items, results)
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
        keys = missing_keys(items, results)
        return results, self._existing(conn, keys) if keys else {}

    def _store_pg(
        self, conn: Connection, items: list[SendItem], results: list[Any], now: datetime
    ) -> None:
        run_rounds(
            store_rounds(items, results, now),
            lambda firsts: conn.execute(self._pg_send_q, pg_params(firsts, now)).all(),
        )

    def _store_sqlite(
        self, conn: Connection, items: list[SendItem], results: list[Any], now: datetime
    ) -> None:
        cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        insert_batch(self._sqlite_send, cur, items, results, now, lock_wait=True)

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
