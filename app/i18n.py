"""Language and time zone: Russian first, times shown in the viewer's own zone."""

from __future__ import annotations

from datetime import date, datetime
from functools import cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from flask import Flask, current_app, g
from flask_babel import format_date, format_datetime, get_timezone

# Russia's zones first (they are the service's users), labelled by their UTC offset.
RUSSIAN_TIMEZONES = [
    "Europe/Kaliningrad",
    "Europe/Moscow",
    "Europe/Samara",
    "Asia/Yekaterinburg",
    "Asia/Omsk",
    "Asia/Novosibirsk",
    "Asia/Krasnoyarsk",
    "Asia/Irkutsk",
    "Asia/Yakutsk",
    "Asia/Vladivostok",
    "Asia/Magadan",
    "Asia/Kamchatka",
]


# The zone names of the installed tz database, read once: listing them walks its folder on disk,
# and every page asks for the viewer's zone. An updated database needs a restart.
_zone_names = cache(available_timezones)


def valid_timezone(name: str | None) -> bool:
    if not name:
        return False
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return name in _zone_names()


def viewer_timezone() -> str:
    user = getattr(g, "user", None)
    tz = getattr(user, "timezone", None) if user is not None and user.is_authenticated else None
    return tz if valid_timezone(tz) else current_app.config["DEFAULT_TIMEZONE"]


def local_datetime(value: datetime | None, fmt: str = "medium") -> str:
    if value is None:
        return ""
    return format_datetime(value, fmt)


def local_date(value: date | None, fmt: str = "medium") -> str:
    return "" if value is None else format_date(value, fmt)


def timezone_name() -> str:
    return str(get_timezone())


def init_app(app: Flask) -> None:
    babel_config = app.extensions["babel"]
    babel_config.timezone_selector = viewer_timezone
    babel_config.default_timezone = app.config["DEFAULT_TIMEZONE"]
    app.jinja_env.filters["local_datetime"] = local_datetime
    app.jinja_env.filters["local_date"] = local_date
    app.jinja_env.globals["viewer_timezone"] = timezone_name
    # `|tojson` page configs (<script type="application/json">: the room's, the connection
    # check's) carry translated texts: UTF-8 as it is, not \uXXXX escapes three times the size
    # (the room's page weight, tests/e2e/test_light_pages.py). Still HTML-safe: <, >, & and '
    # are escaped by the filter itself.
    app.jinja_env.policies["json.dumps_kwargs"] = {
        **app.jinja_env.policies["json.dumps_kwargs"],
        "ensure_ascii": False,
    }
