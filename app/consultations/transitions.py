"""The status machine of a consultation after it exists: one function per transition.

Each checks the actor, changes the status, notifies the people concerned and writes the audit
event (common.notify_staff / notify_patient, app.audit.audit_consultation), and never commits. How a
consultation comes to exist: applications.submit_application (requested), app/booking
(book_slot: scheduled), the referral import (awaiting_documents).

    awaiting_documents ─documents_uploaded─► requested          (a referral)
    needs_documents ────documents_uploaded─► requested
    requested ─schedule_consultation─► scheduled ─(the room)─► in_progress ─► completed
    requested ─request_documents─► needs_documents
    requested / needs_documents ─reject_consultation─► rejected
    requested / needs_documents / scheduled ─cancel_consultation─► cancelled
    scheduled ─mark_missed─► missed
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import date, datetime, time, timedelta

from flask_babel import gettext
from flask_babel import lazy_gettext as _l
from sqlalchemy import select

from app.audit import audit_consultation
from app.consultations.common import (
    BUSY_STATUSES,
    CANCELLABLE,
    DOCUMENTS_OPEN,
    MAX_DURATION,
    MIN_DURATION,
    QUEUE_STATUSES,
    REASON_MAX,
    REFERRAL_DUE,
    ConsultationError,
    centre_doctor,
    clean_text,
    notify_patient,
    notify_staff,
    own_documents,
    own_patient,
)
from app.consultations.scope import in_staff_scope
from app.dates import (
    format_in_zone,
    latest_schedulable,
    local_moment,
    schedule_error,
    too_far_ahead,
    zone_label,
)
from app.extensions import db
from app.permissions import ADMIN
from app.roles import is_doctor, role_names
from models import Consultation, ConsultationStatus, Doctor, MedicalDocument, utcnow

# ---------------------------------------------------------------------------------------------
# Documents added by the patient afterwards
# ---------------------------------------------------------------------------------------------


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
    patient = own_patient(by)
    if patient is None or patient.id != c.patient_id:
        raise ConsultationError(_l("Only the patient can add documents to the consultation."))
    if c.status not in DOCUMENTS_OPEN:
        raise ConsultationError(_l("Documents can no longer be added to this consultation."))
    documents = own_documents(patient, document_ids)
    documents += [d for d in new_documents if d.patient_id == patient.id and d not in documents]
    added = [d for d in documents if d not in c.documents]
    if not added:
        raise ConsultationError(_l("Choose or upload at least one document."))
    c.documents.extend(added)
    audit_consultation("consultation.documents_added", c, by)
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
    audit_consultation("consultation.documents_uploaded", c, by)
    number = str(c)
    notify_staff(
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
    audit_consultation("consultation.referral_documents_uploaded", c, by)
    number = str(c)
    notify_staff(
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
    doctor = centre_doctor(by, c)
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
    audit_consultation("consultation.schedule", c, by)
    number, tz_name = str(c), c.patient.timezone
    notify_patient(
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
    centre_doctor(by, c)
    if c.status != ConsultationStatus.REQUESTED:
        raise ConsultationError(
            _l("Documents can be requested only for an application under review.")
        )
    message = clean_text(
        message, REASON_MAX, _l("The message is too long: at most %(n)d characters.", n=REASON_MAX)
    )
    if not message:
        raise ConsultationError(_l("Write which documents are needed."))
    c.status = ConsultationStatus.NEEDS_DOCUMENTS
    c.staff_message = message
    c.reviewed_at = utcnow()
    audit_consultation("consultation.request_documents", c, by)
    number = str(c)
    # The message itself stays in the cabinet: SMS and e-mail carry no medical content.
    notify_patient(
        c,
        "documents_requested",
        lambda: gettext(
            "The doctor asks for more documents for application %(number)s: "
            "see the details in your personal account.",
            number=number,
        ),
    )


def _reason(reason: str | None) -> str:
    """The reason a rejection or a cancellation must give, stripped and within REASON_MAX."""
    reason = clean_text(
        reason, REASON_MAX, _l("The reason is too long: at most %(n)d characters.", n=REASON_MAX)
    )
    if not reason:
        raise ConsultationError(_l("Give the reason."))
    return reason


def reject_consultation(c: Consultation, *, by, reason: str) -> None:
    """requested / needs_documents → rejected, with the reason shown to the patient."""
    centre_doctor(by, c)
    if c.status not in QUEUE_STATUSES:
        raise ConsultationError(_l("Only an application under review can be declined."))
    reason = _reason(reason)
    c.status = ConsultationStatus.REJECTED
    c.reject_reason = reason
    c.rejected_at = c.reviewed_at = utcnow()
    audit_consultation("consultation.reject", c, by)
    number = str(c)
    notify_patient(
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


def cancel_consultation(c: Consultation, *, by, reason: str) -> None:
    """requested / needs_documents / scheduled → cancelled, by the patient or staff in scope.

    A duty booking's slot is free again as soon as the status changes: the partial unique index
    uq_consultation_active_slot only holds slots of scheduled / in-progress / completed ones.
    """
    patient = own_patient(by)
    by_patient = patient is not None and patient.id == c.patient_id
    if not by_patient and not (is_doctor(by) or ADMIN in role_names(by)):
        raise ConsultationError(_l("You cannot cancel this consultation."))
    if not by_patient and not in_staff_scope(by, c):
        raise ConsultationError(_l("You cannot cancel this consultation."))
    if c.status not in CANCELLABLE:
        raise ConsultationError(_l("This consultation can no longer be cancelled."))
    reason = _reason(reason)
    c.status = ConsultationStatus.CANCELLED
    c.cancelled_at = utcnow()
    c.cancelled_by_id = by.id
    c.cancel_reason = reason
    audit_consultation("consultation.cancel", c, by)
    number = str(c)
    if by_patient:
        notify_staff(
            c,
            "consultation_cancelled",
            lambda: gettext("The patient has cancelled consultation %(number)s.", number=number),
        )
    else:
        notify_patient(
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
    if by is not None and not in_staff_scope(by, c):
        raise ConsultationError(_l("You cannot change this consultation."))
    if c.status != ConsultationStatus.SCHEDULED:
        raise ConsultationError(_l("Only a scheduled consultation can be marked as missed."))
    now = now or utcnow()
    if c.scheduled_at is None or c.scheduled_at + timedelta(minutes=c.duration_minutes) > now:
        raise ConsultationError(_l("The consultation has not ended yet."))
    c.status = ConsultationStatus.MISSED
    c.missed_at = now
    audit_consultation("consultation.missed", c, by)
    number = str(c)
    notify_patient(
        c,
        "consultation_missed",
        lambda: gettext("Consultation %(number)s did not take place.", number=number),
    )
