"""Append-only audit trail: who did what to which object. Never medical content."""

from __future__ import annotations

from typing import Any

from flask import has_request_context, request

from app.extensions import db
from models import AuditEvent, AuditOutcome, utcnow


def audit_values(
    action: str,
    *,
    actor=None,
    actor_id: int | None = None,
    obj_type: str = "",
    obj_id: object = "",
    patient_id: int | None = None,
    outcome: AuditOutcome = AuditOutcome.OK,
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
        "ip": (request.remote_addr or "") if has_request_context() else "",
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
        )
    )
    db.session.add(event)
    return event
