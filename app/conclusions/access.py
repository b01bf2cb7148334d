"""Reading conclusions: the versions of a consultation, the latest one, and one conclusion by
public id within the reader's scope (every download attempt audited).

latest_conclusion() is the one answer to "the conclusion of this consultation" for pages, the
form, the issue service and the patient's cabinet.
"""

from __future__ import annotations

import uuid

from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.orm import joinedload

from app.access import care_consultation_condition
from app.audit import audit
from app.consultations import patient_consultation_condition
from app.extensions import db
from models import AuditOutcome, Conclusion, Consultation, parse_public_id


def conclusions_of(consultation: Consultation) -> list[Conclusion]:
    """Every issued version, newest first (the history stays visible)."""
    stmt = (
        select(Conclusion)
        .options(joinedload(Conclusion.author))
        .where(Conclusion.consultation_id == consultation.id)
        .order_by(Conclusion.version.desc())
    )
    return list(db.session.execute(stmt).scalars())


def latest_conclusion(consultation: Consultation) -> Conclusion | None:
    """The version in force: the highest one (a correction supersedes, never overwrites)."""
    return db.session.execute(
        select(Conclusion)
        .where(Conclusion.consultation_id == consultation.id)
        .order_by(Conclusion.version.desc())
        .limit(1)
    ).scalar_one_or_none()


def conclusion_condition(user) -> ColumnElement[bool]:
    """Condition on Consultation: whose conclusions the user may download.

    The patient their own; Admin all; a Doctor those of their centre and their own; a
    DutyDoctor their own (the same scope as the consultation itself, app.consultations).
    Managers none: a conclusion is medical content.
    """
    return or_(patient_consultation_condition(user), care_consultation_condition(user))


def find_conclusion(user, public_id: uuid.UUID | str) -> Conclusion | None:
    """The conclusion if the user may download it, else None; every attempt is audited."""
    pid = parse_public_id(public_id)
    if pid is None:
        return None
    conclusion = db.session.execute(
        select(Conclusion)
        .join(Consultation, Consultation.id == Conclusion.consultation_id)
        .options(joinedload(Conclusion.consultation), joinedload(Conclusion.author))
        .where(Conclusion.public_id == pid, conclusion_condition(user))
    ).scalar_one_or_none()
    if conclusion is None:
        foreign = db.session.execute(
            select(Consultation.patient_id)
            .join(Conclusion, Conclusion.consultation_id == Consultation.id)
            .where(Conclusion.public_id == pid)
        ).scalar_one_or_none()
        if foreign is not None:
            audit(
                "conclusion.download",
                actor=user,
                obj_type="conclusion",
                obj_id=pid,
                patient_id=foreign,
                outcome=AuditOutcome.DENIED,
            )
        return None
    audit(
        "conclusion.download",
        actor=user,
        obj_type="conclusion",
        obj_id=conclusion.public_id,
        patient_id=conclusion.consultation.patient_id,
    )
    return conclusion
