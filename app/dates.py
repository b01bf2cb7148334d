"""Dates within reason: how far ahead things are scheduled, which birth dates are real.

One rule each, used on every path that takes such a date: a doctor scheduling a consultation,
an administrator creating or editing a duty shift (up to SCHEDULE_HORIZON_DAYS ahead, never in
the past); registration, accounts created by staff or demo data, and referral table rows (a
birth date not in the future and not before EARLIEST_BIRTH_YEAR).

The checks return the message (or None) rather than raise: each area raises its own error type
with it (ConsultationError, ScheduleError, RegistrationError, a referral row's ValueError).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

from flask import current_app, has_app_context
from flask_babel import format_date
from flask_babel import lazy_gettext as _l
from flask_babel.speaklater import LazyString

EARLIEST_BIRTH_YEAR = 1900
DEFAULT_SCHEDULE_HORIZON_DAYS = 365  # a year ahead; SCHEDULE_HORIZON_DAYS overrides


def schedule_horizon() -> timedelta:
    days = DEFAULT_SCHEDULE_HORIZON_DAYS
    if has_app_context():
        days = int(current_app.config.get("SCHEDULE_HORIZON_DAYS") or days)
    return timedelta(days=days)


def latest_schedulable(now: datetime) -> datetime:
    return now + schedule_horizon()


def too_far_ahead(last: datetime) -> LazyString:
    return _l(
        "This date is too far ahead: the latest possible date is %(date)s.",
        date=format_date(last.date(), "d MMMM y"),
    )


def schedule_error(starts_at: datetime, ends_at: datetime, now: datetime) -> LazyString | None:
    """Why [starts_at, ends_at) cannot be scheduled now, or None: not in the past, and over
    within the horizon."""
    if starts_at <= now:
        return _l("This date and time are in the past.")
    last = latest_schedulable(now)
    if ends_at > last:
        return too_far_ahead(last)
    return None


def birth_date_error(born: date | None, today: date | None = None) -> LazyString | None:
    """Why this is not a real date of birth, or None."""
    if born is None:
        return _l("Enter a real date of birth.")
    if born > (today or date.today()):
        return _l("The date of birth cannot be in the future.")
    if born.year < EARLIEST_BIRTH_YEAR:
        return _l("The date of birth cannot be earlier than %(year)d.", year=EARLIEST_BIRTH_YEAR)
    return None
