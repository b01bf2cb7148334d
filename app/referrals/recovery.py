"""Referral imports that lost their worker: noticed, shown to the manager, resumed by themselves.

The import job (app/referrals/importer.py run_import, a Huey task) leaves a heartbeat on its
ReferralImport when it is confirmed, when it starts and after every committed chunk. An import
still `importing` whose heartbeat is older than IMPORT_STALL_SECONDS has no live worker: the
job died with its process (a crash, a kill, a restart), or its queued message was lost with the
queue. Every worker resumes such imports at start-up and once a minute (app/tasks.py); the
import itself is resumable (rows already done are skipped), so a resume is always safe.

Claiming a stalled import moves its heartbeat to now in a conditional UPDATE: of several
workers that notice the same stall at once, one re-enqueues it.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import or_, select, update

from app.extensions import db
from models import ImportStatus, ReferralImport, utcnow

DEFAULT_STALL_SECONDS = 300  # a chunk of 500 rows takes seconds; minutes mean a dead job


def stall_after() -> timedelta:
    seconds = current_app.config.get("IMPORT_STALL_SECONDS", DEFAULT_STALL_SECONDS)
    return timedelta(seconds=float(seconds))


def beat(imp: ReferralImport, now: datetime | None = None) -> None:
    """The job is alive and working on this import (no commit: the caller's chunk commits)."""
    imp.heartbeat_at = now or utcnow()


def _stalled(cutoff: datetime):
    return (ReferralImport.status == ImportStatus.IMPORTING) & or_(
        ReferralImport.heartbeat_at.is_(None), ReferralImport.heartbeat_at < cutoff
    )


def stalled_since(imp: ReferralImport, now: datetime | None = None) -> datetime | None:
    """When a stalled import last progressed (for the manager's page); None when it is not."""
    if imp.status != ImportStatus.IMPORTING:
        return None
    last = imp.heartbeat_at or imp.created_at
    if last >= (now or utcnow()) - stall_after():
        return None
    return last


def claim_stalled(now: datetime | None = None) -> list[int]:
    """The stalled imports this worker takes over (committed, so the others see the claim)."""
    now = now or utcnow()
    cutoff = now - stall_after()
    candidates = list(
        db.session.execute(select(ReferralImport.id).where(_stalled(cutoff))).scalars()
    )
    claimed = []
    for import_id in candidates:
        won = db.session.execute(
            update(ReferralImport)
            .where(ReferralImport.id == import_id, _stalled(cutoff))
            .values(heartbeat_at=now)
            .execution_options(synchronize_session=False)
        ).rowcount
        if won:
            claimed.append(import_id)
    db.session.commit()
    return claimed
