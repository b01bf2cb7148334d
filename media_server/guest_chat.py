"""Chat messages written by an invited guest (a colleague, an interpreter, a relative).

A guest has no account: the message's author is the invite the guest came by
(`chat_message.invite_id`, `author_id` NULL), and its name is the invite's `guest_name`. A guest
writes only while the consultation is in progress (Consultation.guest_chat_open, the web app's
rule too) and the invite still stands — decided here in the database, in the same transaction
as the insert, like the patients' and doctors' messages in the store package; that the guest is
admitted to the call is the server's check (room state).

Kept beside the store package rather than in it: the guests' messages are few, and the hot
path of the chat (store.ChatWriter's group commit) stays untouched by them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, select
from sqlalchemy.dialects import postgresql, sqlite

from media_server.store import ConsultationInfo, SendResult, message_dict
from models import ChatMessage, Consultation, MediaInvite, uuid7

_msg = ChatMessage.__table__
_cons = Consultation.__table__
_invite = MediaInvite.__table__


def guest_message(
    info: ConsultationInfo,
    *,
    id: int,
    client_msg_id: str,
    author_name: str,
    body: str,
    created_at: datetime,
) -> dict[str, Any]:
    """The contract's Message for a guest's line: no account id, role `guest`."""
    return message_dict(
        info,
        id=id,
        client_msg_id=client_msg_id,
        author_id=None,
        author_name=author_name,
        body=body,
        created_at=created_at,
    )


def send_guest(
    conn: Connection,
    info: ConsultationInfo,
    *,
    invite_id: int,
    client_msg_id: str,
    body: str,
) -> SendResult:
    """Store a guest's message once per (invite, client_msg_id). `closed` when the consultation
    is not in progress or the invite was revoked or has expired. Commits on `conn` (a
    ChatStore.run connection, outside a transaction)."""
    now = datetime.now(UTC)
    postgres = conn.dialect.name == "postgresql"
    with conn.begin():
        open_q = select(Consultation.guest_chat_open).where(_cons.c.id == info.id)
        # As store.send_batch: a transition either precedes this read or waits for the insert.
        if postgres:
            open_q = open_q.with_for_update(read=True)
        else:  # the write lock now (the driver would begin only at the INSERT): one snapshot
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        chat_open = bool(conn.execute(open_q).scalar())
        invite = conn.execute(
            select(_invite.c.guest_name, _invite.c.revoked_at, _invite.c.expires_at).where(
                _invite.c.id == invite_id, _invite.c.consultation_id == info.id
            )
        ).first()
        name = invite.guest_name if invite else ""

        def stored(kind: str, id: int, body: str, created_at: datetime) -> SendResult:
            return SendResult(
                kind,
                guest_message(
                    info,
                    id=id,
                    client_msg_id=client_msg_id,
                    author_name=name,
                    body=body,
                    created_at=created_at,
                ),
            )

        existing = _existing(conn, invite_id, client_msg_id)
        if existing is not None:  # a resend: acked with the stored message, even after closing
            if existing.consultation_id != info.id:
                return SendResult("conflict")
            return stored("duplicate", existing.id, existing.body, existing.created_at)
        expires_at = invite.expires_at if invite else None
        if expires_at is not None and expires_at.tzinfo is None:  # SQLite keeps no offset
            expires_at = expires_at.replace(tzinfo=UTC)
        if (
            not chat_open
            or invite is None
            or invite.revoked_at is not None
            or expires_at is None
            or expires_at <= now
        ):
            return SendResult("closed")
        insert = postgresql.insert if postgres else sqlite.insert
        stmt = (
            insert(_msg)
            .values(
                public_id=uuid7(),
                consultation_id=info.id,
                author_id=None,
                invite_id=invite_id,
                body=body,
                client_msg_id=client_msg_id,
                created_at=now,
            )
            .on_conflict_do_nothing(
                # the partial unique index of guests' client ids (migration 0010)
                index_elements=["invite_id", "client_msg_id"],
                index_where=_msg.c.invite_id.isnot(None),
            )
            .returning(_msg.c.id)
        )
        new_id = conn.execute(stmt).scalar()
        if new_id is None:  # the same resend raced this one in: answer with the stored row
            row = _existing(conn, invite_id, client_msg_id)
            return stored("duplicate", row.id, row.body, row.created_at)
    return stored("stored", new_id, body, now)


def _existing(conn: Any, invite_id: int, client_msg_id: str) -> Any:
    return conn.execute(
        select(_msg.c.id, _msg.c.consultation_id, _msg.c.body, _msg.c.created_at).where(
            _msg.c.invite_id == invite_id, _msg.c.client_msg_id == client_msg_id
        )
    ).first()


def guest_history(
    conn: Connection, info: ConsultationInfo, after_id: int, limit: int
) -> list[dict[str, Any]]:
    """The guests' messages with id > after_id, oldest first, at most `limit` (the newest)."""
    stmt = (
        select(
            _msg.c.id,
            _msg.c.client_msg_id,
            _msg.c.body,
            _msg.c.created_at,
            _invite.c.guest_name,
        )
        .join(_invite, _invite.c.id == _msg.c.invite_id)
        .where(_msg.c.consultation_id == info.id, _msg.c.id > after_id)
        .order_by(_msg.c.id.desc())
        .limit(limit)
    )
    rows = conn.execute(stmt).all()
    return [
        guest_message(
            info,
            id=r.id,
            client_msg_id=r.client_msg_id,
            author_name=r.guest_name,
            body=r.body,
            created_at=r.created_at,
        )
        for r in reversed(rows)
    ]


def merge_history(
    members: list[dict[str, Any]], guests: list[dict[str, Any]], limit: int
) -> list[dict[str, Any]]:
    """One list in id order, the newest `limit` (both inputs are already in id order)."""
    if not guests:
        return members
    merged = sorted(members + guests, key=lambda m: m["id"])
    return merged[-limit:]
