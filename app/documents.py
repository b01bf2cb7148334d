"""Medical documents: content checks, upload, scope-checked access and deletion.

DESIGN §4: files live outside static/ under random keys, are written to a temp file and
atomically renamed (app/storage.py, the file store), carry the SHA-256 of the bytes stored, are
recognised by content (magic bytes and a real parser) rather than by extension, and are only
ever served by an authorised view. A DICOM file is stored with its 128-byte preamble zeroed
(neutralise_head). The original, often Cyrillic, file name is metadata only; it never touches
the file system. A patient's own uploads are within a quota (app/quotas.py).

Services here take the acting user explicitly and never commit: the view's unit of work does.
A stored file is tied to the transaction that records it: if that transaction does not commit,
the file is removed (storage.on_rollback / on_commit).
"""

from __future__ import annotations

import io
import itertools
import logging
import math
import os
import re
import unicodedata
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote
from zoneinfo import ZoneInfo

from flask import current_app
from flask_babel import LazyString
from flask_babel import lazy_gettext as _l
from flask_uploads import UploadSet
from flask_uploads.flask_uploads import UploadConfiguration
from sqlalchemy import ColumnElement, delete, func, select
from sqlalchemy.orm import joinedload

from app import storage
from app.access import own_document_condition, staff_document_condition
from app.audit import audit
from app.errors import DomainError
from app.extensions import db
from app.storage import on_commit, on_rollback, path_for_key, remove_stored
from models import (
    CLOSED_STATUSES,
    AuditOutcome,
    Consultation,
    DocumentType,
    MedicalDocument,
    Patient,
    consultation_document,
    utcnow,
)

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
NOTE_MAX = 2000
ORIGINAL_NAME_MAX = 255
DEFAULT_PAGE_SIZE = 20

# A consultation in one of these statuses no longer needs its documents to stay put.
FINISHED_STATUSES = CLOSED_STATUSES


class DocumentError(DomainError):
    """The upload or the action on a document was refused; str() is shown to the user."""


# ---------------------------------------------------------------------------------------------
# What we accept
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    code: str
    content_type: str
    extension: str  # the canonical one, used to fix a download name that lies
    extensions: tuple[str, ...]
    inline: bool  # a browser can show it in the page


PDF = Kind("pdf", "application/pdf", "pdf", ("pdf",), True)
JPEG = Kind("jpeg", "image/jpeg", "jpg", ("jpg", "jpeg"), True)
PNG = Kind("png", "image/png", "png", ("png",), True)
DICOM = Kind("dicom", "application/dicom", "dcm", ("dcm", "dicom"), False)
KINDS = (PDF, JPEG, PNG, DICOM)
KIND_BY_CONTENT_TYPE = {k.content_type: k for k in KINDS}

# Flask-Reuploaded as the first, cheap filter on the name only. Its own save() is never used
# (DESIGN §5: it strips Cyrillic names and leaves 0-byte files), nor configure_uploads(), which
# would mount a public route serving the upload folder. A fixed configuration with empty
# allow/deny lists keeps it from looking for one on the app.
documents_upload_set = UploadSet("documents", extensions=("pdf", "jpg", "jpeg", "png", "dcm"))
documents_upload_set._config = UploadConfiguration(destination=os.devnull)

TYPE_REFUSED = _l("Only PDF, JPEG, PNG and DICOM files can be uploaded.")


def extension_acceptable(filename: str) -> bool:
    """Name-level pre-check. DICOM files from a CD usually have no extension at all
    (IM000001), so a name without an extension is left to the content check."""
    ext = os.path.splitext(filename)[1].lstrip(".").lower()
    return not ext or documents_upload_set.extension_allowed(ext)


# ---------------------------------------------------------------------------------------------
# Content checks: magic bytes first, then the real parser
# ---------------------------------------------------------------------------------------------


def _check_pdf(path: Path) -> None:
    from pypdf import PdfReader

    damaged = DocumentError(_l("The file is damaged or is not a real PDF document."))
    size = path.stat().st_size
    with path.open("rb") as fh:
        fh.seek(max(0, size - 2048))
        if b"%%EOF" not in fh.read():
            raise damaged
    try:
        reader = PdfReader(str(path), strict=False)
        if reader.is_encrypted and not reader.decrypt(""):
            raise DocumentError(
                _l("The PDF is protected with a password: save it without the password.")
            )
        if len(reader.pages) < 1:
            raise damaged
    except DocumentError:
        raise
    except Exception as exc:  # pypdf raises many unrelated types on garbage
        raise damaged from exc


def _check_image(path: Path, expected_format: str) -> None:
    from PIL import Image

    damaged = DocumentError(_l("The file is damaged or is not a real JPEG or PNG image."))
    try:
        with warnings.catch_warnings():
            # A decompression bomb is refused, not merely warned about.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                if image.format != expected_format or not all(image.size):
                    raise damaged
                image.verify()
    except DocumentError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DocumentError(_l("The image is too large to process.")) from exc
    except Exception as exc:
        raise damaged from exc


def _check_dicom(path: Path) -> None:
    import pydicom

    try:
        dataset = pydicom.dcmread(str(path), stop_before_pixels=True)
        if "TransferSyntaxUID" not in dataset.file_meta:
            raise ValueError("no transfer syntax")
    except Exception as exc:
        raise DocumentError(_l("The file is damaged or is not a real DICOM file.")) from exc


def detect_kind(path: Path) -> Kind:
    """Recognise the file by its bytes, then prove it with the format's parser."""
    with path.open("rb") as fh:
        head = fh.read(132)
    if head.startswith(b"%PDF-"):
        _check_pdf(path)
        return PDF
    if head.startswith(b"\xff\xd8\xff"):
        _check_image(path, "JPEG")
        return JPEG
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        _check_image(path, "PNG")
        return PNG
    if len(head) == 132 and head[128:132] == b"DICM":
        _check_dicom(path)
        return DICOM
    raise DocumentError(TYPE_REFUSED)


# ---------------------------------------------------------------------------------------------
# Storage (the file store itself is app/storage.py)
# ---------------------------------------------------------------------------------------------

DICOM_HEAD = 132  # the 128-byte preamble, then "DICM"
OTHER_MAGICS = (b"%PDF-", b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n")


@dataclass(frozen=True)
class StoredFile:
    key: str
    path: Path
    size: int
    sha256: str
    kind: Kind


def _read_head(stream: BinaryIO, n: int) -> bytes:
    head = b""
    while len(head) < n and (chunk := stream.read(n - len(head))):
        head += chunk
    return head


def neutralise_head(head: bytes) -> bytes:
    """A DICOM file's 128-byte preamble is free for the application, so a Windows executable
    or an HTML page can hide there in a valid file ("PE-DICOM", CVE-2019-11687): it is stored
    as zeros, which DICOM readers ignore. A file that starts as a PDF or an image is that."""
    if head[128:DICOM_HEAD] == b"DICM" and not head.startswith(OTHER_MAGICS):
        return bytes(128) + head[128:]
    return head


def _chunks(stream: BinaryIO, max_bytes: int) -> Iterator[bytes]:
    size = 0
    head = neutralise_head(_read_head(stream, DICOM_HEAD))
    for chunk in itertools.chain([head], iter(lambda: stream.read(CHUNK), b"")):
        size += len(chunk)
        if size > max_bytes:
            raise DocumentError(too_large_message(max_bytes))
        yield chunk


def _check_stored(path: Path, size: int) -> Kind:
    if size == 0:
        raise DocumentError(_l("The file is empty."))
    return detect_kind(path)


def write_file(stream: BinaryIO, *, max_bytes: int) -> StoredFile:
    """Stream, check by content and store a file; its SHA-256 is of the bytes stored."""
    written, kind = storage.write_atomically(_chunks(stream, max_bytes), check=_check_stored)
    return StoredFile(written.key, written.path, written.size, written.sha256, kind)


def too_large_message(max_bytes: int) -> LazyString:
    # Same msgid as the 413 handler, so both paths say the same thing.
    limit_mb = max(1, math.ceil(max_bytes / 2**20))
    return _l("The file is too large: the limit is %(n)d MB.", n=limit_mb)


# ---------------------------------------------------------------------------------------------
# Names
# ---------------------------------------------------------------------------------------------


def clean_original_name(filename: str | None) -> str:
    """The name as the patient knows it: no path, no control characters, bounded length."""
    name = unicodedata.normalize("NFC", filename or "")
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C").strip(" .")
    if len(name) > ORIGINAL_NAME_MAX:
        stem, ext = os.path.splitext(name)
        name = stem[: ORIGINAL_NAME_MAX - len(ext)] + ext
    return name or "document"


def download_name(doc: MedicalDocument) -> str:
    """The original name, with an extension that matches what the file really is."""
    kind = KIND_BY_CONTENT_TYPE.get(doc.content_type)
    name = doc.original_name or "document"
    ext = os.path.splitext(name)[1].lstrip(".").lower()
    if kind is not None and ext not in kind.extensions:
        name = f"{name}.{kind.extension}"
    return name


def content_disposition(filename: str, *, inline: bool = False) -> str:
    """RFC 6266 / 5987: an ASCII fallback for old clients plus the exact UTF-8 name."""
    stem, ext = os.path.splitext(filename)

    def ascii_only(text: str, allowed: str) -> str:
        folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
        return re.sub(allowed, "_", folded).strip(" ._")

    ascii_stem = ascii_only(stem, r"[^A-Za-z0-9._() -]")
    if not re.search(r"[A-Za-z0-9]", ascii_stem):
        ascii_stem = "document"  # a Cyrillic name folds to nothing useful
    ascii_ext = ascii_only(ext, r"[^A-Za-z0-9]")
    ascii_name = f"{ascii_stem}.{ascii_ext}" if ascii_ext else ascii_stem
    disposition = "inline" if inline else "attachment"
    return f"{disposition}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename, safe='')}"


# ---------------------------------------------------------------------------------------------
# Upload
# ---------------------------------------------------------------------------------------------


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
        from app.quotas import check_upload_quota  # it builds on this module

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


# ---------------------------------------------------------------------------------------------
# Reading, with scope
# ---------------------------------------------------------------------------------------------


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


def _parse_public_id(public_id: str | uuid.UUID) -> uuid.UUID | None:
    if isinstance(public_id, uuid.UUID):
        return public_id
    try:
        return uuid.UUID(str(public_id))
    except ValueError:
        return None


def find_document(
    user, public_id: str | uuid.UUID, *, scope: str, action: str, audit_ok: bool = True
) -> MedicalDocument | None:
    """The document if `user` may see it under `scope` ("own" or "staff"), else None.

    Every attempt is audited: allowed with outcome ok, an existing document outside the
    user's scope with outcome denied (the caller answers 404 either way, so existence is not
    revealed to the user, only to the audit trail).
    """
    condition = own_document_condition(user) if scope == "own" else staff_document_condition(user)
    pid = _parse_public_id(public_id)
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
            Consultation.status.not_in([s.value for s in FINISHED_STATUSES]),
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


# ---------------------------------------------------------------------------------------------
# Demo documents
# ---------------------------------------------------------------------------------------------

DEJAVU = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")


def _demo_pdf(patient: Patient) -> bytes:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.add_page()
    if DEJAVU.exists():
        pdf.add_font("DejaVu", fname=str(DEJAVU))
        pdf.set_font("DejaVu", size=14)
        lines = [
            "Выписной эпикриз (демонстрационный документ)",
            f"Пациент: {patient.full_name}",
            f"Дата рождения: {patient.birth_date:%d.%m.%Y}",
            "Находился на лечении в кардиологическом отделении.",
            "Рекомендовано: наблюдение кардиолога, контроль АД, ЭКГ через 3 месяца.",
        ]
    else:  # no Cyrillic font installed: a plain ASCII document still shows the flow
        pdf.set_font("Helvetica", size=14)
        lines = ["Discharge summary (demo document)", "Patient: demo patient"]
    for line in lines:
        pdf.multi_cell(0, 10, line, new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())


def _demo_ecg_png() -> bytes:
    from PIL import Image, ImageDraw

    width, height = 800, 240
    image = Image.new("RGB", (width, height), (255, 245, 245))
    draw = ImageDraw.Draw(image)
    for x in range(0, width, 10):
        draw.line([(x, 0), (x, height)], fill=(255, 205, 205) if x % 50 else (240, 150, 150))
    for y in range(0, height, 10):
        draw.line([(0, y), (width, y)], fill=(255, 205, 205) if y % 50 else (240, 150, 150))
    baseline, points = height // 2, []
    for x in range(width):
        phase = (x % 160) / 160
        y = 6 * math.sin(2 * math.pi * phase)  # P and T waves, roughly
        if 0.40 < phase < 0.43:
            y -= 10
        elif 0.43 <= phase < 0.47:
            y += 80  # the R spike
        elif 0.47 <= phase < 0.50:
            y -= 20
        points.append((x, baseline - y))
    draw.line(points, fill=(20, 20, 20), width=2)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def store_demo_documents(patient: Patient, types: dict[str, DocumentType]) -> list[MedicalDocument]:
    """A discharge summary (PDF) and an ECG (PNG) through the same path as an upload."""
    other = types.get("other")
    return [
        store_document(
            patient,
            by=patient.user,
            stream=io.BytesIO(_demo_pdf(patient)),
            filename="Выписка из стационара.pdf",
            document_type=types.get("discharge", other),
            note="Демонстрационный документ",
        ),
        store_document(
            patient,
            by=patient.user,
            stream=io.BytesIO(_demo_ecg_png()),
            filename="ЭКГ.png",
            document_type=types.get("ecg", other),
            note="Демонстрационный документ",
        ),
    ]
