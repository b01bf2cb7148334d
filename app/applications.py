"""One application is one application: the form token and the one-open-application rule.

The database decides (models.py: `uq_consultation_patient_form_token` and the partial unique
index `uq_consultation_open_application` over the open statuses), not a check before the
insert: eight identical posts racing each other all reach the INSERT, one wins, and the others'
unique violation is turned here into the answer the patient needs — the application that is
already there.
"""

from __future__ import annotations

import uuid

from flask_babel import lazy_gettext as _l
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from app.errors import DomainError
from app.extensions import db
from models import OPEN_STATUSES, Consultation, ConsultationKind


class ApplicationExists(DomainError):
    """Refused because the application is already there; `existing` is where to send the patient.

    `resent` says which case: the same form sent again (show the first one) or another form
    for a centre and disease that already have an open application (say so, with a link)."""

    def __init__(self, existing: Consultation, *, resent: bool) -> None:
        message = (
            _l("This application has already been sent; here it is.")
            if resent
            else _l(
                "You already have an open application to this centre for this disease "
                "(%(number)s). Add documents or wait for the doctors' answer there.",
                number=str(existing),
            )
        )
        super().__init__(message)
        self.existing, self.resent = existing, resent


def clean_form_token(value: str | None) -> str | None:
    """The hidden form id as sent; anything that is not a UUID counts as no token."""
    try:
        return str(uuid.UUID(value or ""))
    except ValueError:
        return None


def new_form_token() -> str:
    return str(uuid.uuid4())


def by_form_token(patient_id: int, token: str | None) -> Consultation | None:
    if token is None:
        return None
    return db.session.execute(
        select(Consultation).where(
            Consultation.patient_id == patient_id, Consultation.form_token == token
        )
    ).scalar_one_or_none()


def open_application(
    patient_id: int, center_id: int, disease_id: int | None
) -> Consultation | None:
    """The patient's open application to this centre for this disease, if any."""
    if disease_id is None:
        return None
    return db.session.execute(
        select(Consultation)
        .where(
            Consultation.patient_id == patient_id,
            Consultation.center_id == center_id,
            Consultation.disease_id == disease_id,
            Consultation.kind == ConsultationKind.CENTRE_REQUEST,
            Consultation.status.in_([s.value for s in OPEN_STATUSES]),
        )
        .limit(1)
    ).scalar_one_or_none()


def refuse_if_resent(patient_id: int, token: str | None) -> None:
    """The same form came back (a second click after the first one went through)."""
    existing = by_form_token(patient_id, token)
    if existing is not None:
        raise ApplicationExists(existing, resent=True)


def insert_application(c: Consultation) -> None:
    """Insert the new application; a unique violation becomes ApplicationExists.

    A savepoint keeps the caller's transaction usable after the violation, so the row that won
    can be read. On PostgreSQL the losing INSERT waits for the winner's commit before it fails,
    so the winner is visible to the next statement."""
    try:
        with db.session.begin_nested():
            db.session.add(c)
    except IntegrityError:
        resent = by_form_token(c.patient_id, c.form_token)
        if resent is not None:
            raise ApplicationExists(resent, resent=True) from None
        existing = open_application(c.patient_id, c.center_id, c.disease_id)
        if existing is not None:
            raise ApplicationExists(existing, resent=False) from None
        # The row that won is gone again (cancelled meanwhile): nothing saved, try once more.
        raise DomainError(_l("The application could not be sent; please send it again.")) from None
