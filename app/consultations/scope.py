"""Row scope of consultations (DESIGN §4): who may open which one.

One rule for every area (the consultation pages, conclusions, booking, the room): a patient
sees their own consultations; a Doctor the applications of their own centre and the
consultations assigned to them; a DutyDoctor only their own consultations; Admin all.
Anything else answers NotFound (404), the same as a consultation that does not exist.
"""

from __future__ import annotations

import uuid

from flask_babel import lazy_gettext as _l
from sqlalchemy import ColumnElement, false, select

from app.access import care_consultation_condition
from app.errors import NotFound
from app.extensions import db
from app.permissions import PATIENT
from app.roles import role_names
from models import Consultation, Patient


def patient_consultation_condition(user) -> ColumnElement[bool]:
    """Condition on Consultation: the consultations of the patient record behind this user."""
    if PATIENT not in role_names(user):
        return false()
    own_patient = select(Patient.id).where(Patient.user_id == user.id)
    return Consultation.patient_id.in_(own_patient)


def _scoped(condition: ColumnElement[bool], public_id: uuid.UUID) -> Consultation:
    consultation = db.session.execute(
        select(Consultation).where(Consultation.public_id == public_id, condition)
    ).scalar_one_or_none()
    if consultation is None:
        raise NotFound(_l("Consultation not found."))
    return consultation


def consultation_for_patient(user, public_id: uuid.UUID) -> Consultation:
    """The user's own consultation by public id; anything else raises NotFound."""
    return _scoped(patient_consultation_condition(user), public_id)


def consultation_for_staff(user, public_id: uuid.UUID) -> Consultation:
    """A consultation in the staff member's scope by public id; anything else raises NotFound."""
    return _scoped(care_consultation_condition(user), public_id)


def in_staff_scope(user, c: Consultation) -> bool:
    """Whether the staff member may act on this consultation (the same rule as above)."""
    stmt = select(Consultation.id).where(Consultation.id == c.id, care_consultation_condition(user))
    return db.session.execute(stmt).first() is not None
