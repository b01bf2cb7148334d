"""Dates within reason: how far ahead things are scheduled, which birth dates are real.

One rule each, used on every path that takes such a date: a doctor scheduling a consultation,
an administrator creating or editing a duty shift (up to SCHEDULE_HORIZON_DAYS ahead, never in
the past); registration, accounts created by staff or demo data, and referral table rows (a
birth date not in the future and not before EARLIEST_BIRTH_YEAR).

The checks return the message (or None) rather than raise: each area raises its own error type
with it (ConsultationError, ScheduleError, RegistrationError, a referral row's ValueError).

Time zones too: a stored moment is UTC; zone() is the one reading of a person's zone name
(an unknown or empty name falls back to DEFAULT_TIMEZONE), format_in_zone() shows a moment
on that person's clock and local_moment() turns a wall-clock time back into UTC.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel.dates import format_datetime as babel_format_datetime
from flask import current_app, has_app_context
from flask_babel import format_date, get_locale
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


# ---------------------------------------------------------------------------------------------
# Time zones
# ---------------------------------------------------------------------------------------------

FALLBACK_TIMEZONE = "Europe/Moscow"


def zone(name: str | None) -> ZoneInfo:
    """The zone of this name; an unknown or empty one is the service's DEFAULT_TIMEZONE."""
    try:
        return ZoneInfo(name or "")
    except (ZoneInfoNotFoundError, ValueError):
        default = FALLBACK_TIMEZONE
        if has_app_context():
            default = current_app.config.get("DEFAULT_TIMEZONE", FALLBACK_TIMEZONE)
        return ZoneInfo(default)


def zone_label(name: str | None) -> str:
    """The zone as a person picks it at registration («Москва (МСК)»), else its name."""
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


def local_moment(day: date, at: time, tz_name: str | None) -> datetime:
    """A wall-clock date and time in a zone as a UTC moment."""
    return datetime.combine(day, at, tzinfo=zone(tz_name)).astimezone(UTC)
