"""Reminders before a scheduled consultation: 24 hours and 1 hour before, exactly once each.

send_reminders() is run every five minutes by the worker (app/tasks.py) and by
`flask oblako reminders`. Each reminder is claimed with a conditional UPDATE
(`… SET reminder_1h_sent_at = now WHERE id = … AND reminder_1h_sent_at IS NULL`) whose row
count says whether this run won it: two workers running at once never both send, and the
claim, the cabinet notifications and the outbox rows commit together (a failure rolls the
claim back, so the next run tries again). The outbox rows carry a dedupe key as a second guard.

Windows: the 24 h reminder when 1 h < scheduled_at − now ≤ 24 h, the 1 h reminder when
0 < scheduled_at − now ≤ 1 h; a consultation booked 30 minutes ahead gets only the 1 h one.
Times are written in the reader's own time zone (Russia spans eleven).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel.dates import format_datetime
from flask_babel import lazy_gettext as _l
from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import joinedload

from app.consultations import notify_patient, notify_staff
from app.extensions import db
from models import Consultation, ConsultationStatus, Doctor, Patient, utcnow

log = logging.getLogger(__name__)

DAY = timedelta(hours=24)
HOUR = timedelta(hours=1)
DELIVERY_LOCALE = "ru"
WHEN_FORMAT = "d MMMM y, HH:mm"
FALLBACK_TZ = "Europe/Moscow"


@dataclass
class ReminderReport:
    day_before: int = 0
    hour_before: int = 0

    def __str__(self) -> str:
        return f"24 h reminders {self.day_before}, 1 h reminders {self.hour_before}"


def local_when(at: datetime, tz_name: str | None) -> str:
    """`at` in the reader's time zone, in Russian: "3 декабря 2026, 14:00"."""
    try:
        tz = ZoneInfo(tz_name or FALLBACK_TZ)
    except (ZoneInfoNotFoundError, ValueError):
        tz = ZoneInfo(FALLBACK_TZ)
    return format_datetime(at, WHEN_FORMAT, tzinfo=tz, locale=DELIVERY_LOCALE)


def send_reminders(now: datetime | None = None) -> ReminderReport:
    """One pass over the scheduled consultations of the next 24 hours. Needs an app context."""
    now = now or utcnow()
    report = ReminderReport()
    due_day = and_(
        Consultation.reminder_24h_sent_at.is_(None),
        Consultation.scheduled_at > now + HOUR,
        Consultation.scheduled_at <= now + DAY,
    )
    due_hour = and_(
        Consultation.reminder_1h_sent_at.is_(None),
        Consultation.scheduled_at > now,
        Consultation.scheduled_at <= now + HOUR,
    )
    candidates = db.session.execute(
        select(Consultation.id, Consultation.scheduled_at)
        .where(Consultation.status == ConsultationStatus.SCHEDULED, or_(due_day, due_hour))
        .order_by(Consultation.scheduled_at)
    ).all()
    db.session.rollback()  # hold nothing while claiming one by one
    for consultation_id, scheduled_at in candidates:
        hour = scheduled_at <= now + HOUR
        try:
            if _claim(consultation_id, now, hour=hour):
                _notify(consultation_id, hour=hour)
                db.session.commit()
                if hour:
                    report.hour_before += 1
                else:
                    report.day_before += 1
            else:
                db.session.rollback()
        except Exception:
            db.session.rollback()
            log.exception("reminder for consultation %s failed; next run retries", consultation_id)
    if report.day_before or report.hour_before:
        log.info("reminders: %s", report)
    return report


def _claim(consultation_id: int, now: datetime, *, hour: bool) -> bool:
    column = Consultation.reminder_1h_sent_at if hour else Consultation.reminder_24h_sent_at
    window = (
        and_(Consultation.scheduled_at > now, Consultation.scheduled_at <= now + HOUR)
        if hour
        else and_(Consultation.scheduled_at > now + HOUR, Consultation.scheduled_at <= now + DAY)
    )
    result = db.session.execute(
        update(Consultation)
        .where(
            Consultation.id == consultation_id,
            Consultation.status == ConsultationStatus.SCHEDULED,
            column.is_(None),
            window,
        )
        .values({column.key: now})
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def _notify(consultation_id: int, *, hour: bool) -> None:
    c = db.session.execute(
        select(Consultation)
        .options(
            joinedload(Consultation.patient).joinedload(Patient.user),
            joinedload(Consultation.doctor).joinedload(Doctor.user),
        )
        .where(Consultation.id == consultation_id)
    ).scalar_one()
    kind = "consultation_reminder_1h" if hour else "consultation_reminder_24h"
    # The appointment time is in the key: a consultation moved to another time is reminded anew.
    stamp = c.scheduled_at.strftime("%Y%m%dT%H%M")
    prefix = "reminder1" if hour else "reminder24"
    patient_when = local_when(c.scheduled_at, c.patient.timezone)
    if hour:
        patient_text = _l(
            "Health Cloud: your consultation starts in less than an hour, on %(when)s "
            "(your local time). Join it from your cabinet.",
            when=patient_when,
        )
    else:
        patient_text = _l(
            "Health Cloud reminder: your consultation is on %(when)s (your local time).",
            when=patient_when,
        )
    notify_patient(c, kind, patient_text, dedupe_key=f"{prefix}:{c.public_id}:{stamp}")
    if c.doctor is not None:
        doctor_when = local_when(c.scheduled_at, c.doctor.timezone)
        if hour:
            doctor_text = _l(
                "Consultation with %(patient)s starts in less than an hour: %(when)s.",
                patient=c.patient.full_name,
                when=doctor_when,
            )
        else:
            doctor_text = _l(
                "Reminder: consultation with %(patient)s on %(when)s.",
                patient=c.patient.full_name,
                when=doctor_when,
            )
        # Staff read reminders in their cabinet; no SMS or e-mail for them.
        notify_staff(c, kind, doctor_text, sms=False, email=False)
