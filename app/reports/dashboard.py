"""The dashboard's weekly figures: consultations per week by kind, the share scheduled within
the promised time, the load per doctor over the last four weeks, cancellations and no-shows.

Weeks start on Monday in the viewer's time zone; each series is one GROUP BY over a CASE that
puts every moment in its week. The charts are drawn from these (app/reports/charts.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import case, func, literal, select

from app.extensions import db
from app.reports.filters import local_midnight, local_today
from app.reports.labels import SLA_KINDS
from app.reports.service_level import sla_outcome
from app.reports.sql import DOCTOR_NAME
from models import Consultation, ConsultationKind, ConsultationStatus, Doctor, utcnow

DASHBOARD_WEEKS = 12

C = Consultation


@dataclass
class Dashboard:
    """The dashboard's series, one value per week (load: the top ten doctors, four weeks)."""

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
    """The last DASHBOARD_WEEKS weeks' figures, optionally for one centre: four statements."""
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
