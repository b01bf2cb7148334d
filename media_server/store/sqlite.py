"""SQLite's chat insert: a whole batch in one autocommit statement (`SQLiteSend`), called on
the event loop through a connection of its own (`SQLiteLoopWriter`) or on a pooled connection
from a thread when the loop must not wait for the file's write lock."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, func, select
from sqlalchemy.dialects import sqlite

from media_server.store.checkpoints import CHECKPOINT_BACKSTOP_PAGES
from media_server.store.messages import SendItem
from media_server.store.rounds import NEW_ROW, run_rounds, store_rounds
from models import ChatMessage, Consultation, uuid7

_msg = ChatMessage.__table__
_cons = Consultation.__table__


def commits_leave_checkpoints(dbapi_conn: Any, _record: Any) -> None:
    # Per connection, so only the media server's: the web app keeps SQLite's default (1,000).
    dbapi_conn.execute(f"PRAGMA wal_autocheckpoint={CHECKPOINT_BACKSTOP_PAGES}")


def begin_immediate(conn: Connection) -> Any:
    """SQLite: take the write lock now (pysqlite would begin only at the first INSERT), so the
    status read and the insert are one snapshot that a web-app transition (complete, cancel)
    either precedes or waits for. Returns the driver's cursor; commit stays with `conn`."""
    cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    cur.execute("BEGIN IMMEDIATE")
    return cur


class SQLiteSend:
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
        fields = [func.json_extract(new.c.value, f"$[{i}]") for i in range(len(NEW_ROW) + 1)]
        rows = (
            select(*fields)
            .select_from(new.join(_cons, _cons.c.id == fields[1]))
            .where(Consultation.chat_open)
            .order_by(new.c.key)  # ids in the batch's order
        )
        insert = (
            sqlite.insert(_msg)
            .from_select([*NEW_ROW, "created_at"], rows)
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


class Busy(Exception):
    """SQLite: another connection holds the write lock; nothing of the batch was written."""


class SQLiteLoopWriter:
    """SQLite: the chat insert called on the event loop. In a thread, each of its steps gave
    the GIL back and waited for it while the loop ran, and the result waited for the loop's
    next turn: a batch took 20 ms as the loop saw it in bench_chat's saturated phase (p50; p99
    70 ms) for ≈ 1 ms of SQLite's own work — 1.5–1.9 ms on the loop (p99 6–7 ms).

    Its own connection, out of the pool: autocommit (the statement is the transaction), no
    lock wait (busy_timeout 0: `Busy`, the caller sends that batch through a thread, which
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


def insert_batch(
    q: SQLiteSend,
    cur: Any,
    items: list[SendItem],
    results: list[Any],
    now: datetime,
    *,
    lock_wait: bool,
) -> None:
    """The batch's rounds on this cursor (in autocommit). Without `lock_wait`, a write
    lock held elsewhere raises `Busy` — before anything of the batch was written, as
    only a one-round batch is sent that way."""
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
            raise Busy from exc
        if cur.rowcount <= 0:  # lastrowid would be an earlier statement's
            return []
        last = cur.lastrowid
        span = {"first": last - cur.rowcount + 1, "last": last}
        (stored,) = cur.execute(q.stored_sql, span).fetchone()
        return json.loads(stored)

    run_rounds(store_rounds(items, results, now), insert)
