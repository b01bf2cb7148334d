"""PostgreSQL's chat insert: a whole batch in one statement, awaited on asyncpg connections
on the event loop (`PgSend`), or run on a SQLAlchemy connection from a thread."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import asyncpg
from sqlalchemy import (
    JSON,
    Integer,
    String,
    Text,
    Uuid,
    any_,
    bindparam,
    cast,
    column,
    func,
    select,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import asyncpg as pg_asyncpg

from media_server.store.messages import SendItem
from media_server.store.rounds import NEW_ROW
from models import ChatMessage, Consultation, uuid7

_msg = ChatMessage.__table__
_cons = Consultation.__table__


def pg_send_statement():
    """PostgreSQL: a whole batch in ONE statement, run in autocommit — one round trip and its
    commit instead of BEGIN, status SELECT, INSERT and COMMIT (four, each one more GIL wait).

    The rows come as one JSON parameter (json_to_recordset), so the statement is one compiled
    form whatever the batch size, and the driver dumps one string (six arrays of Python
    objects cost the loop ≈ 0.2 ms a batch). Only rows of consultations whose chat is open go
    in; FOR SHARE on those consultation rows (in id order: no deadlocks) makes a concurrent
    transition (complete, cancel) wait for the insert, or the insert see it."""
    open_cons = (
        select(_cons.c.id)
        .where(_cons.c.id == any_(bindparam("cids", type_=ARRAY(Integer))), Consultation.chat_open)
        .order_by(_cons.c.id)
        .with_for_update(read=True)
        .cte("open_consultation")
    )
    types = (Uuid, Integer, Integer, Text, String)
    new = (
        func.json_to_recordset(cast(bindparam("rows", type_=Text), JSON))
        .table_valued(*(column(n, t) for n, t in zip(NEW_ROW, types, strict=True)))
        .render_derived(name="new", with_types=True)
    )
    rows = select(
        *(new.c[n] for n in NEW_ROW), bindparam("now", type_=_msg.c.created_at.type)
    ).join(open_cons, open_cons.c.id == new.c.consultation_id)
    return (
        postgresql.insert(_msg)
        .from_select([*NEW_ROW, "created_at"], rows)
        .on_conflict_do_nothing(index_elements=["author_id", "client_msg_id"])
        .returning(_msg.c.id, _msg.c.author_id, _msg.c.client_msg_id)
    )


class PgSend:
    """PostgreSQL: the batch statement (`pg_send_statement`) on asyncpg connections, awaited
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


def pg_params(firsts: list[SendItem], now: datetime) -> dict[str, Any]:
    """pg_send_statement's parameters for a round: the rows as one JSON string."""
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
