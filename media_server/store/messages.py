"""The chat's values: a consultation as the chat sees it, a message to store, the outcome of
storing it, and the contract's Message dict (docs/media-contract.md) sent to the pages."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

HISTORY_LIMIT = 500


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
