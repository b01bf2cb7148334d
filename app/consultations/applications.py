"""The patient's application to a medical centre (pathway 1): the centres and their catalogue,
the documents a disease requires, submitting it, and "one application is one application".

submit_application() creates the consultation as `requested`; from there on the status machine
in transitions.py takes over.

One application is one: the database decides (models.py: `uq_consultation_patient_form_token`
and the partial unique index `uq_consultation_open_application` over the open statuses), not a
check before the insert: eight identical posts racing each other all reach the INSERT, one
wins, and the others' unique violation is turned here into the answer the patient needs — the
application that is already there.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from flask_babel import get_locale, gettext
from flask_babel import lazy_gettext as _l
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import selectinload

from app.audit import audit_consultation
from app.consultations.common import (
    APPLICATION_DUE,
    COMPLAINTS_MAX,
    DIAGNOSIS_MAX,
    ConsultationError,
    clean_text,
    notify_staff,
    own_documents,
    own_patient,
)
from app.errors import DomainError
from app.extensions import db
from models import (
    OPEN_STATUSES,
    Consultation,
    ConsultationKind,
    ConsultationStatus,
    Disease,
    DocumentType,
    MedicalCenter,
    MedicalDocument,
    disease_center,
    utcnow,
)

# ---------------------------------------------------------------------------------------------
# Centres, their catalogue, the documents a disease requires
# ---------------------------------------------------------------------------------------------


def active_centres() -> list[MedicalCenter]:
    stmt = select(MedicalCenter).where(MedicalCenter.active.is_(True)).order_by(MedicalCenter.name)
    return list(db.session.execute(stmt).scalars())


def active_centre(public_id: uuid.UUID | None) -> MedicalCenter | None:
    if public_id is None:
        return None
    return db.session.execute(
        select(MedicalCenter).where(
            MedicalCenter.public_id == public_id, MedicalCenter.active.is_(True)
        )
    ).scalar_one_or_none()


def centre_diseases(centre: MedicalCenter) -> list[Disease]:
    """The centre's catalogue, with each disease's required document types loaded."""
    stmt = (
        select(Disease)
        .join(disease_center, disease_center.c.disease_id == Disease.id)
        .options(selectinload(Disease.required_document_types))
        .where(disease_center.c.center_id == centre.id, Disease.active.is_(True))
        .order_by(Disease.icd10_code)
    )
    return list(db.session.execute(stmt).scalars())


def document_type_label(document_type: DocumentType) -> str:
    locale = get_locale()
    if locale is not None and locale.language == "en" and document_type.name_en:
        return document_type.name_en
    return document_type.name


def missing_documents(
    disease: Disease | None, documents: Iterable[MedicalDocument]
) -> list[DocumentType]:
    """The disease's required document types that none of `documents` is (catalogue order)."""
    if disease is None:
        return []
    have = {d.document_type_id for d in documents}
    required = sorted(disease.required_document_types, key=lambda t: (t.sort_order, t.name))
    return [t for t in required if t.id not in have]


def _missing_message(missing: list[DocumentType]):
    names = ", ".join(document_type_label(t) for t in missing)
    return _l("Documents missing: %(names)s.", names=names)


# ---------------------------------------------------------------------------------------------
# Submitting
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ApplicationData:
    centre_public_id: uuid.UUID | None
    disease_id: int | None
    diagnosis_text: str
    complaints: str
    document_ids: tuple[uuid.UUID, ...] = ()
    form_token: str | None = None  # the form's hidden one-time id (see below)


def submit_application(
    user, data: ApplicationData, *, new_documents: Sequence[MedicalDocument] = ()
) -> Consultation:
    """The patient's application to a centre: checks, creates it as requested, tells the centre.

    `new_documents` are the ones uploaded with the application, already stored for this
    patient in the same transaction (the caller's unit of work rolls them back on refusal).
    """
    patient = own_patient(user)
    if patient is None:
        raise ConsultationError(_l("Only a patient can send an application."))
    refuse_if_resent(patient.id, data.form_token)
    centre = active_centre(data.centre_public_id)
    if centre is None:
        raise ConsultationError(_l("Choose a medical centre from the list."))
    disease = None
    if data.disease_id is not None:
        disease = next((d for d in centre_diseases(centre) if d.id == data.disease_id), None)
        if disease is None:
            raise ConsultationError(
                _l("This disease is not in the catalogue of the chosen centre.")
            )
    diagnosis = clean_text(
        data.diagnosis_text,
        DIAGNOSIS_MAX,
        _l("The diagnosis is too long: at most %(n)d characters.", n=DIAGNOSIS_MAX),
    )
    if disease is None and not diagnosis:
        raise ConsultationError(
            _l("Choose the disease from the list or type the diagnosis yourself.")
        )
    complaints = clean_text(
        data.complaints,
        COMPLAINTS_MAX,
        _l("The complaints are too long: at most %(n)d characters.", n=COMPLAINTS_MAX),
    )
    if not complaints:
        raise ConsultationError(_l("Describe your complaints briefly."))
    documents = own_documents(patient, data.document_ids)
    for doc in new_documents:
        if doc.patient_id != patient.id:
            raise ConsultationError(_l("Only your own documents can be attached."))
        if doc not in documents:
            documents.append(doc)
    missing = missing_documents(disease, documents)
    if missing:
        raise ConsultationError(_missing_message(missing))

    now = utcnow()
    c = Consultation(
        public_id=uuid.uuid4(),
        kind=ConsultationKind.CENTRE_REQUEST,
        status=ConsultationStatus.REQUESTED,
        patient_id=patient.id,
        patient=patient,
        center_id=centre.id,
        center=centre,
        disease_id=disease.id if disease else None,
        disease=disease,
        diagnosis_text=diagnosis,
        complaints=complaints,
        submitted_at=now,
        due_by=now + APPLICATION_DUE,
        form_token=data.form_token,
    )
    c.documents.extend(documents)
    insert_application(c)
    audit_consultation("consultation.submit", c, user)
    number = str(c)
    notify_staff(
        c,
        "application_submitted",
        lambda: gettext(
            "A new application %(number)s has arrived at %(centre)s.",
            number=number,
            centre=centre.name,
        ),
    )
    return c


# ---------------------------------------------------------------------------------------------
# One application is one application: the form token and the one-open-application rule
# ---------------------------------------------------------------------------------------------


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
