"""Upload quotas: how much a patient may upload by themselves (issue 15 item 8).

A patient's own uploads are limited per day (the patient's calendar day, in their time zone)
and in total bytes; the defaults (PATIENT_UPLOADS_PER_DAY, PATIENT_UPLOAD_TOTAL_BYTES) are far
above what a real patient needs and only stop a script or a runaway client filling the disk.
Files that staff add for a patient (a doctor, a manager, the conclusion PDFs) are not counted
and not limited: they are the clinic's own work.

The check runs in the transaction that inserts the document, after taking a lock that
serialises one patient's uploads, so concurrent uploads cannot both slip under the limit:
- PostgreSQL: `SELECT … FOR UPDATE` on the patient's row; READ COMMITTED gives the count that
  follows the lock a fresh snapshot, which includes every upload committed before it. Exact.
- SQLite: a no-op UPDATE of the patient's row takes the database's single write lock at once
  (not at the INSERT), so the whole check-and-insert runs alone. Exact as well.
The lock is held only from the check to the commit, never while the file itself is written.
"""

from __future__ import annotations

import math
from datetime import datetime, time

from flask import current_app
from flask_babel import LazyString
from flask_babel import lazy_gettext as _l
from sqlalchemy import func, select, update

from app.documents import DocumentError
from app.documents.upload import patient_zone, today_for
from app.extensions import db
from models import MedicalDocument, Patient


class QuotaExceeded(DocumentError):
    """An upload beyond the patient's quota; str() is shown to the user."""


def size_text(n_bytes: int) -> LazyString:
    """A limit as a person reads it: whole gigabytes when it is some, else megabytes."""
    if n_bytes >= 2**30 and n_bytes % 2**30 == 0:
        return _l("%(n)d GB", n=n_bytes // 2**30)
    return _l("%(n)d MB", n=max(1, math.ceil(n_bytes / 2**20)))


def _lock_patient(patient_id: int) -> None:
    conn = db.session.connection()
    table = Patient.__table__
    if conn.dialect.name == "sqlite":
        # A write first: the transaction takes SQLite's write lock now, not at the INSERT.
        conn.execute(update(table).where(table.c.id == patient_id).values(id=table.c.id))
    else:
        conn.execute(select(table.c.id).where(table.c.id == patient_id).with_for_update())


def check_upload_quota(patient: Patient, *, by, size: int) -> None:
    """Refuse the patient's own upload of `size` bytes beyond the daily count or the total.

    Call inside the transaction that then inserts the document."""
    if getattr(by, "id", None) != patient.user_id:
        return  # staff work for the patient is not limited
    per_day = int(current_app.config["PATIENT_UPLOADS_PER_DAY"])
    total = int(current_app.config["PATIENT_UPLOAD_TOTAL_BYTES"])
    _lock_patient(patient.id)
    day_start = datetime.combine(today_for(patient), time(), tzinfo=patient_zone(patient))
    own = (MedicalDocument.patient_id == patient.id) & (MedicalDocument.uploaded_by_id == by.id)
    today_count, used = db.session.execute(
        select(
            func.count().filter(MedicalDocument.uploaded_at >= day_start),
            func.coalesce(func.sum(MedicalDocument.size_bytes), 0),
        ).where(own)
    ).one()
    if today_count >= per_day:
        raise QuotaExceeded(
            _l(
                "You can upload at most %(n)d documents a day. Please upload the rest tomorrow.",
                n=per_day,
            )
        )
    if used + size > total:
        raise QuotaExceeded(
            _l(
                "This file does not fit: all your documents together may take up at most "
                "%(limit)s. Delete the documents you no longer need and try again.",
                limit=size_text(total),
            )
        )
