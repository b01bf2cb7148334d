"""Duty shifts and the bookable slots they generate."""

from __future__ import annotations

from datetime import timedelta

from flask_babel import lazy_gettext as _l

from app.errors import DomainError
from models import DutyShift, Slot

MAX_SHIFT_HOURS = 24


class ScheduleError(DomainError):
    pass


def validate_shift(shift: DutyShift) -> None:
    if shift.ends_at <= shift.starts_at:
        raise ScheduleError(_l("A shift must end after it starts."))
    if shift.ends_at - shift.starts_at > timedelta(hours=MAX_SHIFT_HOURS):
        raise ScheduleError(_l("A shift cannot be longer than 24 hours."))
    if not 5 <= (shift.slot_minutes or 0) <= 240:
        raise ScheduleError(_l("A slot must last from 5 to 240 minutes."))


def generate_slots(shift: DutyShift) -> list[Slot]:
    """Cut the shift into back-to-back slots; a trailing remainder shorter than a slot is unused."""
    validate_shift(shift)
    step = timedelta(minutes=shift.slot_minutes)
    slots: list[Slot] = []
    start = shift.starts_at
    while start + step <= shift.ends_at:
        slots.append(
            Slot(shift=shift, doctor_id=shift.doctor_id, starts_at=start, ends_at=start + step)
        )
        start += step
    return slots
