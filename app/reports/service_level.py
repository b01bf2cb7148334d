"""The service-level report: from an application to the doctor's answer, against the promise.

An application (centre request, or a referral once the patient has uploaded the documents) is
*submitted* at `submitted_at`; the promise recorded with it is `due_by` (3 days for a centre
application, 4 for a referral: app/consultations.py). The doctor *answers* by scheduling it
(`scheduled_set_at`) or, less often, by declining it (`rejected_at`). A request for more
documents does not stop the clock. Outcomes:

  in_time    answered at or before due_by
  late       answered after due_by
  overdue    not answered and due_by passed while it waited (still waiting now, or withdrawn
             by the patient only after the due moment)
  waiting    not answered, still waiting, not due yet — not counted in the share
  withdrawn  cancelled before due_by without an answer — not counted in the share

share within time = in_time / (in_time + late + overdue).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import ColumnElement, Select, and_, case, func, literal, select

from app.consultations import APPLICATION_DUE, REFERRAL_DUE
from app.extensions import db
from app.reports.filters import Filters
from app.reports.labels import QUEUE_STATUSES, SLA_KINDS
from app.reports.sql import (
    CENTRE_NAME,
    DOCTOR_NAME,
    PAGE_SIZE,
    Page,
    in_period,
    page_bounds,
    scope_conditions,
    seconds_between,
    with_people,
)
from models import Consultation, ConsultationKind, ConsultationStatus, utcnow

PROMISED = {
    ConsultationKind.CENTRE_REQUEST: APPLICATION_DUE,
    ConsultationKind.REFERRAL: REFERRAL_DUE,
}

C = Consultation


def answer_moment():
    """When the doctor answered: scheduling it or declining it (NULL while unanswered)."""
    return func.coalesce(C.scheduled_set_at, C.rejected_at)


def sla_outcome(now: datetime) -> ColumnElement[str]:
    """An application's outcome (the module's table) as SQL, as of `now`."""
    answered = answer_moment()
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


def sla_conditions(f: Filters) -> list[ColumnElement[bool]]:
    """The applications that made a promise and were submitted in the period."""
    return [
        C.kind.in_([k.value for k in SLA_KINDS]),
        C.due_by.is_not(None),
        in_period(C.submitted_at, f),
        *scope_conditions(f),
    ]


@dataclass
class SlaLine:
    """One kind's outcomes (or all kinds'), the share within time and the average answer."""

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
    """The lines per kind, all kinds together, and a page of the listed applications."""

    lines: list[SlaLine]
    overall: SlaLine
    page: Page
    now: datetime


def _sla_list_columns(outcome) -> list:
    return [
        C.label.label("number"),
        C.kind,
        C.status,
        CENTRE_NAME,
        DOCTOR_NAME,
        C.submitted_at,
        C.due_by,
        answer_moment(),
        outcome,
    ]


def sla_rows(f: Filters, now: datetime) -> Select:
    """The list: only the late and overdue ones unless the scope is «all»."""
    outcome = sla_outcome(now)
    stmt = with_people(select(*_sla_list_columns(outcome)).select_from(C)).where(*sla_conditions(f))
    if f.scope == "overdue":
        stmt = stmt.where(outcome.in_(["late", "overdue"]))
    return stmt


def sla_report(f: Filters, now: datetime | None = None) -> SlaReport:
    """The figures (one GROUP BY kind, outcome) and a page of the list, as of `now`."""
    now = now or utcnow()
    outcome = sla_outcome(now)
    answered = answer_moment()
    seconds = seconds_between(C.submitted_at, answered)
    rows = db.session.execute(
        select(
            C.kind,
            outcome.label("outcome"),
            func.count(),
            func.coalesce(func.sum(seconds), 0.0),
            func.count(answered),
        )
        .where(*sla_conditions(f))
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
    page, pages = page_bounds(listed, f.page)
    items = db.session.execute(
        sla_rows(f, now)
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
