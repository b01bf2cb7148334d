"""The chat insert as ONE SQLAlchemy Core statement per database, whatever the batch size: the
rows come as one JSON parameter, only those of consultations whose chat is open
(models.Consultation.chat_open) go in, a row whose (author, client id) exists is skipped, and
the new rows come back (RETURNING).

The status rule and the rows are one snapshot that a web-app transition (complete, cancel)
either precedes or waits for: on PostgreSQL the open consultations are locked FOR SHARE (in id
order: no deadlocks); on SQLite the INSERT takes the file's write lock when it starts.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Insert,
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
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect

from media_server.store.messages import SendItem
from models import ChatMessage, Consultation, uuid7

_msg = ChatMessage.__table__
_cons = Consultation.__table__

# The columns a batch gives each new chat_message row (created_at is the batch's own).
NEW_ROW = ("public_id", "consultation_id", "author_id", "body", "client_msg_id")


def _now() -> Any:
    return bindparam("now", type_=_msg.c.created_at.type)


def pg_insert() -> Insert:
    """PostgreSQL: json_to_recordset gives the rows typed columns."""
    open_cons = (
        select(_cons.c.id)
        .where(_cons.c.id == any_(bindparam("cids", type_=postgresql.ARRAY(Integer))))
        .where(Consultation.chat_open)
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
    rows = select(*(new.c[n] for n in NEW_ROW), _now()).join(
        open_cons, open_cons.c.id == new.c.consultation_id
    )
    return (
        postgresql.insert(_msg)
        .from_select([*NEW_ROW, "created_at"], rows)
        .on_conflict_do_nothing(index_elements=["author_id", "client_msg_id"])
        .returning(_msg.c.id, _msg.c.author_id, _msg.c.client_msg_id)
    )


def sqlite_insert() -> Insert:
    """SQLite: json_each walks the array, json_extract reads each field (the public id comes
    in its stored form: `stored_uuid`)."""
    new = func.json_each(bindparam("rows")).table_valued("key", "value").alias("new")
    fields = [func.json_extract(new.c.value, f"$[{i}]") for i in range(len(NEW_ROW))]
    rows = (
        select(*fields, _now())
        .select_from(new.join(_cons, _cons.c.id == fields[1]))
        .where(Consultation.chat_open)  # (a WHERE also lets SQLite parse the ON CONFLICT)
        .order_by(new.c.key)  # ids in the batch's order
    )
    return (
        sqlite.insert(_msg)
        .from_select([*NEW_ROW, "created_at"], rows)
        .on_conflict_do_nothing(index_elements=["author_id", "client_msg_id"])
        .returning(_msg.c.id, _msg.c.author_id, _msg.c.client_msg_id)
    )


def insert_params(dialect: Dialect, firsts: list[SendItem], now: datetime) -> dict[str, Any]:
    """The statement's parameters for a round: the rows as one JSON string."""
    if dialect.name == "postgresql":
        named = [dict(zip(NEW_ROW, (str(uuid7()), *_fields(it)), strict=True)) for it in firsts]
        cids = sorted({it.info.id for it in firsts})
        return {"cids": cids, "rows": json.dumps(named), "now": now}
    # The form SQLAlchemy itself stores a Uuid in on SQLite (32 hex digits).
    stored_uuid = _msg.c.public_id.type.dialect_impl(dialect).bind_processor(dialect)
    rows = [[stored_uuid(uuid7()), *_fields(it)] for it in firsts]
    return {"rows": json.dumps(rows), "now": now}


def _fields(it: SendItem) -> tuple[int, int, str, str]:
    return it.info.id, it.author_id, it.body, it.client_msg_id
