"""Append-only audit trail: who did what to which object. Never medical content.

Action names: "<object>.<verb>" (e.g. "consultation.cancel", "document.upload").

The client's address is an argument, never read from the request here (DESIGN §3): `ip=` on
the call, else the address the view's unit of work was opened with (client_address()), else ""
(a worker, the CLI).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from app.extensions import db
from models import AuditEvent, AuditOutcome, Consultation, utcnow

_client_address: ContextVar[str] = ContextVar("oblako_client_address", default="")


@contextmanager
def client_address(ip: str) -> Iterator[None]:
    """Within this block, audit events without an explicit `ip` record this address."""
    token = _client_address.set(ip or "")
    try:
        yield
    finally:
        _client_address.reset(token)


def audit_values(
    action: str,
    *,
    actor=None,
    actor_id: int | None = None,
    obj_type: str = "",
    obj_id: object = "",
    patient_id: int | None = None,
    outcome: AuditOutcome = AuditOutcome.OK,
    ip: str | None = None,
) -> dict[str, Any]:
    """The columns of one audit event: the one definition audit() and bulk inserts share.

    `actor` is a user object; `actor_id` the same when only the id is at hand.
    """
    if actor is not None:
        actor_id = getattr(actor, "id", None)
    return {
        "at": utcnow(),
        "actor_id": actor_id,
        "action": action,
        "object_type": obj_type,
        "object_id": str(obj_id or ""),
        "patient_id": patient_id,
        "ip": _client_address.get() if ip is None else ip,
        "outcome": outcome,
    }


def audit(
    action: str,
    *,
    actor=None,
    actor_id: int | None = None,
    obj_type: str = "",
    obj_id: object = "",
    patient_id: int | None = None,
    outcome: AuditOutcome = AuditOutcome.OK,
    ip: str | None = None,
) -> AuditEvent:
    event = AuditEvent(
        **audit_values(
            action,
            actor=actor,
            actor_id=actor_id,
            obj_type=obj_type,
            obj_id=obj_id,
            patient_id=patient_id,
            outcome=outcome,
            ip=ip,
        )
    )
    db.session.add(event)
    return event


def audit_consultation(
    action: str, c: Consultation, by=None, *, by_id: int | None = None
) -> AuditEvent:
    """An event whose object is a consultation (a transition, an invitation, a consent): `by`
    the acting user (or only its id), None the system."""
    return audit(
        action,
        actor=by,
        actor_id=by_id,
        obj_type="consultation",
        obj_id=c.public_id,
        patient_id=c.patient_id,
    )
