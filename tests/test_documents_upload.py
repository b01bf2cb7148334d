"""Medical documents, upload: accepted by content (PDF, JPEG, PNG, DICOM), refused otherwise with
nothing left on disk, size and date limits, the form; the demo documents stored for real."""

from __future__ import annotations

import hashlib
import io
from datetime import date, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.conftest import csrf_token, make_image, make_pdf
from tests.document_support import (
    FILES,
    UPLOAD,
    audit_events,
    document_types,
    documents_of,
    signed_in_patient,
    storage_files,
    store,
)

pytestmark = pytest.mark.usefixtures("empty_storage")  # no document files left by earlier tests


@pytest.fixture
def types(app):
    return document_types(app)


@pytest.fixture
def patient_client(app, client, make_patient):
    return signed_in_patient(app, client, make_patient())


def noise_png() -> bytes:
    import os

    from PIL import Image

    out = io.BytesIO()
    Image.frombytes("RGB", (64, 64), os.urandom(64 * 64 * 3)).save(out, format="PNG")
    return out.getvalue()


def upload(
    client,
    types,
    content: bytes,
    filename: str,
    *,
    type_code: str = "discharge",
    document_date: str = "",
    note: str = "",
    follow: bool = False,
):
    return client.post(
        UPLOAD,
        data={
            "csrf_token": csrf_token(client, UPLOAD),
            "file": (io.BytesIO(content), filename),
            "document_type": str(types[type_code]),
            "document_date": document_date,
            "note": note,
        },
        content_type="multipart/form-data",
        follow_redirects=follow,
    )


@pytest.mark.parametrize("kind", list(FILES))
def test_upload_each_allowed_type(app, patient_client, types, kind):
    filename, make, content_type = FILES[kind]
    content = make()
    response = upload(
        patient_client,
        types,
        content,
        filename,
        document_date="2026-01-15",
        note="После операции",
        follow=True,
    )
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "Документ загружен." in html
    assert filename in html

    [doc] = documents_of(app, patient_client.patient_id)
    assert doc["content_type"] == content_type
    assert doc["original_name"] == filename
    assert doc["size"] == len(content)
    assert doc["sha256"] == hashlib.sha256(content).hexdigest()
    assert doc["document_date"] == date(2026, 1, 15)
    assert doc["note"] == "После операции"

    [stored] = storage_files(app)
    assert stored.read_bytes() == content
    assert stored.name == doc["storage_key"] and "." not in stored.name  # a random key only
    static = Path(app.static_folder).resolve()
    assert not stored.resolve().is_relative_to(static)
    assert ("document.upload", str(doc["public_id"])) in [(a, o) for a, o, *_ in audit_events(app)]


REJECTED = {
    "html renamed pdf": (
        "анализы.pdf",
        b"<html><body><script>alert(1)</script></body></html>",
        "Можно загружать только файлы PDF, JPEG, PNG и DICOM.",
    ),
    "svg": (
        "схема.svg",
        b'<svg xmlns="http://www.w3.org/2000/svg"><script>1</script></svg>',
        "Можно загружать только файлы PDF, JPEG, PNG и DICOM.",
    ),
    "svg renamed png": (
        "схема.png",
        b'<?xml version="1.0"?><svg xmlns="x"></svg>',
        "Можно загружать только файлы PDF, JPEG, PNG и DICOM.",
    ),
    "empty": ("пусто.pdf", b"", "Файл пустой."),
    "pdf header only": (
        "fake.pdf",
        b"%PDF-1.7\nnot really\n%%EOF\n",
        "Файл повреждён или не является документом PDF.",
    ),
    "truncated png": (
        "broken.png",
        make_image("PNG")[:40],
        "Файл повреждён или не является изображением JPEG или PNG.",
    ),
    "exe": (
        "setup.exe",
        b"MZ\x90\x00" + b"\x00" * 200,
        "Можно загружать только файлы PDF, JPEG, PNG и DICOM.",
    ),
}


@pytest.mark.parametrize("case", list(REJECTED))
def test_upload_rejected_by_content(app, patient_client, types, case):
    existing = store(app, patient_client.patient_id, types["lab"], "png")
    before = storage_files(app)
    filename, content, message = REJECTED[case]

    response = upload(patient_client, types, content, filename)

    assert response.status_code == 400
    assert message in response.get_data(as_text=True)
    # Nothing recorded, nothing left on disk (no temp file, no 0-byte file) …
    assert [d["public_id"] for d in documents_of(app, patient_client.patient_id)] == [existing]
    assert storage_files(app) == before
    # … and what was there before is intact.
    download = patient_client.get(f"/cabinet/documents/{existing}/download")
    assert download.status_code == 200
    assert download.data == before[0].read_bytes()


def test_oversized_upload_refused_while_streaming(app, patient_client, types):
    limit = app.config["MAX_DOCUMENT_BYTES"]
    app.config["MAX_DOCUMENT_BYTES"] = 2048
    try:
        content = noise_png()  # a valid image, just too big
        assert len(content) > 2048
        response = upload(patient_client, types, content, "большой.png")
    finally:
        app.config["MAX_DOCUMENT_BYTES"] = limit
    assert response.status_code == 400
    assert "Файл слишком большой: допустимо не более 1 МБ." in response.get_data(as_text=True)
    assert documents_of(app, patient_client.patient_id) == []
    assert storage_files(app) == []


def test_future_document_date_refused(app, patient_client, types):
    tomorrow = (date.today() + timedelta(days=2)).isoformat()
    response = upload(patient_client, types, make_pdf(), "a.pdf", document_date=tomorrow)
    assert response.status_code == 400
    assert "Дата документа не может быть в будущем." in response.get_data(as_text=True)
    assert storage_files(app) == []


def test_file_removed_when_transaction_rolls_back(app, make_patient, types):
    from app.documents.access import document_path
    from app.documents.upload import store_document
    from app.extensions import db
    from models import DocumentType, Patient

    patient_id = make_patient()
    with app.app_context(), app.test_request_context():
        patient = db.session.get(Patient, patient_id)
        doc = store_document(
            patient,
            by=patient.user,
            stream=io.BytesIO(make_pdf()),
            filename="x.pdf",
            document_type=db.session.get(DocumentType, types["other"]),
        )
        path = document_path(doc)
        assert path.is_file()
        db.session.rollback()  # e.g. a later step of the same unit of work failed
        assert not path.exists()
    assert storage_files(app) == []
    assert documents_of(app, patient_id) == []


def test_upload_form_is_russian(patient_client):
    html = patient_client.get(UPLOAD).get_data(as_text=True)
    for label in ("Загрузить документ", "Тип документа", "Дата документа", "Примечание"):
        assert label in html


def test_upload_without_file_is_explained(app, patient_client, types):
    response = patient_client.post(
        UPLOAD,
        data={
            "csrf_token": csrf_token(patient_client, UPLOAD),
            "document_type": str(types["lab"]),
        },
        content_type="multipart/form-data",
    )
    assert response.status_code == 400
    assert "Выберите файл для загрузки." in response.get_data(as_text=True)
    assert storage_files(app) == []


def test_demo_documents_are_real_and_stored(app, make_patient, types):
    from pypdf import PdfReader

    from app.documents.access import document_path
    from app.documents.demo import DEJAVU, store_demo_documents
    from app.extensions import db
    from models import DocumentType, Patient

    patient_id = make_patient(surname="Демова")
    with app.app_context(), app.test_request_context():
        patient = db.session.get(Patient, patient_id)
        by_code = {t.code: t for t in db.session.execute(select(DocumentType)).scalars()}
        stored = store_demo_documents(patient, by_code)
        db.session.commit()
        assert [d.content_type for d in stored] == ["application/pdf", "image/png"]
        assert [d.document_type.code for d in stored] == ["discharge", "ecg"]
        pdf_path = document_path(stored[0])
        assert hashlib.sha256(pdf_path.read_bytes()).hexdigest() == stored[0].sha256
        text = PdfReader(str(pdf_path)).pages[0].extract_text()
        if DEJAVU.exists():
            assert "Выписной эпикриз" in text and "Демова" in text
