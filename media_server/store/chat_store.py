"""ChatStore: the media server's database access, all of it through one SQLAlchemy asyncio
engine (asyncpg on PostgreSQL, aiosqlite on SQLite) awaited on the event loop."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy import Connection, and_, event, func, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from config import sqlite_pragmas
from media_server.store.messages import (
    HISTORY_LIMIT,
    ConsultationInfo,
    SendItem,
    SendResult,
    message_dict,
)
from media_server.store.rounds import missing_keys, store_rounds
from media_server.store.statements import insert_params, pg_insert, sqlite_insert
from models import ChatMessage, ChatRead, Consultation, Doctor, OblakoUser, Patient

T = TypeVar("T")
P = ParamSpec("P")

_msg = ChatMessage.__table__
_read = ChatRead.__table__
_cons = Consultation.__table__
_user = OblakoUser.__table__
_patient = Patient.__table__
_doctor = Doctor.__table__


def async_url(url: str | URL) -> URL:
    """The service's database URL with its asyncio driver (the web app's is psycopg/sqlite3)."""
    parsed = make_url(url)
    drivers = {"postgresql": "postgresql+asyncpg", "sqlite": "sqlite+aiosqlite"}
    return parsed.set(drivername=drivers[parsed.get_backend_name()])


def _on_sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
    # WAL, synchronous=NORMAL, the log's size limit and the lock wait: the web app's settings.
    sqlite_pragmas(dbapi_conn.cursor())


class ChatStore:
    """Who a consultation's chat belongs to, its history, its read marks and the insert of
    its messages (ChatWriter groups them). Every call checks a connection out of the engine's
    pool on the event loop; `run` gives sync code (sessions.py, guest_chat.py) a connection."""

    def __init__(self, url: str | URL, *, pool_size: int = 8) -> None:
        target = async_url(url)
        self.dialect = target.get_backend_name()
        if self.dialect == "sqlite":
            self.engine: AsyncEngine = create_async_engine(target)
            event.listen(self.engine.sync_engine, "connect", _on_sqlite_connect)
            self._insert = sqlite_insert()
            self._writes = self.engine  # BEGIN (by the driver at the INSERT) … COMMIT
        else:
            # No pre-ping: one more round trip per message. A connection that went stale
            # (PostgreSQL restarted) fails one batch, the pool drops it, the page resends.
            self.engine = create_async_engine(
                target, pool_size=pool_size, max_overflow=4, pool_recycle=3600
            )
            self._insert = pg_insert()
            # The insert is one statement: autocommit makes it its own transaction, without
            # the round trips of BEGIN and COMMIT.
            self._writes = self.engine.execution_options(isolation_level="AUTOCOMMIT")

    async def aclose(self) -> None:
        await self.engine.dispose()

    async def run(
        self, fn: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """fn(connection, *args) with a sync Connection of this engine (SQLAlchemy's
        run_sync: it runs on the loop, each statement awaited underneath). fn commits what
        it writes (`with conn.begin()`)."""
        async with self.engine.connect() as conn:
            return await conn.run_sync(fn, *args, **kwargs)

    # --- reads -----------------------------------------------------------------------------

    async def consultation(self, consultation_id: int) -> ConsultationInfo | None:
        return await self.run(consultation, consultation_id)

    # --- writes ----------------------------------------------------------------------------

    async def send(self, item: SendItem) -> SendResult:
        return (await self.send_batch([item]))[0]

    async def send_batch(self, items: list[SendItem]) -> list[SendResult]:
        """Store messages once per (author, client_msg_id) and return after the commit: one
        statement per round (statements.py), which also re-reads each consultation's status —
        the database, not the token, says whether chat is open. One transaction for many
        messages is ChatWriter's group commit."""
        results: list[SendResult | None] = [None] * len(items)
        now = datetime.now(UTC)
        async with self._writes.begin() as conn:
            rounds = store_rounds(items, results, now)
            try:
                firsts = next(rounds)
                while True:
                    params = insert_params(conn.dialect, firsts, now)
                    stored = (await conn.execute(self._insert, params)).all()
                    firsts = rounds.send(stored)
            except StopIteration:
                pass
            keys = missing_keys(items, results)
            existing = await conn.run_sync(_existing, keys) if keys else {}
        return _results(items, results, existing)

    async def mark_read(self, *, user_id: int, consultation_id: int, up_to: int) -> int:
        """Move the user's read mark forward (never back); returns the stored mark."""
        async with self.engine.begin() as conn:
            return await conn.run_sync(_mark_read, user_id, consultation_id, up_to)


# --- sync parts, run on a store connection (ChatStore.run or run_sync) -----------------------


def consultation(conn: Connection, consultation_id: int) -> ConsultationInfo | None:
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
    row = conn.execute(stmt).first()
    return ConsultationInfo(*row) if row else None


def user_name(conn: Connection, user_id: int) -> str:
    stmt = select(_user.c.first_name, _user.c.last_name).where(_user.c.id == user_id)
    row = conn.execute(stmt).first()
    return " ".join(p for p in (row or ()) if p)


def join_state(
    conn: Connection, consultation_id: int, user_id: int | None, after_id: int
) -> tuple[ConsultationInfo, str, list[dict[str, Any]]] | None:
    """What a connect needs: the consultation, the author's account name and the chat
    history after `after_id`. None when the consultation does not exist."""
    info = consultation(conn, consultation_id)
    if info is None:
        return None
    name = user_name(conn, user_id) if user_id is not None else ""
    return info, name, history(conn, info, after_id)


def history(conn: Connection, info: ConsultationInfo, after_id: int) -> list[dict[str, Any]]:
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


def _existing(conn: Connection, keys: set[tuple[int, str]]) -> dict[tuple[int, str], Any]:
    """The stored rows of these (author, client id) keys, by key."""
    stmt = select(
        _msg.c.id,
        _msg.c.consultation_id,
        _msg.c.author_id,
        _msg.c.client_msg_id,
        _msg.c.body,
        _msg.c.created_at,
    ).where(or_(*(and_(_msg.c.author_id == a, _msg.c.client_msg_id == c) for a, c in sorted(keys))))
    return {(r.author_id, r.client_msg_id): r for r in conn.execute(stmt)}


def _results(
    items: list[SendItem],
    results: list[SendResult | None],
    existing: dict[tuple[int, str], Any],
) -> list[SendResult]:
    """Fill in the messages no round stored: a resend, a reused id, or a closed chat."""
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


def _mark_read(conn: Connection, user_id: int, consultation_id: int, up_to: int) -> int:
    # Never beyond the newest message of this consultation: the cabinet counts from it. One
    # write statement first, so SQLite takes its write lock before it reads anything.
    newest = select(func.coalesce(func.max(_msg.c.id), 0)).where(
        _msg.c.consultation_id == consultation_id
    )
    if conn.dialect.name == "postgresql":
        ins, mark = postgresql.insert(_read), func.least(up_to, newest.scalar_subquery())
    else:
        ins, mark = sqlite.insert(_read), func.min(up_to, newest.scalar_subquery())
    now = datetime.now(UTC)
    stmt = ins.values(
        user_id=user_id, consultation_id=consultation_id, last_read_id=mark, updated_at=now
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["user_id", "consultation_id"],
        set_={"last_read_id": stmt.excluded.last_read_id, "updated_at": now},
        where=_read.c.last_read_id < stmt.excluded.last_read_id,
    )
    conn.execute(stmt)
    stored = conn.execute(
        select(_read.c.last_read_id).where(
            _read.c.user_id == user_id, _read.c.consultation_id == consultation_id
        )
    ).scalar()
    return int(stored or 0)
