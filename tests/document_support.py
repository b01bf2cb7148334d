"""Shared by the medical document tests (test_documents_*): small real files of each kind, a
document stored as its patient, the rows, files and audit events read back, a consultation."""

from __future__ import annotations

import io
from pathlib import Path

from sqlalchemy import select

from tests.conftest import login, make_dicom, make_image, make_pdf, patient_username

UPLOAD = "/cabinet/documents/upload"


LIST = "/cabinet/documents/"


FILES = {
    "pdf": ("Выписка из стационара.pdf", make_pdf, "application/pdf"),
    "jpeg": ("Снимок.jpg", lambda: make_image("JPEG"), "image/jpeg"),
    "png": ("ЭКГ.png", lambda: make_image("PNG"), "image/png"),
    "dicom": ("МРТ.dcm", make_dicom, "application/dicom"),
}


def document_types(app) -> dict[str, int]:
    """The catalogue's document types, loaded: code → id."""
    from app.catalogue import load_catalogue
    from app.extensions import db

    with app.app_context():
        loaded = load_catalogue()
        db.session.commit()
        return {code: t.id for code, t in loaded.items()}


def signed_in_patient(app, client, patient_id: int):
    """The client, signed in as the patient; the patient's id is on it (client.patient_id)."""
    assert login(client, patient_username(app, patient_id)).status_code == 302
    client.patient_id = patient_id
    return client


def storage_files(app) -> list[Path]:
    root = Path(app.config["STORAGE_DIR"])
    return sorted(p for p in root.rglob("*") if p.is_file())


def documents_of(app, patient_id: int):
    from app.extensions import db
    from models import MedicalDocument

    with app.app_context():
        rows = db.session.execute(
            select(MedicalDocument).where(MedicalDocument.patient_id == patient_id)
        ).scalars()
        return [
            {
                "public_id": d.public_id,
                "id": d.id,
                "storage_key": d.storage_key,
                "sha256": d.sha256,
                "content_type": d.content_type,
                "size": d.size_bytes,
                "original_name": d.original_name,
                "document_date": d.document_date,
                "note": d.note,
            }
            for d in rows
        ]


def store(app, patient_id: int, type_id: int, kind: str = "pdf", name: str | None = None):
    """Store a document through the service, as the patient; returns its public id."""
    from app.documents.upload import store_document
    from app.extensions import db
    from models import DocumentType, Patient

    filename, make, _ = FILES[kind]
    with app.app_context(), app.test_request_context():
        patient = db.session.get(Patient, patient_id)
        doc = store_document(
            patient,
            by=patient.user,
            stream=io.BytesIO(make()),
            filename=name or filename,
            document_type=db.session.get(DocumentType, type_id),
        )
        db.session.commit()
        return doc.public_id


def audit_events(app, action: str | None = None):
    from app.extensions import db
    from models import AuditEvent

    with app.app_context():
        stmt = select(AuditEvent).order_by(AuditEvent.id)
        if action:
            stmt = stmt.where(AuditEvent.action == action)
        return [
            (e.action, e.object_id, e.patient_id, e.outcome, e.actor_id)
            for e in db.session.execute(stmt).scalars()
        ]


def consultation(
    app,
    patient_id: int,
    *,
    center_id=None,
    doctor_id=None,
    status="requested",
    kind="centre_request",
    documents=(),
):
    from app.extensions import db
    from models import Consultation, MedicalDocument

    with app.app_context():
        c = Consultation(
            kind=kind,
            status=status,
            patient_id=patient_id,
            center_id=center_id,
            doctor_id=doctor_id,
        )
        for public_id in documents:
            c.documents.append(
                db.session.execute(
                    select(MedicalDocument).where(MedicalDocument.public_id == public_id)
                ).scalar_one()
            )
        db.session.add(c)
        db.session.commit()
        return c.id


def doctor_username(app, doctor_id: int) -> str:
    from app.extensions import db
    from models import Doctor

    with app.app_context():
        return db.session.get(Doctor, doctor_id).user.username
