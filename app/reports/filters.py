"""A report's filters: parsed and checked from the query string, or refused with a message.

Periods are whole days in the viewer's time zone (Russia spans eleven): `date_from`..`date_to`
inclusive become the UTC moments [start, end) the columns are compared with. Centres, doctors
and imports come as public ids and are resolved here, so a query never sees an unknown one.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from flask_babel import gettext as _
from sqlalchemy import select

from app.boundary import BadParameter, parse_page
from app.dates import zone
from app.errors import DomainError
from app.extensions import db
from app.reports.labels import SLA_KINDS
from models import (
    ConsultationKind,
    ConsultationStatus,
    Doctor,
    MedicalCenter,
    OutboundChannel,
    OutboundStatus,
    ReferralImport,
    utcnow,
)

DEFAULT_PERIOD_DAYS = 30
MAX_PERIOD_DAYS = 366 * 10


class ReportError(DomainError):
    """The report's filters were refused; the message says which and why."""


COMMON_PARAMS = frozenset({"date_from", "date_to", "page"})
REPORT_PARAMS: dict[str, frozenset[str]] = {
    "dashboard": COMMON_PARAMS | {"centre"},
    "consultations": COMMON_PARAMS | {"centre", "doctor", "kind", "status"},
    "sla": COMMON_PARAMS | {"centre", "doctor", "kind", "scope"},
    "load": COMMON_PARAMS | {"centre", "doctor", "kind"},
    "cancellations": COMMON_PARAMS | {"centre", "doctor", "kind", "status"},
    "referrals": COMMON_PARAMS | {"import"},
    "outbox": COMMON_PARAMS | {"channel", "status"},
}
REPORT_STATUSES: dict[str, tuple[str, ...]] = {
    "consultations": tuple(s.value for s in ConsultationStatus),
    "cancellations": (ConsultationStatus.CANCELLED.value, ConsultationStatus.MISSED.value),
    "outbox": tuple(s.value for s in OutboundStatus),
}
REPORT_KINDS: dict[str, tuple[str, ...]] = {
    "sla": tuple(k.value for k in SLA_KINDS),
}
SCOPES = ("overdue", "all")


@dataclass(frozen=True)
class Filters:
    report: str
    tz: str
    date_from: date
    date_to: date
    centre_id: int | None = None
    centre: uuid.UUID | None = None
    doctor_id: int | None = None
    doctor: uuid.UUID | None = None
    kind: str | None = None
    status: str | None = None
    channel: str | None = None
    scope: str = "overdue"
    import_id: int | None = None
    import_public_id: uuid.UUID | None = None
    page: int = 1

    @property
    def start(self) -> datetime:
        return local_midnight(self.date_from, self.tz)

    @property
    def end(self) -> datetime:
        return local_midnight(self.date_to + timedelta(days=1), self.tz)

    def query_args(self, **overrides: Any) -> dict[str, str]:
        """The filters as query-string arguments (links to pages and exports keep them)."""
        args = {
            "date_from": self.date_from.isoformat(),
            "date_to": self.date_to.isoformat(),
            "centre": str(self.centre) if self.centre else None,
            "doctor": str(self.doctor) if self.doctor else None,
            "kind": self.kind,
            "status": self.status,
            "channel": self.channel,
            "scope": self.scope if self.report == "sla" else None,
            "import": str(self.import_public_id) if self.import_public_id else None,
        }
        args.update(overrides)
        allowed = REPORT_PARAMS.get(self.report, COMMON_PARAMS)
        return {k: str(v) for k, v in args.items() if v not in (None, "") and k in allowed}

    def audit_detail(self) -> dict[str, Any]:
        detail = self.query_args()
        detail["tz"] = self.tz
        return detail


def local_midnight(day: date, tz_name: str) -> datetime:
    return datetime.combine(day, time(0, 0), tzinfo=zone(tz_name)).astimezone(UTC)


def local_today(tz_name: str, now: datetime | None = None) -> date:
    return (now or utcnow()).astimezone(zone(tz_name)).date()


_DATE_FORMATS = ("%Y-%m-%d", "%d.%m.%Y")


def _parse_date(raw: str, label: str) -> date:
    for fmt in _DATE_FORMATS:
        try:
            return datetime.strptime(raw.strip(), fmt).date()
        except ValueError:
            continue
    raise ReportError(
        _("%(field)s: «%(value)s» is not a date (use DD.MM.YYYY).", field=label, value=raw[:40])
    )


def _unknown(label: str) -> ReportError:
    return ReportError(_("%(field)s: unknown value.", field=label))


def _resolve(model, raw: str, label: str) -> tuple[uuid.UUID, int]:
    """A row named by its public id in the query string: (public id, primary key)."""
    try:
        public_id = uuid.UUID(raw.strip())
    except ValueError:
        raise _unknown(label) from None
    pk = db.session.execute(
        select(model.id).where(model.public_id == public_id)
    ).scalar_one_or_none()
    if pk is None:
        raise _unknown(label)
    return public_id, pk


def _choice(value: str, allowed: Sequence[str], label: str) -> str:
    if value not in allowed:
        raise _unknown(label)
    return value


def parse_filters(
    report: str, args: Mapping[str, str], *, tz: str, now: datetime | None = None
) -> Filters:
    """The report's filters from a query string; a ReportError says what is wrong."""
    allowed = REPORT_PARAMS[report]
    unknown = sorted(k for k in args if k not in allowed)
    if unknown:
        raise ReportError(
            _("Unknown filter: %(names)s.", names=", ".join(n[:30] for n in unknown[:5]))
        )
    values = {k: (args.get(k) or "").strip() for k in allowed}
    today = local_today(tz, now)
    date_to = _parse_date(values["date_to"], _("Date to")) if values["date_to"] else today
    if values["date_from"]:
        date_from = _parse_date(values["date_from"], _("Date from"))
    else:
        date_from = date_to - timedelta(days=DEFAULT_PERIOD_DAYS - 1)
    if date_from > date_to:
        raise ReportError(_("The period starts after it ends."))
    if (date_to - date_from).days > MAX_PERIOD_DAYS:
        raise ReportError(_("The period is too long: at most ten years."))
    if date_from.year < 2000 or date_to.year > 2100:
        raise ReportError(_("The period must lie between 2000 and 2100."))
    filters = Filters(report=report, tz=tz, date_from=date_from, date_to=date_to)

    if values.get("page"):
        try:
            filters = replace(filters, page=parse_page(values["page"]))
        except BadParameter as exc:  # the rule every list follows (app/boundary.py)
            raise ReportError(str(exc)) from None
    if values.get("centre"):
        centre, centre_id = _resolve(MedicalCenter, values["centre"], _("Medical centre"))
        filters = replace(filters, centre=centre, centre_id=centre_id)
    if values.get("doctor"):
        doctor, doctor_id = _resolve(Doctor, values["doctor"], _("Doctor"))
        filters = replace(filters, doctor=doctor, doctor_id=doctor_id)
    if values.get("kind"):
        kinds = REPORT_KINDS.get(report, tuple(k.value for k in ConsultationKind))
        filters = replace(filters, kind=_choice(values["kind"], kinds, _("Kind")))
    if values.get("status"):
        statuses = REPORT_STATUSES.get(report, ())
        filters = replace(filters, status=_choice(values["status"], statuses, _("Status")))
    if values.get("channel"):
        channels = tuple(c.value for c in OutboundChannel)
        filters = replace(filters, channel=_choice(values["channel"], channels, _("Channel")))
    if values.get("scope"):
        filters = replace(filters, scope=_choice(values["scope"], SCOPES, _("List")))
    if values.get("import"):
        public_id, import_id = _resolve(ReferralImport, values["import"], _("Import"))
        filters = replace(filters, import_id=import_id, import_public_id=public_id)
    return filters


def filter_choices() -> dict[str, list[tuple[str, str]]]:
    """Centres and doctors for the filter lists (two small queries)."""
    centres = db.session.execute(
        select(MedicalCenter.public_id, MedicalCenter.name).order_by(MedicalCenter.name)
    ).all()
    doctors = db.session.execute(
        select(Doctor.public_id, Doctor.surname, Doctor.name, Doctor.patronymic).order_by(
            Doctor.surname, Doctor.name, Doctor.id
        )
    ).all()
    return {
        "centres": [(str(pid), name) for pid, name in centres],
        "doctors": [(str(pid), " ".join(p for p in (s, n, pa) if p)) for pid, s, n, pa in doctors],
    }
