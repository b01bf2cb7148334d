"""What the room's pages are told about the chat: whether it is open now (read from the
database), and who wrote each line (named as on every page).

A join token carries `chat` as the web app saw it when minting; the consultation moves on
(the doctor starts it, completes it) while sockets stay connected. The chat is therefore
decided on the database at every send (the store's insert and guest_chat's transaction use
models.Consultation.chat_open / guest_chat_open), never on the token's snapshot, and the pages
learn about a change through `consultation.state`, built here from the same two rules.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, select

from models import Consultation, people_names


def consultation_state(conn: Connection, consultation_id: int) -> dict[str, Any] | None:
    """`{status, chat, guest_chat}` of the consultation (None if it no longer exists)."""
    stmt = select(
        Consultation.status,
        Consultation.chat_open.label("chat"),
        Consultation.guest_chat_open.label("guest_chat"),
    ).where(Consultation.id == consultation_id)
    row = conn.execute(stmt).first()
    if row is None:
        return None
    return {"status": str(row.status), "chat": bool(row.chat), "guest_chat": bool(row.guest_chat)}


def name_authors(conn: Connection, history: list[dict[str, Any]], user_id: int | None) -> str:
    """Name the authors of a history replay as the pages do (models.person_name: «Фамилия Имя
    Отчество»), not by their accounts' names; returns the joining user's own such name (""
    for one who is neither a patient nor a doctor), which their live messages carry."""
    authors = {m["author_id"] for m in history if m.get("author_id")}
    if user_id is not None:
        authors.add(user_id)
    if not authors:
        return ""
    names = people_names(conn, authors)
    for m in history:
        m["author_name"] = names.get(m["author_id"], m["author_name"])
    return names.get(user_id, "") if user_id is not None else ""
