"""Append-only audit trail: who did what to which object. Never medical content."""

from __future__ import annotations

from flask import has_request_context, request

from app.extensions import db
from models import AuditEvent, AuditOutcome, utcnow


def audit(
    action: str,
    *,
    actor=None,
    obj_type: str = "",
    obj_id: object = "",
    patient_id: int | None = None,
    outcome: AuditOutcome = AuditOutcome.OK,
) -> AuditEvent:
    event = AuditEvent(
        at=utcnow(),
        actor_id=getattr(actor, "id", None) if actor is not None else None,
        action=action,
        object_type=obj_type,
        object_id=str(obj_id or ""),
        patient_id=patient_id,
        ip=(request.remote_addr or "") if has_request_context() else "",
        outcome=outcome,
    )
    db.session.add(event)
    return event
