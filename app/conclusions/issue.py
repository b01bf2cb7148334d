"""Issuing a conclusion: who may, version 1 completing the consultation, a correction as a new
version. The row is inserted once, complete with the key of its stored PDF, and never updated
(immutability.py); the patient is notified with a link to the PDF.
"""

from __future__ import annotations

import io
import logging
import uuid
from dataclasses import fields

from flask import current_app
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l

from app.audit import audit, audit_consultation
from app.conclusions import (
    ConclusionError,
    ConclusionFontMissing,
    lock,
    same_doctor,
)
from app.conclusions.access import latest_conclusion
from app.conclusions.form import ConclusionData, clean_data, validate_data
from app.conclusions.pdf import conclusion_pdf
from app.consultations import conclusion_pdf_link, notify_patient
from app.documents.checks import write_file
from app.extensions import db
from app.storage import on_rollback, remove_stored
from models import Conclusion, Consultation, ConsultationStatus, Doctor, utcnow

log = logging.getLogger(__name__)


def check_can_issue(consultation: Consultation, by: Doctor | None) -> None:
    """Raise ConclusionError unless `by` may issue a conclusion for it now."""
    if by is None or not by.active or not same_doctor(consultation, by):
        raise ConclusionError(_l("Only the consultation's doctor can issue its conclusion."))
    status = consultation.status
    if status in (ConsultationStatus.SCHEDULED, ConsultationStatus.REQUESTED):
        raise ConclusionError(_l("Start the consultation before issuing the conclusion."))
    if status not in (ConsultationStatus.IN_PROGRESS, ConsultationStatus.COMPLETED):
        raise ConclusionError(
            _l("A conclusion can be issued only for a consultation that took place.")
        )


def may_issue(consultation: Consultation, by: Doctor | None) -> bool:
    try:
        check_can_issue(consultation, by)
    except ConclusionError:
        return False
    return True


def _issued_text(number: str, version: int):
    def render() -> str:
        if version == 1:
            return _("The doctor's conclusion is ready (consultation №%(number)s).", number=number)
        return _(
            "The doctor has corrected the conclusion (consultation №%(number)s): "
            "version %(version)d replaces the previous one.",
            number=number,
            version=version,
        )

    return render


def issue_conclusion(
    consultation: Consultation, *, by: Doctor | None, data: ConclusionData
) -> Conclusion:
    """Issue version 1 (completes the consultation) or a correction (a new version)."""
    check_can_issue(consultation, by)
    data = clean_data(data)
    problems = validate_data(data)
    if problems:
        raise ConclusionError(next(iter(problems.values())))
    lock(consultation)
    check_can_issue(consultation, by)  # again, under the lock: it may have changed meanwhile
    status = consultation.status
    previous = latest_conclusion(consultation)
    if status == ConsultationStatus.COMPLETED and previous is None:
        # Completed without a conclusion cannot happen through the service; refuse rather
        # than guess which version this would be.
        raise ConclusionError(
            _l("A conclusion can be issued only for a consultation that took place.")
        )
    now = utcnow()
    conclusion = Conclusion(
        public_id=uuid.uuid4(),
        consultation_id=consultation.id,
        version=(previous.version + 1) if previous else 1,
        supersedes_id=previous.id if previous else None,
        author_id=by.id,
        issued_at=now,
        **{f.name: getattr(data, f.name) for f in fields(ConclusionData)},
    )
    # Relationships for the PDF, without adding the row to the session yet: the row is
    # inserted once, complete with its PDF key, and never updated afterwards.
    conclusion.consultation = consultation
    conclusion.author = by
    try:
        pdf = conclusion_pdf(conclusion, superseded=previous)
    except ConclusionFontMissing as exc:
        log.error("conclusion PDF: %s", exc)
        raise ConclusionError(
            _l(
                "The conclusion PDF cannot be produced: the Cyrillic font is not installed. "
                "Nothing has been issued; ask the administrator to run the setup step."
            )
        ) from exc
    stored = write_file(io.BytesIO(pdf), max_bytes=int(current_app.config["MAX_DOCUMENT_BYTES"]))
    on_rollback(lambda key=stored.key: remove_stored(key))
    conclusion.pdf_storage_key = stored.key
    conclusion.pdf_sha256 = stored.sha256
    db.session.add(conclusion)
    first = previous is None
    if first:
        consultation.status = ConsultationStatus.COMPLETED
        consultation.completed_at = now
    db.session.flush()
    audit(
        "conclusion.issue" if first else "conclusion.correct",
        actor=by.user,
        obj_type="conclusion",
        obj_id=conclusion.public_id,
        patient_id=consultation.patient_id,
    )
    if first:
        audit_consultation("consultation.complete", consultation, by.user)
    notify_patient(
        consultation,
        "conclusion_issued" if first else "conclusion_corrected",
        _issued_text(consultation.display_number, conclusion.version),
        link=conclusion_pdf_link(conclusion),
        dedupe_key=f"conclusion:{conclusion.public_id}",
    )
    return conclusion
