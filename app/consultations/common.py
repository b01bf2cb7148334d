"""What every consultation module shares: the error, the limits and status sets, the links that
notifications carry, the acting person, and the one way a transition notifies.

Each transition (transitions.py, applications.py, app/booking, app/conclusions) tells the people
concerned with notify_staff() / notify_patient() (cabinet + outbox) and records itself with
app.audit.audit_consultation(), so that the links, the audit object and who is told stay the
same everywhere.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import timedelta

from flask_babel import lazy_gettext as _l
from sqlalchemy import select
from sqlalchemy.orm import joinedload

from app.errors import DomainError
from app.extensions import db
from app.notifications import notify
from app.permissions import DOCTOR, PATIENT
from app.roles import role_names
from models import (
    OPEN_STATUSES,
    Conclusion,
    Consultation,
    ConsultationStatus,
    Doctor,
    MedicalDocument,
    Patient,
)


class ConsultationError(DomainError):
    """A rule of the status machine refused the action."""


# Statuses from which the patient or staff may still cancel.
CANCELLABLE = frozenset(
    {
        ConsultationStatus.REQUESTED,
        ConsultationStatus.NEEDS_DOCUMENTS,
        ConsultationStatus.SCHEDULED,
    }
)
# Statuses of a consultation that is still going somewhere (not finished one way or another).
ACTIVE = frozenset(OPEN_STATUSES)
# The patient may still add documents.
DOCUMENTS_OPEN = frozenset(
    {
        ConsultationStatus.AWAITING_DOCUMENTS,
        ConsultationStatus.REQUESTED,
        ConsultationStatus.NEEDS_DOCUMENTS,
        ConsultationStatus.SCHEDULED,
    }
)
QUEUE_STATUSES = (ConsultationStatus.REQUESTED, ConsultationStatus.NEEDS_DOCUMENTS)
# A doctor's diary is taken by these; cancelled, rejected and missed ones free the time.
BUSY_STATUSES = (ConsultationStatus.SCHEDULED, ConsultationStatus.IN_PROGRESS)

APPLICATION_DUE = timedelta(days=3)
# A referred patient's documents are promised a review within 2–4 days (issue 4).
REFERRAL_DUE = timedelta(days=4)
MIN_DURATION, MAX_DURATION = 15, 120
COMPLAINTS_MAX = 4000
DIAGNOSIS_MAX = 500
REASON_MAX = 2000

# Links carried by notifications: fixed paths (the routes of views/consultations.py and
# views/cabinet.py), so that a service can build them outside any request.
PATIENT_LINK = "/cabinet/consultations/{}"
STAFF_LINK = "/care/consultations/{}"
CONCLUSION_PDF_LINK = "/conclusions/{}.pdf"  # views/conclusions.py: ConclusionView.pdf


def patient_link(c: Consultation) -> str:
    return PATIENT_LINK.format(c.public_id)


def staff_link(c: Consultation) -> str:
    return STAFF_LINK.format(c.public_id)


def conclusion_pdf_link(conclusion: Conclusion) -> str:
    return CONCLUSION_PDF_LINK.format(conclusion.public_id)


def clean_text(text: str | None, limit: int, too_long) -> str:
    """The text stripped; longer than `limit` refuses with `too_long`."""
    text = (text or "").strip()
    if len(text) > limit:
        raise ConsultationError(too_long)
    return text


# ---------------------------------------------------------------------------------------------
# The acting person
# ---------------------------------------------------------------------------------------------


def active_doctor(user) -> Doctor | None:
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    return db.session.execute(
        select(Doctor).where(Doctor.user_id == user.id, Doctor.active.is_(True))
    ).scalar_one_or_none()


def own_patient(user) -> Patient | None:
    """The patient record behind a user with the Patient role, or None."""
    if PATIENT not in role_names(user):
        return None
    return db.session.execute(
        select(Patient).where(Patient.user_id == user.id)
    ).scalar_one_or_none()


def centre_doctor(user, c: Consultation) -> Doctor:
    """The acting user as a doctor of the consultation's centre, or a refusal."""
    doctor = active_doctor(user) if DOCTOR in role_names(user) else None
    if doctor is None or doctor.center_id is None or doctor.center_id != c.center_id:
        raise ConsultationError(_l("Only a doctor of the medical centre can do this."))
    return doctor


def centre_doctors(center_id: int | None) -> list[Doctor]:
    """The active (non-duty) doctors of a centre: the people an application is addressed to."""
    if center_id is None:
        return []
    stmt = (
        select(Doctor)
        .options(joinedload(Doctor.user))
        .where(Doctor.center_id == center_id, Doctor.active.is_(True), Doctor.is_duty.is_(False))
        .order_by(Doctor.id)
    )
    return list(db.session.execute(stmt).scalars())


def own_documents(
    patient: Patient, public_ids: Iterable[str | uuid.UUID | None], *, at_most: int | None = None
) -> list[MedicalDocument]:
    """The patient's own documents with these public ids, for attaching to a consultation.

    Empty values are skipped; a malformed id or one that is not the patient's refuses all.
    `at_most` bounds how many one form may name.
    """
    wanted: set[uuid.UUID] = set()
    for raw in public_ids or ():
        if raw in ("", None):
            continue
        try:
            wanted.add(raw if isinstance(raw, uuid.UUID) else uuid.UUID(str(raw)))
        except ValueError:
            raise ConsultationError(_l("Only your own documents can be attached.")) from None
    if not wanted:
        return []
    if at_most is not None and len(wanted) > at_most:
        raise ConsultationError(_l("At most %(n)d documents can be attached.", n=at_most))
    docs = list(
        db.session.execute(
            select(MedicalDocument).where(
                MedicalDocument.public_id.in_(wanted), MedicalDocument.patient_id == patient.id
            )
        ).scalars()
    )
    if len(docs) != len(wanted):
        raise ConsultationError(_l("Only your own documents can be attached."))
    return docs


# ---------------------------------------------------------------------------------------------
# Telling people and the audit trail: one way for every transition
# ---------------------------------------------------------------------------------------------


def notify_staff(c: Consultation, kind: str, text, **options) -> None:
    """The assigned doctor if there is one, otherwise every doctor of the centre.

    `options` go to notify() as they are (e.g. a dedupe_key)."""
    doctors = [c.doctor] if c.doctor is not None else centre_doctors(c.center_id)
    for doctor in doctors:
        notify(doctor.user, kind, text, link=staff_link(c), **options)


def notify_patient(c: Consultation, kind: str, text, *, link: str = "", **options) -> None:
    """The patient, with a link to the consultation unless another is given (the conclusion's
    PDF); `options` go to notify() as they are."""
    notify(c.patient.user, kind, text, link=link or patient_link(c), **options)
