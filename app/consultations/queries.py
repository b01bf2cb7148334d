"""Consultation lists for staff: the centre's queue of applications, a doctor's day, and the
latest conclusion of a consultation.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import joinedload

from app.consultations.common import QUEUE_STATUSES
from app.dates import local_moment, zone
from app.extensions import db
from models import Consultation, Doctor

QUEUE_PAGE_SIZE = 20
COUNT_CAP = 1000


@dataclass(frozen=True)
class QueuePage:
    items: list[Consultation]
    page: int
    page_size: int
    total: int  # capped at COUNT_CAP (then shown as "1000+")
    capped: bool

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.page_size))


def doctor_queue(doctor: Doctor, page: int = 1, page_size: int = QUEUE_PAGE_SIZE) -> QueuePage:
    """The centre's applications waiting for a decision, oldest first: two queries a page."""
    if doctor.center_id is None or not doctor.active:
        return QueuePage([], 1, page_size, 0, False)
    # Literal statuses: the planners (SQLite always, PostgreSQL on a generic plan) use the
    # partial index ix_consultation_queue only when they can see its condition is implied.
    statuses = bindparam(
        "queue_statuses", [s.value for s in QUEUE_STATUSES], expanding=True, literal_execute=True
    )
    condition = (Consultation.center_id == doctor.center_id) & Consultation.status.in_(statuses)
    # Counting stops at the cap: constant cost however long the queue grows.
    limited = select(Consultation.id).where(condition).limit(COUNT_CAP + 1).subquery()
    counted = int(db.session.execute(select(func.count()).select_from(limited)).scalar_one())
    capped = counted > COUNT_CAP
    total = min(counted, COUNT_CAP)
    pages = max(1, -(-total // page_size))
    page = min(max(1, page), pages)
    stmt = (
        select(Consultation)
        .options(joinedload(Consultation.patient), joinedload(Consultation.disease))
        .where(condition)
        .order_by(Consultation.submitted_at.asc(), Consultation.id.asc())
        .limit(page_size)
        .offset((page - 1) * page_size)
    )
    items = list(db.session.execute(stmt).scalars())
    return QueuePage(items, page, page_size, total, capped)


def doctor_day(doctor: Doctor, day: date) -> list[Consultation]:
    """The doctor's own consultations on `day` as the doctor's clock shows it."""
    starts = local_moment(day, time(0, 0), doctor.timezone)
    ends = local_moment(day + timedelta(days=1), time(0, 0), doctor.timezone)
    stmt = (
        select(Consultation)
        .options(joinedload(Consultation.patient), joinedload(Consultation.disease))
        .where(
            Consultation.doctor_id == doctor.id,
            Consultation.scheduled_at >= starts,
            Consultation.scheduled_at < ends,
        )
        .order_by(Consultation.scheduled_at, Consultation.id)
    )
    return list(db.session.execute(stmt).scalars())


def doctor_today(doctor: Doctor) -> date:
    return datetime.now(zone(doctor.timezone)).date()
