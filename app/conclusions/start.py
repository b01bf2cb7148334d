"""Starting a consultation: scheduled → in_progress.

By the assigned doctor (or, when none is assigned, a doctor of the consultation's centre, who
becomes the assigned one), no earlier than START_EARLY before the appointed time. The patient
is told at once (cabinet and SMS: someone is waiting on the line).
"""

from __future__ import annotations

from datetime import timedelta

from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l

from app.audit import audit_consultation
from app.conclusions import lock
from app.consultations import ConsultationError, notify_patient
from app.i18n import local_datetime
from models import Consultation, ConsultationStatus, Doctor, utcnow

START_EARLY = timedelta(minutes=15)

_NOT_STARTABLE = {
    ConsultationStatus.IN_PROGRESS: _l("The consultation has already started."),
    ConsultationStatus.COMPLETED: _l("The consultation is already completed."),
    ConsultationStatus.CANCELLED: _l("The consultation was cancelled and cannot be started."),
    ConsultationStatus.REJECTED: _l("The application was rejected: there is nothing to start."),
    ConsultationStatus.MISSED: _l("The consultation was missed and cannot be started."),
}


def can_start(consultation: Consultation, doctor: Doctor | None) -> bool:
    """Whether the start button makes sense for this doctor now (the service decides)."""
    if doctor is None or not doctor.active:
        return False
    if consultation.status != ConsultationStatus.SCHEDULED:
        return False
    if consultation.doctor_id is None:
        return doctor.center_id is not None and doctor.center_id == consultation.center_id
    return consultation.doctor_id == doctor.id


def start_consultation(consultation: Consultation, *, by: Doctor | None) -> None:
    """scheduled → in_progress, by the consultation's doctor, from 15 minutes before its time."""
    if by is None or not by.active:
        raise ConsultationError(_l("Only the consultation's doctor can start it."))
    lock(consultation)
    status = consultation.status
    if status != ConsultationStatus.SCHEDULED:
        raise ConsultationError(
            _NOT_STARTABLE.get(
                status, _l("Only a scheduled consultation can be started: set its time first.")
            )
        )
    if consultation.doctor_id is None:
        # An application to a centre scheduled without naming a doctor: any doctor of that
        # centre may take it, and becomes its doctor.
        if by.center_id is None or by.center_id != consultation.center_id:
            raise ConsultationError(_l("Only the consultation's doctor can start it."))
    elif consultation.doctor_id != by.id:
        raise ConsultationError(_l("Only the consultation's doctor can start it."))
    if consultation.scheduled_at is None:
        raise ConsultationError(
            _l("Only a scheduled consultation can be started: set its time first.")
        )
    now = utcnow()
    if now < consultation.scheduled_at - START_EARLY:
        raise ConsultationError(
            _l(
                "It is too early: the consultation can be started no earlier than 15 minutes "
                "before its time (%(at)s).",
                at=local_datetime(consultation.scheduled_at, "short"),
            )
        )
    if consultation.doctor_id is None:
        consultation.doctor_id = by.id
        consultation.doctor = by
    consultation.status = ConsultationStatus.IN_PROGRESS
    consultation.started_at = now
    audit_consultation("consultation.start", consultation, by.user)
    notify_patient(
        consultation,
        "consultation_started",
        lambda: _(
            "The consultation has started: the doctor is waiting for you (№%(number)s).",
            number=consultation.display_number,
        ),
        # Someone waiting on the line now: the cabinet and an SMS, no e-mail read next day.
        email=False,
        dedupe_key=f"consultation_started:{consultation.public_id}",
    )
