"""Reading and deleting documents, always within the reader's scope (DESIGN §4).

Pages of documents (the patient's own, the staff's within app/access.py's scope), one document
by public id (every attempt audited, a foreign one as denied while the view answers 404), the
name a download carries, the DICOM summary of the preview page, deletion (refused while an
unfinished consultation relies on the document) and the JSON of the API.
"""

from __future__ import annotations

import logging
import math
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

from flask_babel import lazy_gettext as _l
from sqlalchemy import ColumnElement, delete, func, select
from sqlalchemy.orm import joinedload

from app.access import own_document_condition, staff_document_condition
from app.audit import audit
from app.documents import DocumentError
from app.documents.checks import DICOM, JPEG, KIND_BY_CONTENT_TYPE, PNG, Kind
from app.extensions import db
from app.storage import on_commit, path_for_key, remove_stored
from models import (
    CLOSED_STATUSES,
    AuditOutcome,
    Consultation,
    MedicalDocument,
    Patient,
    consultation_document,
    parse_public_id,
)

log = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE = 20


@dataclass
class Page:
    items: list[MedicalDocument]
    total: int
    page: int
    page_size: int

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total / self.page_size))


def _page(condition: ColumnElement[bool], page: int, page_size: int, *, with_patient: bool) -> Page:
    page = max(1, page)
    total = db.session.execute(
        select(func.count()).select_from(MedicalDocument).where(condition)
    ).scalar_one()
    options = [joinedload(MedicalDocument.document_type)]
    if with_patient:
        options.append(joinedload(MedicalDocument.patient))
    # Newest first; the id breaks ties so that pages never overlap.
    stmt = (
        select(MedicalDocument)
        .options(*options)
        .where(condition)
        .order_by(MedicalDocument.uploaded_at.desc(), MedicalDocument.id.desc())
        .limit(page_size)
        .offset((page - 1) * page_size)
    )
    items = list(db.session.execute(stmt).scalars())
    return Page(items=items, total=total, page=page, page_size=page_size)


def own_documents(user, *, page: int = 1, page_size: int = DEFAULT_PAGE_SIZE) -> Page:
    """The user's own documents (as a patient), newest first: two queries per page."""
    return _page(own_document_condition(user), page, page_size, with_patient=False)


def staff_documents(
    user, *, patient: Patient | None = None, page: int = 1, page_size: int = DEFAULT_PAGE_SIZE
) -> Page:
    condition = staff_document_condition(user)
    if patient is not None:
        condition = condition & (MedicalDocument.patient_id == patient.id)
    return _page(condition, page, page_size, with_patient=True)


def find_document(
    user, public_id: str | uuid.UUID, *, scope: str, action: str, audit_ok: bool = True
) -> MedicalDocument | None:
    """The document if `user` may see it under `scope` ("own" or "staff"), else None.

    Every attempt is audited: allowed with outcome ok, an existing document outside the
    user's scope with outcome denied (the caller answers 404 either way, so existence is not
    revealed to the user, only to the audit trail).
    """
    condition = own_document_condition(user) if scope == "own" else staff_document_condition(user)
    pid = parse_public_id(public_id)
    if pid is None:
        return None
    doc = db.session.execute(
        select(MedicalDocument)
        .options(joinedload(MedicalDocument.document_type))
        .where(MedicalDocument.public_id == pid, condition)
    ).scalar_one_or_none()
    if doc is None:
        foreign = db.session.execute(
            select(MedicalDocument.patient_id).where(MedicalDocument.public_id == pid)
        ).scalar_one_or_none()
        if foreign is not None:
            audit(
                action,
                actor=user,
                obj_type="medical_document",
                obj_id=pid,
                patient_id=foreign,
                outcome=AuditOutcome.DENIED,
            )
        return None
    if audit_ok:  # False when the action itself audits its outcome (delete)
        audit(
            action,
            actor=user,
            obj_type="medical_document",
            obj_id=doc.public_id,
            patient_id=doc.patient_id,
        )
    return doc


def document_path(doc: MedicalDocument) -> Path:
    return path_for_key(doc.storage_key)


def download_name(doc: MedicalDocument) -> str:
    """The original name, with an extension that matches what the file really is."""
    kind = KIND_BY_CONTENT_TYPE.get(doc.content_type)
    name = doc.original_name or "document"
    ext = os.path.splitext(name)[1].lstrip(".").lower()
    if kind is not None and ext not in kind.extensions:
        name = f"{name}.{kind.extension}"
    return name


def kind_of(doc: MedicalDocument) -> Kind | None:
    return KIND_BY_CONTENT_TYPE.get(doc.content_type)


def is_image(doc: MedicalDocument) -> bool:
    return doc.content_type in (JPEG.content_type, PNG.content_type)


def dicom_summary(doc: MedicalDocument) -> list[tuple[str, str]]:
    """A few descriptive DICOM attributes for the preview page (the viewer may see them)."""
    if doc.content_type != DICOM.content_type:
        return []
    import pydicom

    labels = [
        ("Modality", _l("Modality")),
        ("StudyDate", _l("Study date")),
        ("StudyDescription", _l("Study description")),
        ("SeriesDescription", _l("Series description")),
        ("BodyPartExamined", _l("Body part")),
        ("InstitutionName", _l("Institution")),
        ("Rows", _l("Rows")),
        ("Columns", _l("Columns")),
        ("NumberOfFrames", _l("Frames")),
    ]
    try:
        dataset = pydicom.dcmread(str(document_path(doc)), stop_before_pixels=True)
    except Exception:
        log.exception("stored DICOM %s could not be read", doc.public_id)
        return []
    summary = []
    for keyword, label in labels:
        value = dataset.get(keyword)
        if value not in (None, ""):
            summary.append((str(label), str(value)))
    return summary


# ---------------------------------------------------------------------------------------------
# Deletion
# ---------------------------------------------------------------------------------------------


def open_consultations_holding(doc: MedicalDocument) -> int:
    stmt = (
        select(func.count())
        .select_from(consultation_document)
        .join(Consultation, Consultation.id == consultation_document.c.consultation_id)
        .where(
            consultation_document.c.document_id == doc.id,
            Consultation.status.not_in([s.value for s in CLOSED_STATUSES]),
        )
    )
    return int(db.session.execute(stmt).scalar_one())


def delete_document(doc: MedicalDocument, *, by) -> None:
    """Delete a document unless a consultation still in progress relies on it."""
    if open_consultations_holding(doc):
        raise DocumentError(
            _l(
                "This document is attached to a consultation that is not finished yet, "
                "so it cannot be deleted."
            )
        )
    audit(
        "document.delete",
        actor=by,
        obj_type="medical_document",
        obj_id=doc.public_id,
        patient_id=doc.patient_id,
    )
    # The association has no ORM back-reference from the document side, and SQLite does not
    # cascade foreign keys unless asked: remove the links explicitly.
    db.session.execute(
        delete(consultation_document).where(consultation_document.c.document_id == doc.id)
    )
    key = doc.storage_key
    db.session.delete(doc)
    db.session.flush()
    # The file goes only once the row is gone for good.
    on_commit(lambda: remove_stored(key))


# ---------------------------------------------------------------------------------------------
# API representation
# ---------------------------------------------------------------------------------------------


def document_as_json(doc: MedicalDocument) -> dict:
    return {
        "id": str(doc.public_id),
        "type": doc.document_type.code,
        "type_name": doc.document_type.name,
        "date": doc.document_date.isoformat() if doc.document_date else None,
        "name": doc.original_name,
        "content_type": doc.content_type,
        "size": doc.size_bytes,
        "sha256": doc.sha256,
        "note": doc.note,
        "uploaded_at": doc.uploaded_at.isoformat(),
    }
