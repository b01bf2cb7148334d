"""A patient's upload: the form's rules, the quota, the stored file and its row.

The original, often Cyrillic, file name is cleaned and kept as metadata only; it never touches
the file system. The document date is checked against today where the patient lives. A
patient's own uploads are within a quota (app/quotas.py). The file is written before the row
(checks.write_file) and removed again if the transaction that records it does not commit.
"""

from __future__ import annotations

import os
import unicodedata
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from typing import BinaryIO
from zoneinfo import ZoneInfo

from flask import current_app
from flask_babel import lazy_gettext as _l

from app.audit import audit
from app.documents import DocumentError
from app.documents.checks import TYPE_REFUSED, extension_acceptable, write_file
from app.extensions import db
from app.storage import on_rollback, remove_stored
from models import DocumentType, MedicalDocument, Patient, utcnow

NOTE_MAX = 2000
ORIGINAL_NAME_MAX = 255


def clean_original_name(filename: str | None) -> str:
    """The name as the patient knows it: no path, no control characters, bounded length."""
    name = unicodedata.normalize("NFC", filename or "")
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C").strip(" .")
    if len(name) > ORIGINAL_NAME_MAX:
        stem, ext = os.path.splitext(name)
        name = stem[: ORIGINAL_NAME_MAX - len(ext)] + ext
    return name or "document"


def patient_zone(patient: Patient) -> ZoneInfo:
    try:
        return ZoneInfo(patient.timezone)
    except Exception:
        return ZoneInfo(current_app.config.get("DEFAULT_TIMEZONE", "Europe/Moscow"))


def today_for(patient: Patient) -> date:
    """Today where the patient lives: Kamchatka is nine hours ahead of Kaliningrad."""
    return datetime.now(patient_zone(patient)).date()


def store_document(
    patient: Patient,
    *,
    by,
    stream: BinaryIO | None,
    filename: str | None,
    document_type: DocumentType | None,
    document_date: date | None = None,
    note: str = "",
) -> MedicalDocument:
    """Validate, store and record one document of `patient`, uploaded by user `by`."""
    if document_type is None:
        raise DocumentError(_l("Choose the document type."))
    if document_date is not None:
        if document_date > today_for(patient):
            raise DocumentError(_l("The document date cannot be in the future."))
        if document_date.year < 1900:
            raise DocumentError(_l("Enter a real document date."))
    note = (note or "").strip()
    if len(note) > NOTE_MAX:
        raise DocumentError(_l("The note is too long: at most %(n)d characters.", n=NOTE_MAX))
    if stream is None or not filename:
        raise DocumentError(_l("Choose a file to upload."))
    original = clean_original_name(filename)
    if not extension_acceptable(original):
        raise DocumentError(TYPE_REFUSED)

    stored = write_file(stream, max_bytes=int(current_app.config["MAX_DOCUMENT_BYTES"]))
    try:
        from app.quotas import check_upload_quota  # it builds on this package: imported late

        check_upload_quota(patient, by=by, size=stored.size)
        doc = MedicalDocument(
            public_id=uuid.uuid4(),
            patient_id=patient.id,
            document_type_id=document_type.id,
            document_type=document_type,
            storage_key=stored.key,
            original_name=original,
            content_type=stored.kind.content_type,
            size_bytes=stored.size,
            sha256=stored.sha256,
            document_date=document_date,
            note=note,
            uploaded_by_id=getattr(by, "id", None),
            uploaded_at=utcnow(),
        )
        db.session.add(doc)
        db.session.flush()
        audit(
            "document.upload",
            actor=by,
            obj_type="medical_document",
            obj_id=doc.public_id,
            patient_id=patient.id,
        )
    except BaseException:
        remove_stored(stored.key)
        raise
    # Flushed is not committed: if the transaction rolls back, the file goes too.
    on_rollback(lambda key=stored.key: remove_stored(key))
    return doc


@dataclass(frozen=True)
class Refused:
    """A file of a batch that was not stored, and why (the checks' translated message)."""

    filename: str
    message: str


def store_documents(
    patient: Patient,
    *,
    by,
    uploads: Iterable[tuple[BinaryIO, str, DocumentType | None]],
) -> tuple[list[MedicalDocument], list[Refused]]:
    """Store several files (stream, name, type) at once, each with store_document()'s checks
    and quota. Each in its own savepoint: a refused file leaves the others stored, so a
    patient who sent five photos and one wrong file keeps the five. Never commits."""
    stored: list[MedicalDocument] = []
    refused: list[Refused] = []
    for stream, filename, document_type in uploads:
        try:
            with db.session.begin_nested():
                doc = store_document(
                    patient, by=by, stream=stream, filename=filename, document_type=document_type
                )
        except DocumentError as exc:
            refused.append(Refused(clean_original_name(filename), str(exc)))
        else:
            stored.append(doc)
    return stored, refused
