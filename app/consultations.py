"""Consultations: the status machine of an application to a centre, and who may see which one.

Row scope (DESIGN §4) lives here so every area (conclusions, booking, the room) uses the same
rule: a patient sees their own consultations; a Doctor the applications of their own centre and
the consultations assigned to them; a DutyDoctor only their own consultations; Admin all.
Anything else answers NotFound (404), the same as a consultation that does not exist.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel.dates import format_datetime as babel_format_datetime
from flask import current_app
from flask_babel import get_locale, gettext
from flask_babel import lazy_gettext as _l
from sqlalchemy import ColumnElement, bindparam, false, func, or_, select, true
from sqlalchemy.orm import joinedload, selectinload

from app.access import own_document_condition
from app.applications import insert_application, refuse_if_resent
from app.audit import audit
from app.dates import latest_schedulable, schedule_error, too_far_ahead
from app.errors import DomainError, NotFound
from app.extensions import db
from app.notifications import notify
from app.permissions import ADMIN, DOCTOR, DUTY_DOCTOR, PATIENT
from app.roles import is_doctor, role_names
from models import (
    OPEN_STATUSES,
    Conclusion,
    Consultation,
    ConsultationKind,
    ConsultationStatus,
    Disease,
    Doctor,
    DocumentType,
    MedicalCenter,
    MedicalDocument,
    Patient,
    disease_center,
    utcnow,
)

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


class ConsultationError(DomainError):
    """A rule of the status machine refused the action."""


# ---------------------------------------------------------------------------------------------
# Row scope
# ---------------------------------------------------------------------------------------------


def patient_consultation_condition(user) -> ColumnElement[bool]:
    """Condition on Consultation: the consultations of the patient record behind this user."""
    if PATIENT not in role_names(user):
        return false()
    own_patient = select(Patient.id).where(Patient.user_id == user.id)
    return Consultation.patient_id.in_(own_patient)


def staff_consultation_condition(user) -> ColumnElement[bool]:
    """Condition on Consultation: what a staff member may open and act on.

    Pure SQL (no query runs here): the doctor's row may change (centre moved, deactivated) and
    the condition follows it. Managers get nothing: they see no medical content.
    """
    roles = role_names(user)
    if ADMIN in roles:
        return true()
    own_doctor = select(Doctor.id).where(Doctor.user_id == user.id, Doctor.active.is_(True))
    conditions = []
    if {DOCTOR, DUTY_DOCTOR} & roles:
        conditions.append(Consultation.doctor_id.in_(own_doctor))
    if DOCTOR in roles:
        own_center = select(Doctor.center_id).where(
            Doctor.user_id == user.id, Doctor.active.is_(True), Doctor.center_id.is_not(None)
        )
        conditions.append(Consultation.center_id.in_(own_center))
    return or_(*conditions) if conditions else false()


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
    return _scoped(staff_consultation_condition(user), public_id)


# ---------------------------------------------------------------------------------------------
# Constants and small helpers
# ---------------------------------------------------------------------------------------------

APPLICATION_DUE = timedelta(days=3)
# A referred patient's documents are promised a review within 2–4 days (issue 4).
REFERRAL_DUE = timedelta(days=4)
QUEUE_STATUSES = (ConsultationStatus.REQUESTED, ConsultationStatus.NEEDS_DOCUMENTS)
# A doctor's diary is taken by these; cancelled, rejected and missed ones free the time.
BUSY_STATUSES = (ConsultationStatus.SCHEDULED, ConsultationStatus.IN_PROGRESS)
MIN_DURATION, MAX_DURATION = 15, 120
COMPLAINTS_MAX = 4000
DIAGNOSIS_MAX = 500
REASON_MAX = 2000
QUEUE_PAGE_SIZE = 20
COUNT_CAP = 1000

# Links carried by notifications: fixed paths (the routes of views/consultations.py and
# views/cabinet.py), so that a service can build them outside any request.
PATIENT_LINK = "/cabinet/consultations/{}"
STAFF_LINK = "/care/consultations/{}"


def patient_link(c: Consultation) -> str:
    return PATIENT_LINK.format(c.public_id)


def staff_link(c: Consultation) -> str:
    return STAFF_LINK.format(c.public_id)


def zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo(current_app.config.get("DEFAULT_TIMEZONE", "Europe/Moscow"))


def zone_label(name: str | None) -> str:
    from app.registration import TIMEZONE_LABELS

    return str(TIMEZONE_LABELS.get(name or "", name or ""))


def format_in_zone(
    value: datetime | None, tz_name: str | None, fmt: str = "d MMMM y, HH:mm"
) -> str:
    """A UTC moment as the person in `tz_name` reads it, in the current locale."""
    if value is None:
        return ""
    locale = get_locale() or "ru"
    return babel_format_datetime(value, fmt, tzinfo=zone(tz_name), locale=locale)


def _clean(text: str | None, limit: int, too_long) -> str:
    text = (text or "").strip()
    if len(text) > limit:
        raise ConsultationError(too_long)
    return text


def active_doctor(user) -> Doctor | None:
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    return db.session.execute(
        select(Doctor).where(Doctor.user_id == user.id, Doctor.active.is_(True))
    ).scalar_one_or_none()


def _own_patient(user) -> Patient | None:
    if PATIENT not in role_names(user):
        return None
    return db.session.execute(
        select(Patient).where(Patient.user_id == user.id)
    ).scalar_one_or_none()


def _centre_doctor(user, c: Consultation) -> Doctor:
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


def _notify_staff(c: Consultation, kind: str, text) -> None:
    """The assigned doctor if there is one, otherwise every doctor of the centre."""
    doctors = [c.doctor] if c.doctor is not None else centre_doctors(c.center_id)
    for doctor in doctors:
        notify(doctor.user, kind, text, link=staff_link(c))


def _notify_patient(c: Consultation, kind: str, text) -> None:
    notify(c.patient.user, kind, text, link=patient_link(c))


def _audit(action: str, c: Consultation, by) -> None:
    audit(action, actor=by, obj_type="consultation", obj_id=c.public_id, patient_id=c.patient_id)


# ---------------------------------------------------------------------------------------------
# The application: centres, their catalogue, the eligibility checklist
# ---------------------------------------------------------------------------------------------


def active_centres() -> list[MedicalCenter]:
    stmt = select(MedicalCenter).where(MedicalCenter.active.is_(True)).order_by(MedicalCenter.name)
    return list(db.session.execute(stmt).scalars())


def active_centre(public_id: uuid.UUID | None) -> MedicalCenter | None:
    if public_id is None:
        return None
    return db.session.execute(
        select(MedicalCenter).where(
            MedicalCenter.public_id == public_id, MedicalCenter.active.is_(True)
        )
    ).scalar_one_or_none()


def centre_diseases(centre: MedicalCenter) -> list[Disease]:
    """The centre's catalogue, with each disease's required document types loaded."""
    stmt = (
        select(Disease)
        .join(disease_center, disease_center.c.disease_id == Disease.id)
        .options(selectinload(Disease.required_document_types))
        .where(disease_center.c.center_id == centre.id, Disease.active.is_(True))
        .order_by(Disease.icd10_code)
    )
    return list(db.session.execute(stmt).scalars())


def document_type_label(document_type: DocumentType) -> str:
    locale = get_locale()
    if locale is not None and locale.language == "en" and document_type.name_en:
        return document_type.name_en
    return document_type.name


def missing_documents(
    disease: Disease | None, documents: Iterable[MedicalDocument]
) -> list[DocumentType]:
    """The disease's required document types that none of `documents` is (catalogue order)."""
    if disease is None:
        return []
    have = {d.document_type_id for d in documents}
    required = sorted(disease.required_document_types, key=lambda t: (t.sort_order, t.name))
    return [t for t in required if t.id not in have]


def _missing_message(missing: list[DocumentType]):
    names = ", ".join(document_type_label(t) for t in missing)
    return _l("Documents missing: %(names)s.", names=names)


def own_documents_by_ids(user, public_ids: Iterable[uuid.UUID]) -> list[MedicalDocument]:
    """The user's own documents with these ids; any id that is not theirs refuses all."""
    wanted = set(public_ids)
    if not wanted:
        return []
    docs = list(
        db.session.execute(
            select(MedicalDocument).where(
                MedicalDocument.public_id.in_(wanted), own_document_condition(user)
            )
        ).scalars()
    )
    if len(docs) != len(wanted):
        raise ConsultationError(_l("Only your own documents can be attached."))
    return docs


@dataclass(frozen=True)
class ApplicationData:
    centre_public_id: uuid.UUID | None
    disease_id: int | None
    diagnosis_text: str
    complaints: str
    document_ids: tuple[uuid.UUID, ...] = ()
    form_token: str | None = None  # the form's hidden one-time id (app/applications.py)


def submit_application(
    user, data: ApplicationData, *, new_documents: Sequence[MedicalDocument] = ()
) -> Consultation:
    """The patient's application to a centre: checks, creates it as requested, tells the centre.

    `new_documents` are the ones uploaded with the application, already stored for this
    patient in the same transaction (the caller's unit of work rolls them back on refusal).
    """
    patient = _own_patient(user)
    if patient is None:
        raise ConsultationError(_l("Only a patient can send an application."))
    refuse_if_resent(patient.id, data.form_token)
    centre = active_centre(data.centre_public_id)
    if centre is None:
        raise ConsultationError(_l("Choose a medical centre from the list."))
    disease = None
    if data.disease_id is not None:
        disease = next((d for d in centre_diseases(centre) if d.id == data.disease_id), None)
        if disease is None:
            raise ConsultationError(
                _l("This disease is not in the catalogue of the chosen centre.")
            )
    diagnosis = _clean(
        data.diagnosis_text,
        DIAGNOSIS_MAX,
        _l("The diagnosis is too long: at most %(n)d characters.", n=DIAGNOSIS_MAX),
    )
    if disease is None and not diagnosis:
        raise ConsultationError(
            _l("Choose the disease from the list or type the diagnosis yourself.")
        )
    complaints = _clean(
        data.complaints,
        COMPLAINTS_MAX,
        _l("The complaints are too long: at most %(n)d characters.", n=COMPLAINTS_MAX),
    )
    if not complaints:
        raise ConsultationError(_l("Describe your complaints briefly."))
    documents = own_documents_by_ids(user, data.document_ids)
    for doc in new_documents:
        if doc.patient_id != patient.id:
            raise ConsultationError(_l("Only your own documents can be attached."))
        if doc not in documents:
            documents.append(doc)
    missing = missing_documents(disease, documents)
    if missing:
        raise ConsultationError(_missing_message(missing))

    now = utcnow()
    c = Consultation(
        public_id=uuid.uuid4(),
        kind=ConsultationKind.CENTRE_REQUEST,
        status=ConsultationStatus.REQUESTED,
        patient_id=patient.id,
        patient=patient,
        center_id=centre.id,
        center=centre,
        disease_id=disease.id if disease else None,
        disease=disease,
        diagnosis_text=diagnosis,
        complaints=complaints,
        submitted_at=now,
        due_by=now + APPLICATION_DUE,
        form_token=data.form_token,
    )
    c.documents.extend(documents)
    insert_application(c)
    _audit("consultation.submit", c, user)
    number = str(c)
    _notify_staff(
        c,
        "application_submitted",
        lambda: gettext(
            "A new application %(number)s has arrived at %(centre)s.",
            number=number,
            centre=centre.name,
        ),
    )
    return c


# ---------------------------------------------------------------------------------------------
# Documents added by the patient afterwards
# ---------------------------------------------------------------------------------------------

DOCUMENTS_OPEN = frozenset(
    {
        ConsultationStatus.AWAITING_DOCUMENTS,
        ConsultationStatus.REQUESTED,
        ConsultationStatus.NEEDS_DOCUMENTS,
        ConsultationStatus.SCHEDULED,
    }
)


def attach_documents(
    c: Consultation,
    *,
    by,
    document_ids: Iterable[uuid.UUID] = (),
    new_documents: Sequence[MedicalDocument] = (),
) -> int:
    """The patient adds own documents to own consultation; returns how many were added.

    When the doctor had asked for documents, the application goes back to them (requested); a
    referral waiting for the patient's documents enters the centre's queue.
    """
    patient = _own_patient(by)
    if patient is None or patient.id != c.patient_id:
        raise ConsultationError(_l("Only the patient can add documents to the consultation."))
    if c.status not in DOCUMENTS_OPEN:
        raise ConsultationError(_l("Documents can no longer be added to this consultation."))
    documents = own_documents_by_ids(by, document_ids)
    documents += [d for d in new_documents if d.patient_id == patient.id and d not in documents]
    added = [d for d in documents if d not in c.documents]
    if not added:
        raise ConsultationError(_l("Choose or upload at least one document."))
    c.documents.extend(added)
    _audit("consultation.documents_added", c, by)
    if c.status in (ConsultationStatus.NEEDS_DOCUMENTS, ConsultationStatus.AWAITING_DOCUMENTS):
        documents_uploaded(c, by=by)
    return len(added)


def documents_uploaded(c: Consultation, *, by, now: datetime | None = None) -> None:
    """needs_documents → requested: the doctors of the centre look at the application again.

    awaiting_documents → requested: a referral (issue 4) becomes an application in the centre's
    queue, submitted now and due in four days; from here on it is pathway 1.
    """
    if c.status == ConsultationStatus.AWAITING_DOCUMENTS:
        _referral_documents_uploaded(c, by=by, now=now or utcnow())
        return
    if c.status != ConsultationStatus.NEEDS_DOCUMENTS:
        raise ConsultationError(_l("The doctor has not asked for documents."))
    c.status = ConsultationStatus.REQUESTED
    _audit("consultation.documents_uploaded", c, by)
    number = str(c)
    _notify_staff(
        c,
        "documents_uploaded",
        lambda: gettext(
            "The patient has added documents to application %(number)s.", number=number
        ),
    )


def _referral_documents_uploaded(c: Consultation, *, by, now: datetime) -> None:
    c.status = ConsultationStatus.REQUESTED
    c.submitted_at = now
    c.due_by = now + REFERRAL_DUE
    _audit("consultation.referral_documents_uploaded", c, by)
    number = str(c)
    _notify_staff(
        c,
        "referral_documents_uploaded",
        lambda: gettext(
            "A referred patient has uploaded documents: application %(number)s "
            "is waiting for review.",
            number=number,
        ),
    )


# ---------------------------------------------------------------------------------------------
# The doctor's decisions
# ---------------------------------------------------------------------------------------------


def local_moment(day: date, at: time, tz_name: str) -> datetime:
    """A wall-clock date and time in a zone as a UTC moment."""
    return datetime.combine(day, at, tzinfo=zone(tz_name)).astimezone(UTC)


def overlapping(doctor_id: int, starts_at: datetime, minutes: int, *, exclude_id: int | None):
    """The doctor's scheduled / in-progress consultation overlapping [start, start+minutes).

    SQL narrows to the window in which an overlap is possible (nothing lasts longer than
    MAX_DURATION), so at most a few rows come back; their own durations decide exactly.
    """
    ends_at = starts_at + timedelta(minutes=minutes)
    stmt = select(Consultation).where(
        Consultation.doctor_id == doctor_id,
        Consultation.status.in_([s.value for s in BUSY_STATUSES]),
        Consultation.scheduled_at.is_not(None),
        Consultation.scheduled_at < ends_at,
        Consultation.scheduled_at > starts_at - timedelta(minutes=MAX_DURATION),
    )
    if exclude_id is not None:
        stmt = stmt.where(Consultation.id != exclude_id)
    for other in db.session.execute(stmt.order_by(Consultation.scheduled_at)).scalars():
        if other.scheduled_at + timedelta(minutes=other.duration_minutes) > starts_at:
            return other
    return None


def schedule_consultation(
    c: Consultation,
    *,
    by,
    day: date,
    at: time,
    duration_minutes: int,
    now: datetime | None = None,
) -> None:
    """requested → scheduled by a doctor of the centre, who becomes the consultation's doctor.

    The date and time are read in the doctor's own time zone.
    """
    doctor = _centre_doctor(by, c)
    if c.status != ConsultationStatus.REQUESTED:
        raise ConsultationError(_l("Only an application waiting for review can be scheduled."))
    if not MIN_DURATION <= int(duration_minutes) <= MAX_DURATION:
        raise ConsultationError(
            _l(
                "The duration must be from %(min)d to %(max)d minutes.",
                min=MIN_DURATION,
                max=MAX_DURATION,
            )
        )
    now = now or utcnow()
    try:
        starts_at = local_moment(day, at, doctor.timezone)
    except OverflowError:  # the year 9999 in a zone west of UTC
        raise ConsultationError(too_far_ahead(latest_schedulable(now))) from None
    if starts_at <= now:
        raise ConsultationError(_l("The date and time of the consultation are in the past."))
    ends_at = starts_at + timedelta(minutes=int(duration_minutes))
    if problem := schedule_error(starts_at, ends_at, now):
        raise ConsultationError(problem)
    # Two applications scheduled at once by the same doctor: the doctor's row is the lock
    # (PostgreSQL; SQLite serialises writers anyway).
    db.session.execute(select(Doctor.id).where(Doctor.id == doctor.id).with_for_update())
    clash = overlapping(doctor.id, starts_at, int(duration_minutes), exclude_id=c.id)
    if clash is not None:
        raise ConsultationError(
            _l(
                "This time overlaps your consultation %(number)s at %(when)s.",
                number=str(clash),
                when=format_in_zone(clash.scheduled_at, doctor.timezone, "d MMMM, HH:mm"),
            )
        )
    c.status = ConsultationStatus.SCHEDULED
    c.doctor_id, c.doctor = doctor.id, doctor
    c.scheduled_at = starts_at
    c.duration_minutes = int(duration_minutes)
    c.scheduled_set_at = now
    c.reviewed_at = c.reviewed_at or now
    _audit("consultation.schedule", c, by)
    number, tz_name = str(c), c.patient.timezone
    _notify_patient(
        c,
        "consultation_scheduled",
        lambda: gettext(
            "Your consultation %(number)s is scheduled for %(when)s (%(zone)s).",
            number=number,
            when=format_in_zone(starts_at, tz_name),
            zone=zone_label(tz_name),
        ),
    )


def request_documents(c: Consultation, *, by, message: str) -> None:
    """requested → needs_documents: the doctor tells the patient what is missing."""
    _centre_doctor(by, c)
    if c.status != ConsultationStatus.REQUESTED:
        raise ConsultationError(
            _l("Documents can be requested only for an application under review.")
        )
    message = _clean(
        message, REASON_MAX, _l("The message is too long: at most %(n)d characters.", n=REASON_MAX)
    )
    if not message:
        raise ConsultationError(_l("Write which documents are needed."))
    c.status = ConsultationStatus.NEEDS_DOCUMENTS
    c.staff_message = message
    c.reviewed_at = utcnow()
    _audit("consultation.request_documents", c, by)
    number = str(c)
    # The message itself stays in the cabinet: SMS and e-mail carry no medical content.
    _notify_patient(
        c,
        "documents_requested",
        lambda: gettext(
            "The doctor asks for more documents for application %(number)s: "
            "see the details in your personal account.",
            number=number,
        ),
    )


def reject_consultation(c: Consultation, *, by, reason: str) -> None:
    """requested / needs_documents → rejected, with the reason shown to the patient."""
    _centre_doctor(by, c)
    if c.status not in QUEUE_STATUSES:
        raise ConsultationError(_l("Only an application under review can be declined."))
    reason = _clean(
        reason, REASON_MAX, _l("The reason is too long: at most %(n)d characters.", n=REASON_MAX)
    )
    if not reason:
        raise ConsultationError(_l("Give the reason."))
    c.status = ConsultationStatus.REJECTED
    c.reject_reason = reason
    c.rejected_at = c.reviewed_at = utcnow()
    _audit("consultation.reject", c, by)
    number = str(c)
    _notify_patient(
        c,
        "application_rejected",
        lambda: gettext(
            "Application %(number)s has been declined: see the reason in your personal account.",
            number=number,
        ),
    )


# ---------------------------------------------------------------------------------------------
# Cancelling and no-shows
# ---------------------------------------------------------------------------------------------


def _may_cancel_as_staff(user, c: Consultation) -> bool:
    return (
        db.session.execute(
            select(Consultation.id).where(
                Consultation.id == c.id, staff_consultation_condition(user)
            )
        ).first()
        is not None
    )


def cancel_consultation(c: Consultation, *, by, reason: str) -> None:
    """requested / needs_documents / scheduled → cancelled, by the patient or staff in scope.

    A duty booking's slot is free again as soon as the status changes: the partial unique index
    uq_consultation_active_slot only holds slots of scheduled / in-progress / completed ones.
    """
    patient = _own_patient(by)
    by_patient = patient is not None and patient.id == c.patient_id
    if not by_patient and not (is_doctor(by) or ADMIN in role_names(by)):
        raise ConsultationError(_l("You cannot cancel this consultation."))
    if not by_patient and not _may_cancel_as_staff(by, c):
        raise ConsultationError(_l("You cannot cancel this consultation."))
    if c.status not in CANCELLABLE:
        raise ConsultationError(_l("This consultation can no longer be cancelled."))
    reason = _clean(
        reason, REASON_MAX, _l("The reason is too long: at most %(n)d characters.", n=REASON_MAX)
    )
    if not reason:
        raise ConsultationError(_l("Give the reason."))
    c.status = ConsultationStatus.CANCELLED
    c.cancelled_at = utcnow()
    c.cancelled_by_id = by.id
    c.cancel_reason = reason
    _audit("consultation.cancel", c, by)
    number = str(c)
    if by_patient:
        _notify_staff(
            c,
            "consultation_cancelled",
            lambda: gettext("The patient has cancelled consultation %(number)s.", number=number),
        )
    else:
        _notify_patient(
            c,
            "consultation_cancelled",
            lambda: gettext(
                "Consultation %(number)s has been cancelled by the clinic: "
                "see the reason in your personal account.",
                number=number,
            ),
        )


def mark_missed(c: Consultation, *, by=None, now: datetime | None = None) -> None:
    """scheduled → missed once its time has passed; `by` is the doctor, or None (the system)."""
    if by is not None and not _may_cancel_as_staff(by, c):
        raise ConsultationError(_l("You cannot change this consultation."))
    if c.status != ConsultationStatus.SCHEDULED:
        raise ConsultationError(_l("Only a scheduled consultation can be marked as missed."))
    now = now or utcnow()
    if c.scheduled_at is None or c.scheduled_at + timedelta(minutes=c.duration_minutes) > now:
        raise ConsultationError(_l("The consultation has not ended yet."))
    c.status = ConsultationStatus.MISSED
    c.missed_at = now
    _audit("consultation.missed", c, by)
    number = str(c)
    _notify_patient(
        c,
        "consultation_missed",
        lambda: gettext("Consultation %(number)s did not take place.", number=number),
    )


# ---------------------------------------------------------------------------------------------
# Lists: the centre's queue and a doctor's day
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueuePage:
    items: list[Consultation]
    page: int
    page_size: int
    total: int  # capped at COUNT_CAP (then shown as "1000+")
    capped: bool

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.page_size))


def doctor_queue(doctor: Doctor, page: int = 1, page_size: int = QUEUE_PAGE_SIZE) -> QueuePage:
    """The centre's applications waiting for a decision, oldest first: two queries a page."""
    if doctor.center_id is None or not doctor.active:
        return QueuePage([], 1, page_size, 0, False)
    # Literal statuses: the planners (SQLite always, PostgreSQL on a generic plan) use the
    # partial index ix_consultation_queue only when they can see its condition is implied.
    statuses = bindparam(
        "queue_statuses", [s.value for s in QUEUE_STATUSES], expanding=True, literal_execute=True
    )
    condition = (Consultation.center_id == doctor.center_id) & Consultation.status.in_(statuses)
    # Counting stops at the cap: constant cost however long the queue grows.
    limited = select(Consultation.id).where(condition).limit(COUNT_CAP + 1).subquery()
    counted = int(db.session.execute(select(func.count()).select_from(limited)).scalar_one())
    capped = counted > COUNT_CAP
    total = min(counted, COUNT_CAP)
    pages = max(1, -(-total // page_size))
    page = min(max(1, page), pages)
    stmt = (
        select(Consultation)
        .options(joinedload(Consultation.patient), joinedload(Consultation.disease))
        .where(condition)
        .order_by(Consultation.submitted_at.asc(), Consultation.id.asc())
        .limit(page_size)
        .offset((page - 1) * page_size)
    )
    items = list(db.session.execute(stmt).scalars())
    return QueuePage(items, page, page_size, total, capped)


def doctor_day(doctor: Doctor, day: date) -> list[Consultation]:
    """The doctor's own consultations on `day` as the doctor's clock shows it."""
    starts = local_moment(day, time(0, 0), doctor.timezone)
    ends = local_moment(day + timedelta(days=1), time(0, 0), doctor.timezone)
    stmt = (
        select(Consultation)
        .options(joinedload(Consultation.patient), joinedload(Consultation.disease))
        .where(
            Consultation.doctor_id == doctor.id,
            Consultation.scheduled_at >= starts,
            Consultation.scheduled_at < ends,
        )
        .order_by(Consultation.scheduled_at, Consultation.id)
    )
    return list(db.session.execute(stmt).scalars())


def doctor_today(doctor: Doctor) -> date:
    return datetime.now(zone(doctor.timezone)).date()


def latest_conclusion(c: Consultation) -> Conclusion | None:
    return db.session.execute(
        select(Conclusion)
        .where(Conclusion.consultation_id == c.id)
        .order_by(Conclusion.version.desc())
        .limit(1)
    ).scalar_one_or_none()
