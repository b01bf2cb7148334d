"""Managers' reports: the figures the service accounts for, their exports and the dashboard.

Every figure is an aggregate computed by the database (GROUP BY / CASE), every list a page
(LIMIT / OFFSET): a page sends the same few statements whatever the size of the tables.

Periods are whole days in the viewer's time zone (Russia spans eleven): `date_from`..`date_to`
inclusive become the UTC moments [start, end) the columns are compared with.

Service level (issue 6): an application (centre request, or a referral once the patient has
uploaded the documents) is *submitted* at `submitted_at`; the promise recorded with it is
`due_by` (3 days for a centre application, 4 for a referral: app/consultations.py). The doctor
*answers* by scheduling it (`scheduled_set_at`) or, less often, by declining it (`rejected_at`).
A request for more documents does not stop the clock. Outcomes:

  in_time    answered at or before due_by
  late       answered after due_by
  overdue    not answered and due_by passed while it waited (still waiting now, or withdrawn
             by the patient only after the due moment)
  waiting    not answered, still waiting, not due yet — not counted in the share
  withdrawn  cancelled before due_by without an answer — not counted in the share

share within time = in_time / (in_time + late + overdue).

Personal data: the reports count consultations and never name the patient. Only the referral
progress (which row became which patient) and the outbox failures (which address bounced) carry
a patient's name, phone or address, and only for PERSONAL_DATA_ROLES (Manager, Admin): the
managers run the referral pathway and resend failed messages, so they see these on their own
screens already. Anyone else given a report would get the same rows without those columns.

Exports stream: CSV is written while the rows are read (a server-side cursor on PostgreSQL);
XLSX goes through openpyxl's write-only workbook into a temporary file that is then sent in
chunks. Text cells that a spreadsheet could take for a formula (= + - @, tab, CR) are written
as text. Every export is audited with its filters and row count.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
import tempfile
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from markupsafe import Markup, escape
from sqlalchemy import (
    ColumnElement,
    DateTime,
    Float,
    Select,
    String,
    and_,
    case,
    cast,
    exists,
    func,
    literal,
    or_,
    select,
    type_coerce,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import aliased
from sqlalchemy.sql.functions import FunctionElement

from app.audit import audit
from app.boundary import BadParameter, parse_page
from app.consultations import APPLICATION_DUE, REFERRAL_DUE, zone
from app.errors import DomainError
from app.extensions import db
from app.permissions import ADMIN, MANAGER
from app.roles import role_names
from models import (
    AuditOutcome,
    Consultation,
    ConsultationKind,
    ConsultationStatus,
    Disease,
    Doctor,
    MedicalCenter,
    OblakoUser,
    OutboundChannel,
    OutboundMessage,
    OutboundStatus,
    Patient,
    ReferralImport,
    ReferralImportRow,
    UTCDateTime,
    utcnow,
)

REPORT_ROLES = frozenset({MANAGER, ADMIN})
PERSONAL_DATA_ROLES = frozenset({MANAGER, ADMIN})
PAGE_SIZE = 50
DEFAULT_PERIOD_DAYS = 30
MAX_PERIOD_DAYS = 366 * 10
DASHBOARD_WEEKS = 12
XLSX_MAX_ROWS = 1_048_576  # Excel's limit per sheet, the header included
STREAM_CHUNK = 1000

C = Consultation


class ReportError(DomainError):
    """The report's filters were refused; the message says which and why."""


def may_see_reports(user) -> bool:
    return bool(REPORT_ROLES & role_names(user))


def may_see_personal_data(user) -> bool:
    return bool(PERSONAL_DATA_ROLES & role_names(user))


# ---------------------------------------------------------------------------------------------
# Labels
# ---------------------------------------------------------------------------------------------

STATUS_LABELS = {
    ConsultationStatus.AWAITING_DOCUMENTS: _l("Awaiting documents"),
    ConsultationStatus.REQUESTED: _l("Requested"),
    ConsultationStatus.NEEDS_DOCUMENTS: _l("Needs documents"),
    ConsultationStatus.SCHEDULED: _l("Scheduled"),
    ConsultationStatus.IN_PROGRESS: _l("In progress"),
    ConsultationStatus.COMPLETED: _l("Completed"),
    ConsultationStatus.REJECTED: _l("Rejected"),
    ConsultationStatus.CANCELLED: _l("Cancelled"),
    ConsultationStatus.MISSED: _l("Missed"),
}
KIND_LABELS = {
    ConsultationKind.CENTRE_REQUEST: _l("Centre request"),
    ConsultationKind.DUTY: _l("Duty doctor"),
    ConsultationKind.REFERRAL: _l("Referral"),
}
SLA_KINDS = (ConsultationKind.CENTRE_REQUEST, ConsultationKind.REFERRAL)
PROMISED = {
    ConsultationKind.CENTRE_REQUEST: APPLICATION_DUE,
    ConsultationKind.REFERRAL: REFERRAL_DUE,
}
OUTCOMES = ("in_time", "late", "overdue", "waiting", "withdrawn")
OUTCOME_LABELS = {
    "in_time": _l("Within the promised time"),
    "late": _l("Scheduled late"),
    "overdue": _l("Overdue, not scheduled"),
    "waiting": _l("Waiting, not due yet"),
    "withdrawn": _l("Withdrawn before the due time"),
}
CANCEL_BY_LABELS = {
    "patient": _l("Patient"),
    "staff": _l("Clinic staff"),
    "system": _l("System"),
    "missed": _l("Did not take place"),
}
CHANNEL_LABELS = {OutboundChannel.SMS: _l("SMS"), OutboundChannel.EMAIL: _l("E-mail")}
OUTBOUND_STATUS_LABELS = {
    OutboundStatus.QUEUED: _l("Queued"),
    OutboundStatus.SENT: _l("Sent"),
    OutboundStatus.FAILED: _l("Failed"),
}
ROW_OUTCOME_LABELS = {
    "pending": _l("Waiting for import"),
    "invalid": _l("Error"),
    "imported": _l("Account created"),
    "linked": _l("Linked to a registered patient"),
}
LOAD_STATUSES = (
    ConsultationStatus.SCHEDULED,
    ConsultationStatus.IN_PROGRESS,
    ConsultationStatus.COMPLETED,
    ConsultationStatus.CANCELLED,
    ConsultationStatus.MISSED,
)
QUEUE_STATUSES = (ConsultationStatus.REQUESTED, ConsultationStatus.NEEDS_DOCUMENTS)

REPORT_TITLES = {
    "consultations": _l("Consultations"),
    "sla": _l("Service level"),
    "load": _l("Doctor load"),
    "cancellations": _l("Cancellations and missed consultations"),
    "referrals": _l("Referral imports"),
    "outbox": _l("Outbound messages"),
}


def labels(mapping: Mapping[str, Any]) -> dict[str, str]:
    """The label dictionary rendered once in the current locale (exports look up per row)."""
    return {key: str(value) for key, value in mapping.items()}


# ---------------------------------------------------------------------------------------------
# Filters
# ---------------------------------------------------------------------------------------------

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


def _parse_uuid(raw: str, label: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw.strip())
    except ValueError:
        raise ReportError(_("%(field)s: unknown value.", field=label)) from None


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
        public_id = _parse_uuid(values["centre"], _("Medical centre"))
        centre_id = db.session.execute(
            select(MedicalCenter.id).where(MedicalCenter.public_id == public_id)
        ).scalar_one_or_none()
        if centre_id is None:
            raise ReportError(_("%(field)s: unknown value.", field=_("Medical centre")))
        filters = replace(filters, centre=public_id, centre_id=centre_id)
    if values.get("doctor"):
        public_id = _parse_uuid(values["doctor"], _("Doctor"))
        doctor_id = db.session.execute(
            select(Doctor.id).where(Doctor.public_id == public_id)
        ).scalar_one_or_none()
        if doctor_id is None:
            raise ReportError(_("%(field)s: unknown value.", field=_("Doctor")))
        filters = replace(filters, doctor=public_id, doctor_id=doctor_id)
    if values.get("kind"):
        kinds = REPORT_KINDS.get(report, tuple(k.value for k in ConsultationKind))
        if values["kind"] not in kinds:
            raise ReportError(_("%(field)s: unknown value.", field=_("Kind")))
        filters = replace(filters, kind=values["kind"])
    if values.get("status"):
        if values["status"] not in REPORT_STATUSES.get(report, ()):
            raise ReportError(_("%(field)s: unknown value.", field=_("Status")))
        filters = replace(filters, status=values["status"])
    if values.get("channel"):
        if values["channel"] not in tuple(c.value for c in OutboundChannel):
            raise ReportError(_("%(field)s: unknown value.", field=_("Channel")))
        filters = replace(filters, channel=values["channel"])
    if values.get("scope"):
        if values["scope"] not in SCOPES:
            raise ReportError(_("%(field)s: unknown value.", field=_("List")))
        filters = replace(filters, scope=values["scope"])
    if values.get("import"):
        public_id = _parse_uuid(values["import"], _("Import"))
        import_id = db.session.execute(
            select(ReferralImport.id).where(ReferralImport.public_id == public_id)
        ).scalar_one_or_none()
        if import_id is None:
            raise ReportError(_("%(field)s: unknown value.", field=_("Import")))
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


# ---------------------------------------------------------------------------------------------
# SQL helpers
# ---------------------------------------------------------------------------------------------


class seconds_between(FunctionElement):
    """(end - start) in seconds, on SQLite and PostgreSQL."""

    type = Float()
    inherit_cache = True
    name = "seconds_between"


@compiles(seconds_between)
def _seconds_sqlite(element, compiler, **kw) -> str:
    start, end = list(element.clauses)
    return (
        f"((julianday({compiler.process(end, **kw)}) - "
        f"julianday({compiler.process(start, **kw)})) * 86400.0)"
    )


@compiles(seconds_between, "postgresql")
def _seconds_postgresql(element, compiler, **kw) -> str:
    start, end = list(element.clauses)
    return f"EXTRACT(EPOCH FROM ({compiler.process(end, **kw)} - {compiler.process(start, **kw)}))"


def _name(surname, name, patronymic) -> ColumnElement[str]:
    """A person's full name in SQL ('' for a missing outer-joined row)."""
    return func.coalesce(func.trim(surname + " " + name + " " + patronymic), "")


DOCTOR_NAME = _name(Doctor.surname, Doctor.name, Doctor.patronymic)
CENTRE_NAME = func.coalesce(MedicalCenter.name, "")


def _with_people(stmt: Select) -> Select:
    return stmt.outerjoin(MedicalCenter, MedicalCenter.id == C.center_id).outerjoin(
        Doctor, Doctor.id == C.doctor_id
    )


def _in_period(column, f: Filters) -> ColumnElement[bool]:
    return and_(column >= f.start, column < f.end)


def _scope(f: Filters) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if f.centre_id is not None:
        conditions.append(C.center_id == f.centre_id)
    if f.doctor_id is not None:
        conditions.append(C.doctor_id == f.doctor_id)
    if f.kind:
        conditions.append(C.kind == f.kind)
    return conditions


def _pages(total: int, page: int, size: int = PAGE_SIZE) -> tuple[int, int]:
    pages = max(1, math.ceil(total / size))
    return min(max(1, page), pages), pages


@dataclass
class Page:
    rows: list[Any]
    page: int
    pages: int
    total: int


# ---------------------------------------------------------------------------------------------
# 1. Consultations by period, centre, doctor, kind and status
# ---------------------------------------------------------------------------------------------


def _consultation_conditions(f: Filters) -> list[ColumnElement[bool]]:
    conditions = [_in_period(C.created_at, f), *_scope(f)]
    if f.status:
        conditions.append(C.status == f.status)
    return conditions


@dataclass
class ConsultationsReport:
    by_kind_status: dict[tuple[str, str], int]
    total: int
    page: Page

    def count(self, kind: str, status: str) -> int:
        return self.by_kind_status.get((kind, status), 0)

    def kind_total(self, kind: str) -> int:
        return sum(n for (k, _s), n in self.by_kind_status.items() if k == kind)

    def status_total(self, status: str) -> int:
        return sum(n for (_k, s), n in self.by_kind_status.items() if s == status)


def _consultation_columns() -> list:
    return [
        C.public_id,
        C.kind,
        C.status,
        CENTRE_NAME,
        DOCTOR_NAME,
        func.coalesce(Disease.icd10_code, ""),
        C.created_at,
        C.submitted_at,
        C.due_by,
        C.scheduled_at,
        C.completed_at,
    ]


def _consultation_rows(f: Filters) -> Select:
    stmt = select(*_consultation_columns()).select_from(C)
    stmt = _with_people(stmt).outerjoin(Disease, Disease.id == C.disease_id)
    return stmt.where(*_consultation_conditions(f))


def consultations_report(f: Filters) -> ConsultationsReport:
    counts = db.session.execute(
        select(C.kind, C.status, func.count())
        .where(*_consultation_conditions(f))
        .group_by(C.kind, C.status)
    ).all()
    by = {(k, s): int(n) for k, s, n in counts}
    total = sum(by.values())
    page, pages = _pages(total, f.page)
    rows = db.session.execute(
        _consultation_rows(f)
        .order_by(C.created_at.desc(), C.id.desc())
        .limit(PAGE_SIZE)
        .offset((page - 1) * PAGE_SIZE)
    ).all()
    return ConsultationsReport(by, total, Page(list(rows), page, pages, total))


# ---------------------------------------------------------------------------------------------
# 2. Service level: application → scheduling against the promise
# ---------------------------------------------------------------------------------------------


def _answered_at():
    return func.coalesce(C.scheduled_set_at, C.rejected_at)


def sla_outcome(now: datetime) -> ColumnElement[str]:
    answered = _answered_at()
    waiting = C.status.in_([s.value for s in QUEUE_STATUSES])
    return case(
        (and_(answered.is_not(None), answered <= C.due_by), literal("in_time")),
        (answered.is_not(None), literal("late")),
        (and_(waiting, C.due_by < now), literal("overdue")),
        (waiting, literal("waiting")),
        (
            and_(C.status == ConsultationStatus.CANCELLED.value, C.cancelled_at > C.due_by),
            literal("overdue"),
        ),
        else_=literal("withdrawn"),
    )


def _sla_conditions(f: Filters) -> list[ColumnElement[bool]]:
    return [
        C.kind.in_([k.value for k in SLA_KINDS]),
        C.due_by.is_not(None),
        _in_period(C.submitted_at, f),
        *_scope(f),
    ]


@dataclass
class SlaLine:
    kind: str | None  # None: all kinds together
    counts: dict[str, int] = field(default_factory=dict)
    answer_seconds: float = 0.0
    answered: int = 0

    @property
    def counted(self) -> int:
        return sum(self.counts.get(o, 0) for o in ("in_time", "late", "overdue"))

    @property
    def share(self) -> float | None:
        return None if not self.counted else 100.0 * self.counts.get("in_time", 0) / self.counted

    @property
    def average_hours(self) -> float | None:
        return None if not self.answered else self.answer_seconds / self.answered / 3600

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def promised_days(self) -> int | None:
        promise = PROMISED.get(self.kind) if self.kind else None
        return promise.days if promise else None


@dataclass
class SlaReport:
    lines: list[SlaLine]
    overall: SlaLine
    page: Page
    now: datetime


def _sla_list_columns(outcome) -> list:
    return [
        C.public_id,
        C.kind,
        C.status,
        CENTRE_NAME,
        DOCTOR_NAME,
        C.submitted_at,
        C.due_by,
        _answered_at(),
        outcome,
    ]


def _sla_rows(f: Filters, now: datetime) -> Select:
    outcome = sla_outcome(now)
    stmt = _with_people(select(*_sla_list_columns(outcome)).select_from(C)).where(
        *_sla_conditions(f)
    )
    if f.scope == "overdue":
        stmt = stmt.where(outcome.in_(["late", "overdue"]))
    return stmt


def sla_report(f: Filters, now: datetime | None = None) -> SlaReport:
    now = now or utcnow()
    outcome = sla_outcome(now)
    answered = _answered_at()
    seconds = seconds_between(C.submitted_at, answered)
    rows = db.session.execute(
        select(
            C.kind,
            outcome.label("outcome"),
            func.count(),
            func.coalesce(func.sum(seconds), 0.0),
            func.count(answered),
        )
        .where(*_sla_conditions(f))
        .group_by(C.kind, outcome)
    ).all()
    by_kind = {k.value: SlaLine(k.value) for k in SLA_KINDS if not f.kind or f.kind == k.value}
    overall = SlaLine(None)
    for kind, out, n, secs, answered_n in rows:
        for line in (by_kind.setdefault(kind, SlaLine(kind)), overall):
            line.counts[out] = line.counts.get(out, 0) + int(n)
            line.answer_seconds += float(secs or 0)
            line.answered += int(answered_n)
    listed = (
        overall.total
        if f.scope == "all"
        else sum(overall.counts.get(o, 0) for o in ("late", "overdue"))
    )
    page, pages = _pages(listed, f.page)
    items = db.session.execute(
        _sla_rows(f, now)
        .order_by(C.due_by.asc(), C.id.asc())
        .limit(PAGE_SIZE)
        .offset((page - 1) * PAGE_SIZE)
    ).all()
    return SlaReport(list(by_kind.values()), overall, Page(list(items), page, pages, listed), now)


def _aware(value: datetime | None) -> datetime | None:
    """Exports read timestamps without the UTC column type: SQLite's come back naive (UTC)."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def delay_hours(due_by: datetime | None, answered_at: datetime | None, now: datetime) -> float:
    """How far past the promise an application went (0 when within it)."""
    if due_by is None:
        return 0.0
    due_by, answered_at = _aware(due_by), _aware(answered_at)
    late = ((answered_at or now) - due_by).total_seconds() / 3600
    return round(max(late, 0.0), 1)


# ---------------------------------------------------------------------------------------------
# 3. Doctor load: consultations per doctor in the period, by status
# ---------------------------------------------------------------------------------------------


def _load_statement(f: Filters) -> Select:
    sums = [func.sum(case((C.status == s.value, 1), else_=0)).label(s.value) for s in LOAD_STATUSES]
    total = func.count(C.id)
    conditions = [_in_period(C.scheduled_at, f), C.doctor_id.is_not(None), *_scope(f)]
    return (
        select(Doctor.public_id, DOCTOR_NAME, CENTRE_NAME, *sums, total.label("total"))
        .select_from(C)
        .join(Doctor, Doctor.id == C.doctor_id)
        .outerjoin(MedicalCenter, MedicalCenter.id == Doctor.center_id)
        .where(*conditions)
        .group_by(
            Doctor.id,
            Doctor.public_id,
            Doctor.surname,
            Doctor.name,
            Doctor.patronymic,
            MedicalCenter.name,
        )
    )


def load_report(f: Filters) -> Page:
    stmt = _load_statement(f)
    total = int(db.session.execute(select(func.count()).select_from(stmt.subquery())).scalar_one())
    page, pages = _pages(total, f.page)
    rows = db.session.execute(
        stmt.order_by(func.count(C.id).desc(), Doctor.surname, Doctor.id)
        .limit(PAGE_SIZE)
        .offset((page - 1) * PAGE_SIZE)
    ).all()
    return Page(list(rows), page, pages, total)


# ---------------------------------------------------------------------------------------------
# 4. Cancellations and missed consultations
# ---------------------------------------------------------------------------------------------

CancelledBy = aliased(OblakoUser)


def _cancelled_by():
    by_patient = exists().where(Patient.user_id == C.cancelled_by_id)
    return case(
        (C.status == ConsultationStatus.MISSED.value, literal("missed")),
        (C.cancelled_by_id.is_(None), literal("system")),
        (by_patient, literal("patient")),
        else_=literal("staff"),
    )


def _cancellation_conditions(f: Filters) -> list[ColumnElement[bool]]:
    cancelled = and_(C.status == ConsultationStatus.CANCELLED.value, _in_period(C.cancelled_at, f))
    missed = and_(C.status == ConsultationStatus.MISSED.value, _in_period(C.missed_at, f))
    conditions = [or_(cancelled, missed), *_scope(f)]
    if f.status:
        conditions.append(C.status == f.status)
    return conditions


def _cancellation_rows(f: Filters) -> Select:
    who = _cancelled_by()
    # Staff are named (who cancelled on the clinic's side); a patient never is.
    staff_name = case(
        (who == "staff", func.trim(CancelledBy.last_name + " " + CancelledBy.first_name)),
        else_=literal(""),
    )
    stmt = (
        select(
            C.public_id,
            C.kind,
            C.status,
            CENTRE_NAME,
            DOCTOR_NAME,
            C.scheduled_at,
            func.coalesce(C.cancelled_at, C.missed_at),
            who,
            func.coalesce(staff_name, ""),
            C.cancel_reason,
        )
        .select_from(C)
        .outerjoin(CancelledBy, CancelledBy.id == C.cancelled_by_id)
    )
    return _with_people(stmt).where(*_cancellation_conditions(f))


@dataclass
class CancellationsReport:
    by_who: dict[str, int]
    by_kind: dict[str, int]
    total: int
    page: Page


def cancellations_report(f: Filters) -> CancellationsReport:
    who = _cancelled_by()
    counts = db.session.execute(
        select(who, C.kind, func.count()).where(*_cancellation_conditions(f)).group_by(who, C.kind)
    ).all()
    by_who: dict[str, int] = {}
    by_kind: dict[str, int] = {}
    for w, k, n in counts:
        by_who[w] = by_who.get(w, 0) + int(n)
        by_kind[k] = by_kind.get(k, 0) + int(n)
    total = sum(by_who.values())
    page, pages = _pages(total, f.page)
    rows = db.session.execute(
        _cancellation_rows(f)
        .order_by(func.coalesce(C.cancelled_at, C.missed_at).desc(), C.id.desc())
        .limit(PAGE_SIZE)
        .offset((page - 1) * PAGE_SIZE)
    ).all()
    return CancellationsReport(by_who, by_kind, total, Page(list(rows), page, pages, total))


# ---------------------------------------------------------------------------------------------
# 5. Referral imports and each row's progress
# ---------------------------------------------------------------------------------------------

RowPatient = aliased(Patient)
RowUser = aliased(OblakoUser)
RowConsultation = aliased(Consultation)
DONE_ROW_OUTCOMES = ("imported", "linked")


def _row_joins(stmt: Select) -> Select:
    """A row → its patient, the patient's account, and its consultation (the one the import
    recorded in the row: also when an earlier row's active consultation was reused)."""
    return (
        stmt.outerjoin(RowPatient, RowPatient.id == ReferralImportRow.patient_id)
        .outerjoin(RowUser, RowUser.id == RowPatient.user_id)
        .outerjoin(
            RowConsultation,
            RowConsultation.id == ReferralImportRow.data["consultation_id"].as_integer(),
        )
    )


def _activated():
    return and_(RowUser.last_login.is_not(None), RowUser.must_change_password.is_(False))


def _documents_uploaded():
    return RowConsultation.submitted_at.is_not(None)


def _progress_sums() -> list:
    def n(condition) -> Any:
        return func.sum(case((condition, 1), else_=0))

    return [
        func.count(ReferralImportRow.id).label("rows"),
        n(ReferralImportRow.outcome.in_(DONE_ROW_OUTCOMES)).label("imported"),
        n(ReferralImportRow.outcome == "invalid").label("invalid"),
        n(_activated()).label("activated"),
        n(_documents_uploaded()).label("documents"),
        n(RowConsultation.scheduled_set_at.is_not(None)).label("scheduled"),
        n(RowConsultation.completed_at.is_not(None)).label("completed"),
    ]


def _import_conditions(f: Filters) -> list[ColumnElement[bool]]:
    if f.import_id is not None:
        return [ReferralImport.id == f.import_id]
    return [_in_period(ReferralImport.created_at, f)]


def referrals_report(f: Filters) -> Page:
    conditions = _import_conditions(f)
    total = int(
        db.session.execute(
            select(func.count()).select_from(ReferralImport).where(*conditions)
        ).scalar_one()
    )
    page, pages = _pages(total, f.page)
    ids = select(ReferralImport.id).where(*conditions)
    ids = ids.order_by(ReferralImport.created_at.desc(), ReferralImport.id.desc())
    page_ids = ids.limit(PAGE_SIZE).offset((page - 1) * PAGE_SIZE).subquery()
    stmt = (
        select(
            ReferralImport.public_id,
            ReferralImport.original_name,
            ReferralImport.created_at,
            ReferralImport.status,
            *_progress_sums(),
        )
        .select_from(ReferralImport)
        .join(page_ids, page_ids.c.id == ReferralImport.id)
        .outerjoin(ReferralImportRow, ReferralImportRow.import_id == ReferralImport.id)
    )
    stmt = _row_joins(stmt).group_by(
        ReferralImport.id,
        ReferralImport.public_id,
        ReferralImport.original_name,
        ReferralImport.created_at,
        ReferralImport.status,
    )
    rows = db.session.execute(
        stmt.order_by(ReferralImport.created_at.desc(), ReferralImport.id.desc())
    ).all()
    return Page(list(rows), page, pages, total)


def _referral_row_columns(personal: bool) -> list:
    columns: list = [
        ReferralImport.original_name,
        ReferralImport.created_at,
        ReferralImportRow.row_number,
    ]
    if personal:
        columns += [
            func.coalesce(_name(RowPatient.surname, RowPatient.name, RowPatient.patronymic), ""),
            func.coalesce(RowPatient.phone, ""),
        ]
    columns += [
        ReferralImportRow.outcome,
        _activated(),
        _documents_uploaded(),
        RowConsultation.scheduled_at,
        RowConsultation.completed_at,
        RowConsultation.status,
    ]
    return columns


def _referral_rows(f: Filters, personal: bool) -> Select:
    stmt = (
        select(*_referral_row_columns(personal))
        .select_from(ReferralImportRow)
        .join(ReferralImport, ReferralImport.id == ReferralImportRow.import_id)
    )
    return _row_joins(stmt).where(*_import_conditions(f))


def referral_rows_page(f: Filters, *, personal: bool) -> Page:
    """One import's rows (f.import_id is set) with their progress, a page at a time."""
    total = int(
        db.session.execute(
            select(func.count())
            .select_from(ReferralImportRow)
            .where(ReferralImportRow.import_id == f.import_id)
        ).scalar_one()
    )
    page, pages = _pages(total, f.page)
    rows = db.session.execute(
        _referral_rows(f, personal)
        .order_by(ReferralImportRow.row_number)
        .limit(PAGE_SIZE)
        .offset((page - 1) * PAGE_SIZE)
    ).all()
    return Page(list(rows), page, pages, total)


# ---------------------------------------------------------------------------------------------
# 6. Outbox delivery
# ---------------------------------------------------------------------------------------------


def _outbox_conditions(f: Filters) -> list[ColumnElement[bool]]:
    conditions = [_in_period(OutboundMessage.created_at, f)]
    if f.channel:
        conditions.append(OutboundMessage.channel == f.channel)
    if f.status:
        conditions.append(OutboundMessage.status == f.status)
    return conditions


@dataclass
class OutboxReport:
    counts: dict[tuple[str, str], int]
    failures: Page

    def count(self, channel: str, status: str) -> int:
        return self.counts.get((channel, status), 0)

    def channel_total(self, channel: str) -> int:
        return sum(n for (c, _s), n in self.counts.items() if c == channel)


def _outbox_rows(f: Filters, personal: bool) -> Select:
    columns: list = [OutboundMessage.created_at, OutboundMessage.channel]
    if personal:
        columns.append(OutboundMessage.recipient)
    columns += [
        OutboundMessage.status,
        OutboundMessage.attempts,
        OutboundMessage.sent_at,
        OutboundMessage.delivered_via,
        OutboundMessage.last_error,
    ]
    return select(*columns).where(*_outbox_conditions(f))


def outbox_report(f: Filters, *, personal: bool) -> OutboxReport:
    counts = db.session.execute(
        select(OutboundMessage.channel, OutboundMessage.status, func.count())
        .where(*_outbox_conditions(f))
        .group_by(OutboundMessage.channel, OutboundMessage.status)
    ).all()
    by = {(c, s): int(n) for c, s, n in counts}
    failed = sum(n for (_c, s), n in by.items() if s == OutboundStatus.FAILED.value)
    if f.status and f.status != OutboundStatus.FAILED.value:
        failed = 0
    page, pages = _pages(failed, f.page)
    rows = db.session.execute(
        _outbox_rows(f, personal)
        .where(OutboundMessage.status == OutboundStatus.FAILED.value)
        .order_by(OutboundMessage.created_at.desc(), OutboundMessage.id.desc())
        .limit(PAGE_SIZE)
        .offset((page - 1) * PAGE_SIZE)
    ).all()
    return OutboxReport(by, Page(list(rows), page, pages, failed))


# ---------------------------------------------------------------------------------------------
# Exports
# ---------------------------------------------------------------------------------------------

# A cell starting with one of these is a formula (or becomes one) in a spreadsheet.
DANGEROUS_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
# Characters XML 1.0 (and so XLSX) cannot carry: dropped rather than failing mid-export.
_ILLEGAL_XML = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")
CSV_DELIMITER = ";"  # what a Russian-locale spreadsheet expects (the comma is the decimal mark)


@dataclass(frozen=True)
class ExportColumn:
    label: Any  # a lazy string: rendered once per export
    kind: str = "text"  # text | number | datetime | yesno


@dataclass
class Export:
    """One report's rows for a file: headers, the statement and the per-row conversion."""

    key: str
    title: str
    columns: list[ExportColumn]
    statement: Select
    convert: Callable[[Sequence[Any]], list[Any]]
    period: tuple[datetime, datetime] | None = None


def consultation_number(public_id: uuid.UUID | str | None) -> str:
    return "" if public_id is None else f"№{str(public_id)[:8]}"


def build_export(report: str, f: Filters, *, user, now: datetime | None = None) -> Export:
    """The export of one report with the viewer's filters; personal columns per the viewer."""
    export = _build_export(report, f, user=user, now=now)
    export.period = (f.start, f.end)
    return export


def _build_export(report: str, f: Filters, *, user, now: datetime | None = None) -> Export:
    now = now or utcnow()
    personal = may_see_personal_data(user)
    kinds, statuses = labels(KIND_LABELS), labels(STATUS_LABELS)
    yes, no = _("Yes"), _("No")
    title = str(REPORT_TITLES[report])
    col = ExportColumn

    if report == "consultations":
        columns = [
            col(_l("Number")),
            col(_l("Kind")),
            col(_l("Status")),
            col(_l("Medical centre")),
            col(_l("Doctor")),
            col(_l("ICD-10")),
            col(_l("Created"), "datetime"),
            col(_l("Submitted"), "datetime"),
            col(_l("Due by"), "datetime"),
            col(_l("Scheduled for"), "datetime"),
            col(_l("Completed"), "datetime"),
        ]

        def convert(r: Sequence[Any]) -> list[Any]:
            return [
                r[0], kinds.get(r[1], r[1]), statuses.get(r[2], r[2]),
                r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10],
            ]  # fmt: skip

        return Export(report, title, columns, _consultation_rows(f).order_by(C.id), convert)

    if report == "sla":
        outcomes = labels(OUTCOME_LABELS)
        columns = [
            col(_l("Number")),
            col(_l("Kind")),
            col(_l("Status")),
            col(_l("Medical centre")),
            col(_l("Doctor")),
            col(_l("Submitted"), "datetime"),
            col(_l("Due by"), "datetime"),
            col(_l("Answered"), "datetime"),
            col(_l("Outcome")),
            col(_l("Delay, hours"), "number"),
        ]

        def convert(r: Sequence[Any]) -> list[Any]:
            return [
                r[0], kinds.get(r[1], r[1]), statuses.get(r[2], r[2]), r[3], r[4],
                r[5], r[6], r[7], outcomes.get(r[8], r[8]), round(max(float(r[9] or 0), 0), 1),
            ]  # fmt: skip

        # The delay is computed by the database: a CSV gets the timestamps as text.
        late = seconds_between(C.due_by, func.coalesce(_answered_at(), literal(now, UTCDateTime())))
        stmt = _sla_rows(f, now).add_columns(late / 3600.0).order_by(C.due_by, C.id)
        return Export(report, title, columns, stmt, convert)

    if report == "load":
        columns = [
            col(_l("Doctor")),
            col(_l("Medical centre")),
            *[col(STATUS_LABELS[s], "number") for s in LOAD_STATUSES],
            col(_l("Total"), "number"),
        ]

        def convert(r: Sequence[Any]) -> list[Any]:
            return [r[1], r[2], *(int(v or 0) for v in r[3:])]

        stmt = _load_statement(f).order_by(func.count(C.id).desc(), Doctor.surname, Doctor.id)
        return Export(report, title, columns, stmt, convert)

    if report == "cancellations":
        who_labels = labels(CANCEL_BY_LABELS)
        columns = [
            col(_l("Number")),
            col(_l("Kind")),
            col(_l("Status")),
            col(_l("Medical centre")),
            col(_l("Doctor")),
            col(_l("Scheduled for"), "datetime"),
            col(_l("Cancelled or missed"), "datetime"),
            col(_l("Who")),
            col(_l("Staff member")),
            col(_l("Reason")),
        ]

        def convert(r: Sequence[Any]) -> list[Any]:
            return [
                r[0], kinds.get(r[1], r[1]), statuses.get(r[2], r[2]), r[3], r[4],
                r[5], r[6], who_labels.get(r[7], r[7]), r[8], r[9],
            ]  # fmt: skip

        return Export(report, title, columns, _cancellation_rows(f).order_by(C.id), convert)

    if report == "referrals":
        outcomes = labels(ROW_OUTCOME_LABELS)
        columns = [col(_l("File")), col(_l("Uploaded at"), "datetime"), col(_l("Row"), "number")]
        if personal:
            columns += [col(_l("Patient")), col(_l("Phone"))]
        columns += [
            col(_l("Outcome")),
            col(_l("Account activated"), "yesno"),
            col(_l("Documents uploaded"), "yesno"),
            col(_l("Scheduled for"), "datetime"),
            col(_l("Completed"), "datetime"),
            col(_l("Consultation status")),
        ]
        n = 5 if personal else 3

        def convert(r: Sequence[Any]) -> list[Any]:
            return [
                *r[:n], outcomes.get(r[n], r[n]), yes if r[n + 1] else no,
                yes if r[n + 2] else no, r[n + 3], r[n + 4],
                statuses.get(r[n + 5], r[n + 5] or ""),
            ]  # fmt: skip

        stmt = _referral_rows(f, personal).order_by(ReferralImport.id, ReferralImportRow.row_number)
        return Export(report, title, columns, stmt, convert)

    if report == "outbox":
        channels, out_statuses = labels(CHANNEL_LABELS), labels(OUTBOUND_STATUS_LABELS)
        columns = [col(_l("Created"), "datetime"), col(_l("Channel"))]
        if personal:
            columns.append(col(_l("Recipient")))
        columns += [
            col(_l("Status")),
            col(_l("Attempts"), "number"),
            col(_l("Sent"), "datetime"),
            col(_l("Delivered via")),
            col(_l("Last error")),
        ]
        n = 3 if personal else 2

        def convert(r: Sequence[Any]) -> list[Any]:
            return [r[0], channels.get(r[1], r[1]), *r[2:n], out_statuses.get(r[n], r[n]),
                    *r[n + 1 :]]  # fmt: skip

        stmt = _outbox_rows(f, personal).order_by(OutboundMessage.id)
        return Export(report, title, columns, stmt, convert)

    raise ReportError(_("Unknown report."))


# The consultation's number as the pages show it (str(Consultation)), computed by the database.
NUMBER_SQL = literal("№") + func.substr(cast(C.public_id, String), 1, 8)


def fixed_offset_minutes(tz_name: str, period: tuple[datetime, datetime] | None) -> int | None:
    """The zone's UTC offset in minutes if it is the same on every day of the period and a
    year either side (appointments and due dates lie beyond the period), else None."""
    if period is None:
        return None
    tz = zone(tz_name)
    day = period[0] - timedelta(days=366)
    last = period[1] + timedelta(days=366)
    offsets = set()
    while day <= last:
        offsets.add(day.astimezone(tz).utcoffset())
        if len(offsets) > 1:
            return None
        day += timedelta(days=1)
    (offset,) = offsets
    return int((offset or timedelta(0)).total_seconds() // 60)


def _local_text_sql(column, tz_name: str, dialect: str, minutes: int | None):
    """A timestamp as 'YYYY-MM-DD HH:MM' on the viewer's clock, formatted by the database
    (no per-value work in Python), or None where the database cannot do it exactly."""
    if dialect == "postgresql":
        return func.to_char(func.timezone(tz_name, column), "YYYY-MM-DD HH24:MI")
    if dialect == "sqlite" and minutes is not None:
        return func.strftime("%Y-%m-%d %H:%M", column, f"{minutes:+d} minutes")
    return None


def export_statement(stmt: Select, *, text_tz: str | None = None, period=None) -> Select:
    """The statement as an export runs it: the number instead of the UUID; timestamps either
    as local text formatted by the database (`text_tz`: CSV) or without the UTC column type
    (LocalTime converts them). A million rows feel every step per value."""
    dialect = db.session.get_bind().dialect.name
    minutes = fixed_offset_minutes(text_tz, period) if text_tz and dialect == "sqlite" else None
    columns = []
    for column in stmt.selected_columns:
        if getattr(column, "table", None) is C.__table__ and column.key == "public_id":
            columns.append(NUMBER_SQL.label("number"))
        elif isinstance(column.type, UTCDateTime):
            as_text = _local_text_sql(column, text_tz, dialect, minutes) if text_tz else None
            columns.append(
                as_text if as_text is not None else type_coerce(column, DateTime(timezone=True))
            )
        else:
            columns.append(column)
    return stmt.with_only_columns(*columns, maintain_column_froms=True)


def iter_export_rows(
    export: Export, chunk: int = STREAM_CHUNK, *, text_tz: str | None = None
) -> Iterator[list[Any]]:
    """The rows, converted, read in chunks: a server-side cursor on PostgreSQL (SQLite's
    cursor is lazy already), so memory does not grow with the number of rows. Core
    execution: the ORM adds nothing to plain columns."""
    connection = db.session.connection()
    result = connection.execute(
        export_statement(export.statement, text_tz=text_tz, period=export.period),
        execution_options={"stream_results": True, "yield_per": chunk},
    )
    convert = export.convert
    try:
        for partition in result.partitions(chunk):
            for row in partition:
                yield convert(row)
    finally:
        result.close()


class LocalTime:
    """UTC moments as the viewer's wall clock, fast: the zone database is asked once per
    distinct hour (offsets change on the hour at most), the rest is arithmetic. Accepts
    aware datetimes and naive ones meaning UTC."""

    def __init__(self, tz_name: str) -> None:
        self.tz: ZoneInfo = zone(tz_name)
        self._offsets: dict[tuple[int, int, int, int], timedelta] = {}

    def offset(self, value: datetime) -> timedelta:
        key = (value.year, value.month, value.day, value.hour)
        found = self._offsets.get(key)
        if found is None:
            moment = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
            found = moment.astimezone(self.tz).utcoffset() or timedelta(0)
            if len(self._offsets) > 100_000:
                self._offsets.clear()
            self._offsets[key] = found
        return found

    def naive(self, value: datetime) -> datetime:
        local = value + self.offset(value)
        return local.replace(tzinfo=None) if local.tzinfo is not None else local

    def text(self, value: datetime) -> str:
        """'YYYY-MM-DD HH:MM' on the viewer's clock: unambiguous, and every spreadsheet reads
        it as a date."""
        return str(value + self.offset(value))[:16]


_DANGEROUS_FIRST = frozenset(c for c in DANGEROUS_PREFIXES)


def csv_safe(value: str) -> str:
    """A text cell a spreadsheet shows as text: a leading formula character gets a quote."""
    return "'" + value if value and value[0] in _DANGEROUS_FIRST else value


def _indexes(export: Export, kind: str) -> list[int]:
    return [i for i, c in enumerate(export.columns) if c.kind == kind]


def stream_csv(
    export: Export, *, tz: str, on_done: Callable[[int, AuditOutcome], None]
) -> Iterator[bytes]:
    """The export as UTF-8 CSV (with a BOM, for Excel; `;`-separated) in chunks of about a
    thousand rows; `on_done(rows, outcome)` runs once at the end — also when the client goes
    away or the database fails mid-way (outcome error)."""
    text = LocalTime(tz).text
    moments, texts = _indexes(export, "datetime"), _indexes(export, "text")
    dangerous = _DANGEROUS_FIRST
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=CSV_DELIMITER, lineterminator="\r\n")
    writerow = writer.writerow
    writer.writerow([str(c.label) for c in export.columns])
    count = 0
    outcome = AuditOutcome.ERROR
    rows = iter_export_rows(export, text_tz=tz)
    try:
        yield ("\ufeff" + buffer.getvalue()).encode("utf-8")
        buffer.seek(0)
        buffer.truncate()
        for out in rows:
            for i in moments:
                value = out[i]
                if value is not None and value.__class__ is not str:
                    out[i] = text(value)
            for i in texts:
                value = out[i]
                if value and value[0] in dangerous:
                    out[i] = "'" + value
            writerow(out)  # None is written as an empty field
            count += 1
            if count % STREAM_CHUNK == 0:
                yield buffer.getvalue().encode("utf-8")
                buffer.seek(0)
                buffer.truncate()
        yield buffer.getvalue().encode("utf-8")
        outcome = AuditOutcome.OK
    finally:
        rows.close()  # the server-side cursor goes before the audit event's commit
        on_done(count, outcome)


def write_xlsx(export: Export, *, tz: str, fileobj) -> int:
    """The export as an XLSX workbook (openpyxl write-only: rows go to a temporary file as they
    are appended) saved into `fileobj`. Returns the number of data rows."""
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.styles import Alignment, Font

    local = LocalTime(tz)
    wb = Workbook(write_only=True)
    headers = [str(c.label) for c in export.columns]
    bold = Font(bold=True)
    text_alignment = Alignment()
    sheet_title = export.title[:28]
    sheets = 0

    def new_sheet():
        nonlocal sheets
        sheets += 1
        ws = wb.create_sheet(sheet_title if sheets == 1 else f"{sheet_title[:24]} {sheets}")
        header_cells = []
        for h in headers:
            cell = WriteOnlyCell(ws, value=h)
            cell.font = bold
            header_cells.append(cell)
        ws.append(header_cells)
        return ws

    ws = new_sheet()
    # One reusable styled date cell per column would be overwritten before it is written, so a
    # new cell per date value; the format object itself is shared.
    date_format = "DD.MM.YYYY HH:MM"

    def text_cell(value: str):
        if _ILLEGAL_XML.search(value):
            value = _ILLEGAL_XML.sub("", value)
        if value.startswith(DANGEROUS_PREFIXES):
            cell = WriteOnlyCell(ws, value=value)
            cell.data_type = "s"  # an explicit string: openpyxl never writes a formula
            cell.quotePrefix = True  # Excel keeps it text even when the cell is edited
            cell.alignment = text_alignment
            return cell
        return value

    rows_in_sheet = 1
    count = 0
    datetime_ = datetime
    source = iter_export_rows(export)
    try:
        for row in source:
            if rows_in_sheet >= XLSX_MAX_ROWS:
                ws = new_sheet()
                rows_in_sheet = 1
            out = []
            for value in row:
                if isinstance(value, str):
                    out.append(text_cell(value) if value else None)
                elif isinstance(value, datetime_):
                    cell = WriteOnlyCell(ws, value=local.naive(value))
                    cell.number_format = date_format
                    out.append(cell)
                elif isinstance(value, bool):
                    out.append(int(value))
                else:
                    out.append(value)
            ws.append(out)
            rows_in_sheet += 1
            count += 1
    finally:
        source.close()
    wb.save(fileobj)
    return count


def xlsx_tempfile(export: Export, *, tz: str) -> tuple[Any, int]:
    """The workbook in an unlinked temporary file, rewound: (file, rows). The caller streams it
    and closes it; nothing is left on disk whatever happens."""
    handle = tempfile.TemporaryFile(prefix="oblako-report-", suffix=".xlsx")
    try:
        rows = write_xlsx(export, tz=tz, fileobj=handle)
        handle.seek(0)
    except BaseException:
        handle.close()
        raise
    return handle, rows


def file_chunks(handle, size: int = 64 * 1024) -> Iterator[bytes]:
    try:
        while chunk := handle.read(size):
            yield chunk
    finally:
        handle.close()


def file_size(handle) -> int:
    return os.fstat(handle.fileno()).st_size


def record_export(
    *, user, report: str, fmt: str, f: Filters, rows: int, outcome: AuditOutcome
) -> None:
    """The audit event of one export: who, which report and format, the filters, the rows."""
    event = audit(
        "report.export", actor=user, obj_type="report", obj_id=f"{report}.{fmt}", outcome=outcome
    )
    event.detail = {
        "report": report,
        "format": fmt,
        "filters": f.audit_detail(),
        "rows": rows,
        "personal_data": may_see_personal_data(user),
    }


def export_filename(report: str, f: Filters, fmt: str) -> str:
    return f"report-{report}-{f.date_from.isoformat()}-{f.date_to.isoformat()}.{fmt}"


# ---------------------------------------------------------------------------------------------
# Dashboard
# ---------------------------------------------------------------------------------------------


@dataclass
class Dashboard:
    weeks: list[date]  # Mondays, oldest first
    by_kind: dict[str, list[int]]
    sla_share: list[float | None]
    sla_counted: list[int]
    load: list[tuple[str, int, int]]  # doctor, total, completed
    cancelled: list[int]
    missed: list[int]


def week_starts(tz: str, weeks: int = DASHBOARD_WEEKS, now: datetime | None = None) -> list[date]:
    today = local_today(tz, now)
    this_monday = today - timedelta(days=today.weekday())
    return [this_monday - timedelta(weeks=weeks - 1 - i) for i in range(weeks)]


def _week_index(column, bounds: list[datetime]):
    """The week a moment falls in (0..n-1) as SQL; the WHERE keeps it within the bounds."""
    return case(*[(column < b, literal(i)) for i, b in enumerate(bounds[1:])], else_=literal(-1))


def dashboard(tz: str, *, centre_id: int | None = None, now: datetime | None = None) -> Dashboard:
    now = now or utcnow()
    mondays = week_starts(tz, now=now)
    bounds = [local_midnight(m, tz) for m in mondays] + [
        local_midnight(mondays[-1] + timedelta(days=7), tz)
    ]
    n = len(mondays)
    scope = [C.center_id == centre_id] if centre_id is not None else []

    week = _week_index(C.created_at, bounds)
    by_kind = {k.value: [0] * n for k in ConsultationKind}
    for w, kind, count in db.session.execute(
        select(week, C.kind, func.count())
        .where(C.created_at >= bounds[0], C.created_at < bounds[-1], *scope)
        .group_by(week, C.kind)
    ).all():
        if 0 <= w < n:
            by_kind.setdefault(kind, [0] * n)[w] += int(count)

    outcome = sla_outcome(now)
    week = _week_index(C.submitted_at, bounds)
    in_time, counted = [0] * n, [0] * n
    for w, out, count in db.session.execute(
        select(week, outcome, func.count())
        .where(
            C.kind.in_([k.value for k in SLA_KINDS]),
            C.due_by.is_not(None),
            C.submitted_at >= bounds[0],
            C.submitted_at < bounds[-1],
            *scope,
        )
        .group_by(week, outcome)
    ).all():
        if 0 <= w < n and out in ("in_time", "late", "overdue"):
            counted[w] += int(count)
            if out == "in_time":
                in_time[w] += int(count)
    share = [None if not c else 100.0 * i / c for i, c in zip(in_time, counted, strict=True)]

    last4 = bounds[-5] if len(bounds) >= 5 else bounds[0]
    load = [
        (name, int(total), int(done or 0))
        for name, total, done in db.session.execute(
            select(
                DOCTOR_NAME,
                func.count(C.id),
                func.sum(case((C.status == ConsultationStatus.COMPLETED.value, 1), else_=0)),
            )
            .select_from(C)
            .join(Doctor, Doctor.id == C.doctor_id)
            .where(C.scheduled_at >= last4, C.scheduled_at < bounds[-1], *scope)
            .group_by(Doctor.id, Doctor.surname, Doctor.name, Doctor.patronymic)
            .order_by(func.count(C.id).desc(), Doctor.surname)
            .limit(10)
        ).all()
    ]

    moment = func.coalesce(C.cancelled_at, C.missed_at)
    week = _week_index(moment, bounds)
    cancelled, missed = [0] * n, [0] * n
    for w, status, count in db.session.execute(
        select(week, C.status, func.count())
        .where(
            C.status.in_([ConsultationStatus.CANCELLED.value, ConsultationStatus.MISSED.value]),
            moment >= bounds[0],
            moment < bounds[-1],
            *scope,
        )
        .group_by(week, C.status)
    ).all():
        if 0 <= w < n:
            (cancelled if status == ConsultationStatus.CANCELLED.value else missed)[w] += int(count)
    return Dashboard(mondays, by_kind, share, counted, load, cancelled, missed)


# --- server-side SVG: no script, no external library, readable by screen readers -------------

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd")


def _svg(width: int, height: int, title: str, desc: str, body: list[str]) -> Markup:
    ident = f"chart-{uuid.uuid4().hex[:8]}"
    # Every text that reaches the SVG went through escape(); numbers are formatted here.
    return Markup(  # noqa: S704
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="100%" role="img" aria-labelledby="{ident}-t {ident}-d" class="report-chart">'
        f'<title id="{ident}-t">{escape(title)}</title><desc id="{ident}-d">{escape(desc)}</desc>'
        + "".join(body)
        + "</svg>"
    )


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1
    magnitude = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * magnitude:
            return step * magnitude
    return 10 * magnitude


def svg_stacked_columns(
    title: str,
    categories: list[str],
    series: list[tuple[str, list[float]]],
    *,
    max_value: float | None = None,
    unit: str = "",
) -> Markup:
    """Vertical columns, one per category, stacked by series, with a legend."""
    width, height, left, bottom, top = 720, 300, 44, 46, 34
    plot_w, plot_h = width - left - 10, height - top - bottom
    totals = [sum(s[1][i] or 0 for s in series) for i in range(len(categories))]
    top_value = max_value or _nice_max(max(totals, default=0))
    slot = plot_w / max(len(categories), 1)
    bar_w = slot * 0.6
    body: list[str] = []
    for i in range(5):
        v = top_value * i / 4
        y = top + plot_h - plot_h * i / 4
        body.append(
            f'<line x1="{left}" x2="{width - 10}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>'
            f'<text x="{left - 4}" y="{y + 4:.1f}" font-size="11" text-anchor="end">'
            f"{v:g}{escape(unit)}</text>"
        )
    for i, label in enumerate(categories):
        x = left + slot * i + (slot - bar_w) / 2
        y = top + plot_h
        for s_index, (name, values) in enumerate(series):
            value = values[i] or 0
            h = plot_h * value / top_value if top_value else 0
            y -= h
            if value:
                body.append(
                    f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{h:.1f}" '
                    f'fill="{PALETTE[s_index % len(PALETTE)]}">'
                    f"<title>{escape(label)} — {escape(name)}: {value:g}{escape(unit)}</title>"
                    "</rect>"
                )
        body.append(
            f'<text x="{x + bar_w / 2:.1f}" y="{top + plot_h + 14}" font-size="10" '
            f'text-anchor="middle">{escape(label)}</text>'
        )
    x = left
    for s_index, (name, _values) in enumerate(series):
        body.append(
            f'<rect x="{x}" y="8" width="12" height="12" fill="{PALETTE[s_index % len(PALETTE)]}"/>'
            f'<text x="{x + 16}" y="18" font-size="12">{escape(name)}</text>'
        )
        x += 24 + 7 * len(name)
    desc = "; ".join(
        f"{label}: " + ", ".join(f"{name} {values[i] or 0:g}{unit}" for name, values in series)
        for i, label in enumerate(categories)
    )
    return _svg(width, height, title, desc, body)


def svg_bars(title: str, items: list[tuple[str, float, float]], *, unit: str = "") -> Markup:
    """Horizontal bars (label, value, part of it highlighted), e.g. a doctor's consultations
    and how many of them were completed."""
    row_h, left, width = 26, 230, 720
    height = max(1, len(items)) * row_h + 20
    top_value = _nice_max(max((v for _l, v, _p in items), default=0))
    plot_w = width - left - 60
    body: list[str] = []
    for i, (label, value, part) in enumerate(items):
        y = 10 + i * row_h
        w = plot_w * value / top_value if top_value else 0
        pw = plot_w * part / top_value if top_value else 0
        body.append(
            f'<text x="{left - 6}" y="{y + 15}" font-size="12" text-anchor="end">'
            f"{escape(label[:34])}</text>"
            f'<rect x="{left}" y="{y + 3}" width="{w:.1f}" height="{row_h - 8}" '
            f'fill="{PALETTE[0]}">'
            f"<title>{escape(label)}: {value:g}{escape(unit)}</title></rect>"
            f'<rect x="{left}" y="{y + 3}" width="{pw:.1f}" height="{row_h - 8}" '
            f'fill="{PALETTE[2]}"/>'
            f'<text x="{left + w + 6:.1f}" y="{y + 15}" font-size="12">{value:g} / {part:g}</text>'
        )
    desc = "; ".join(f"{label}: {value:g} / {part:g}" for label, value, part in items)
    return _svg(width, height, title, desc, body)


def dashboard_charts(d: Dashboard) -> dict[str, Markup]:
    weeks = [m.strftime("%d.%m") for m in d.weeks]
    kinds = [(str(KIND_LABELS[ConsultationKind(k)]), v) for k, v in d.by_kind.items()]
    share = [round(s, 1) if s is not None else 0 for s in d.sla_share]
    return {
        "by_kind": svg_stacked_columns(_("Consultations per week by kind"), weeks, kinds),
        "sla": svg_stacked_columns(
            _("Share scheduled within the promised time"),
            weeks,
            [(_("Within the promised time"), share)],
            max_value=100,
            unit="%",
        ),
        "load": svg_bars(
            _("Consultations per doctor in the last four weeks (all / completed)"),
            [(name, total, done) for name, total, done in d.load],
        ),
        "cancellations": svg_stacked_columns(
            _("Cancellations and missed consultations per week"),
            weeks,
            [(_("Cancelled"), d.cancelled), (_("Missed"), d.missed)],
        ),
    }
