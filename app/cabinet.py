"""What a signed-in person reads about themselves: notifications and the patient's consultations.

Every query is scoped to the acting user here, so a view cannot forget the scope; another
person's notification answers NotFound (404), the same as one that does not exist.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from flask_babel import lazy_gettext as _l
from sqlalchemy import func, select, update
from sqlalchemy.orm import joinedload

from app.errors import NotFound
from app.extensions import db
from models import Consultation, Notification, Patient, utcnow

NOTIFICATIONS_PER_PAGE = 20


@dataclass(frozen=True)
class Page:
    items: list[Notification]
    page: int
    pages: int
    total: int


def unread_count(user_id: int) -> int:
    """One COUNT over the (user_id, created_at) index: cheap enough for every navbar."""
    stmt = select(func.count(Notification.id)).where(
        Notification.user_id == user_id, Notification.read_at.is_(None)
    )
    return int(db.session.execute(stmt).scalar() or 0)


def notifications_page(user_id: int, page: int = 1, per_page: int = NOTIFICATIONS_PER_PAGE) -> Page:
    """The user's own notifications, newest first."""
    total = int(
        db.session.execute(
            select(func.count(Notification.id)).where(Notification.user_id == user_id)
        ).scalar()
        or 0
    )
    pages = max(1, -(-total // per_page))
    page = min(max(1, page), pages)
    items = list(
        db.session.execute(
            select(Notification)
            .where(Notification.user_id == user_id)
            .order_by(Notification.created_at.desc(), Notification.id.desc())
            .limit(per_page)
            .offset((page - 1) * per_page)
        ).scalars()
    )
    return Page(items=items, page=page, pages=pages, total=total)


def own_notification(user_id: int, public_id: uuid.UUID) -> Notification:
    notification = db.session.execute(
        select(Notification).where(
            Notification.public_id == public_id, Notification.user_id == user_id
        )
    ).scalar_one_or_none()
    if notification is None:
        raise NotFound(_l("Notification not found."))
    return notification


def mark_read(user_id: int, public_id: uuid.UUID) -> Notification:
    notification = own_notification(user_id, public_id)
    if notification.read_at is None:
        notification.read_at = utcnow()
    return notification


def mark_all_read(user_id: int) -> int:
    """One UPDATE, whatever the number of notifications; returns how many were unread."""
    result = db.session.execute(
        update(Notification)
        .where(Notification.user_id == user_id, Notification.read_at.is_(None))
        .values(read_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)


def safe_link(link: str) -> str | None:
    """A notification's link, only if it stays on this site (no open redirect)."""
    link = (link or "").strip()
    if link.startswith("/") and not link.startswith("//") and "\\" not in link:
        return link
    return None


def patient_consultations(patient: Patient) -> list[Consultation]:
    stmt = (
        select(Consultation)
        # The list shows the centre and the doctor of each: loaded with it, not row by row.
        .options(joinedload(Consultation.center), joinedload(Consultation.doctor))
        .where(Consultation.patient_id == patient.id)
        .order_by(Consultation.created_at.desc(), Consultation.id.desc())
    )
    return list(db.session.execute(stmt).scalars())
