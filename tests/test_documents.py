"""Medical documents: upload by content, storage, serving headers, row scope, audit, API."""

from __future__ import annotations

import hashlib
import io
import re
import uuid
from datetime import date, timedelta
from pathlib import Path

import pytest
from sqlalchemy import event, select

from tests.conftest import csrf_token, login, make_dicom, make_image, make_pdf, patient_username

UPLOAD = "/cabinet/documents/upload"
LIST = "/cabinet/documents/"


# ---------------------------------------------------------------------------------------------
# Small real files, generated here rather than kept as fixtures
# ---------------------------------------------------------------------------------------------


def noise_png() -> bytes:
    import os

    from PIL import Image

    out = io.BytesIO()
    Image.frombytes("RGB", (64, 64), os.urandom(64 * 64 * 3)).save(out, format="PNG")
    return out.getvalue()


FILES = {
    "pdf": ("Выписка из стационара.pdf", make_pdf, "application/pdf"),
    "jpeg": ("Снимок.jpg", lambda: make_image("JPEG"), "image/jpeg"),
    "png": ("ЭКГ.png", lambda: make_image("PNG"), "image/png"),
    "dicom": ("МРТ.dcm", make_dicom, "application/dicom"),
}


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def empty_storage(app):
    """The database is emptied per test by conftest; the storage folder is emptied here."""
    import shutil

    shutil.rmtree(Path(app.config["STORAGE_DIR"]) / "documents", ignore_errors=True)


@pytest.fixture
def types(app):
    from app.catalogue import load_catalogue
    from app.extensions import db

    with app.app_context():
        loaded = load_catalogue()
        db.session.commit()
        return {code: t.id for code, t in loaded.items()}


def storage_files(app) -> list[Path]:
    root = Path(app.config["STORAGE_DIR"])
    return sorted(p for p in root.rglob("*") if p.is_file())


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


def flashes(html: str) -> str:
    return " ".join(re.findall(r'class="alert[^"]*"[^>]*>(.*?)</div>', html, re.S))


@pytest.fixture
def patient_client(app, client, make_patient):
    patient_id = make_patient()
    assert login(client, patient_username(app, patient_id)).status_code == 302
    client.patient_id = patient_id
    return client


# ---------------------------------------------------------------------------------------------
# Upload
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# List, preview, download
# ---------------------------------------------------------------------------------------------


def test_list_newest_first_and_paginated(app, patient_client, types):
    ids = [
        store(app, patient_client.patient_id, types["lab"], "png", f"файл{i}.png")
        for i in range(23)
    ]
    html = patient_client.get(LIST).get_data(as_text=True)
    assert "Мои документы" in html
    assert "файл22.png" in html and "файл3.png" in html
    assert "файл2.png" not in html  # on page 2 (20 per page)
    assert html.index("файл22.png") < html.index("файл21.png")
    page2 = patient_client.get(LIST + "?page=2").get_data(as_text=True)
    assert "файл2.png" in page2 and "файл0.png" in page2 and "файл22.png" not in page2
    assert str(ids[0]) in page2  # links use the public id


def test_list_query_count_does_not_grow(app, patient_client, types):
    from app.extensions import db

    def count_queries() -> int:
        statements: list[str] = []
        with app.app_context():
            engine = db.engine

        def record(conn, cursor, statement, *args):
            statements.append(statement)

        event.listen(engine, "before_cursor_execute", record)
        try:
            assert patient_client.get(LIST).status_code == 200
        finally:
            event.remove(engine, "before_cursor_execute", record)
        return len(statements)

    store(app, patient_client.patient_id, types["lab"], "png")
    few = count_queries()
    for _ in range(8):
        store(app, patient_client.patient_id, types["ecg"], "png")
    assert count_queries() == few


def test_download_headers_and_cyrillic_name(app, patient_client, types):
    public_id = store(app, patient_client.patient_id, types["discharge"], "pdf")
    response = patient_client.get(f"/cabinet/documents/{public_id}/download")
    assert response.status_code == 200
    assert response.data == storage_files(app)[0].read_bytes()
    assert response.mimetype == "application/pdf"
    disposition = response.headers["Content-Disposition"]
    assert disposition.startswith("attachment;")
    assert 'filename="document.pdf"' in disposition  # ASCII fallback
    assert "filename*=UTF-8''%D0%92%D1%8B%D0%BF%D0%B8%D1%81%D0%BA%D0%B0" in disposition
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"] == "no-store"


def test_download_name_follows_content_not_extension(app, patient_client, types):
    public_id = store(app, patient_client.patient_id, types["other"], "png", "scan.pdf")
    response = patient_client.get(f"/cabinet/documents/{public_id}/download")
    assert response.mimetype == "image/png"
    assert 'filename="scan.pdf.png"' in response.headers["Content-Disposition"]


@pytest.mark.parametrize("kind", ["png", "pdf"])
def test_preview_page_and_inline(app, patient_client, types, kind):
    public_id = store(app, patient_client.patient_id, types["ecg"], kind)
    html = patient_client.get(f"/cabinet/documents/{public_id}/").get_data(as_text=True)
    inline_url = f"/cabinet/documents/{public_id}/inline"
    tag = "<img" if kind == "png" else "<iframe"
    assert re.search(rf'{tag}[^>]+src="{inline_url}"', html)
    assert "Скачать" in html

    response = patient_client.get(inline_url)
    assert response.status_code == 200
    assert response.headers["Content-Disposition"].startswith("inline;")
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"] == "no-store"
    assert "sandbox" in response.headers["Content-Security-Policy"]


def test_dicom_preview_shows_metadata_and_offers_download(app, patient_client, types):
    public_id = store(app, patient_client.patient_id, types["mri"], "dicom")
    html = patient_client.get(f"/cabinet/documents/{public_id}/").get_data(as_text=True)
    assert "Модальность" in html and "OT" in html and "Test study" in html
    assert f"/cabinet/documents/{public_id}/download" in html
    assert patient_client.get(f"/cabinet/documents/{public_id}/inline").status_code == 404


def test_every_look_is_audited(app, patient_client, types):
    public_id = store(app, patient_client.patient_id, types["ecg"], "png")
    patient_client.get(f"/cabinet/documents/{public_id}/")
    patient_client.get(f"/cabinet/documents/{public_id}/inline")
    patient_client.get(f"/cabinet/documents/{public_id}/download")
    events = [
        (action, obj, pid, outcome)
        for action, obj, pid, outcome, _ in audit_events(app)
        if action != "document.upload"
    ]
    expected = [
        (action, str(public_id), patient_client.patient_id, "ok")
        for action in ("document.view", "document.preview", "document.download")
    ]
    assert events == expected


# ---------------------------------------------------------------------------------------------
# Delete
# ---------------------------------------------------------------------------------------------


def test_delete_own_document(app, patient_client, types):
    public_id = store(app, patient_client.patient_id, types["lab"], "pdf")
    assert len(storage_files(app)) == 1
    response = patient_client.post(
        f"/cabinet/documents/{public_id}/delete",
        data={"csrf_token": csrf_token(patient_client, UPLOAD)},
        follow_redirects=True,
    )
    assert "Документ удалён." in response.get_data(as_text=True)
    assert documents_of(app, patient_client.patient_id) == []
    assert storage_files(app) == []
    assert [e[0] for e in audit_events(app, "document.delete")] == ["document.delete"]


def test_delete_needs_csrf(app, patient_client, types):
    public_id = store(app, patient_client.patient_id, types["lab"], "pdf")
    patient_client.post(f"/cabinet/documents/{public_id}/delete")
    assert len(documents_of(app, patient_client.patient_id)) == 1


def test_delete_refused_while_consultation_open(app, patient_client, types, make_center):
    public_id = store(app, patient_client.patient_id, types["lab"], "pdf")
    consultation(app, patient_client.patient_id, center_id=make_center(), documents=[public_id])
    response = patient_client.post(
        f"/cabinet/documents/{public_id}/delete",
        data={"csrf_token": csrf_token(patient_client, UPLOAD)},
        follow_redirects=True,
    )
    assert "приложен к консультации, которая ещё не завершена" in response.get_data(as_text=True)
    assert len(documents_of(app, patient_client.patient_id)) == 1
    assert len(storage_files(app)) == 1


def test_delete_allowed_after_consultation_finished(app, patient_client, types, make_center):
    public_id = store(app, patient_client.patient_id, types["lab"], "pdf")
    consultation(
        app,
        patient_client.patient_id,
        center_id=make_center(),
        status="completed",
        documents=[public_id],
    )
    patient_client.post(
        f"/cabinet/documents/{public_id}/delete",
        data={"csrf_token": csrf_token(patient_client, UPLOAD)},
    )
    assert documents_of(app, patient_client.patient_id) == []
    assert storage_files(app) == []


# ---------------------------------------------------------------------------------------------
# Scope: other patients, doctors, managers, anonymous
# ---------------------------------------------------------------------------------------------


def test_other_patient_gets_404(app, patient_client, make_patient, types):
    other_id = make_patient()
    foreign = store(app, other_id, types["lab"], "png", "чужой.png")
    html = patient_client.get(LIST).get_data(as_text=True)
    assert "чужой.png" not in html
    for path in ("/", "/inline", "/download"):
        assert patient_client.get(f"/cabinet/documents/{foreign}{path}").status_code == 404
    response = patient_client.post(
        f"/cabinet/documents/{foreign}/delete",
        data={"csrf_token": csrf_token(patient_client, UPLOAD)},
    )
    assert response.status_code == 404
    assert len(documents_of(app, other_id)) == 1
    denied = [e for e in audit_events(app) if e[3] == "denied"]
    assert len(denied) == 4
    assert {e[1] for e in denied} == {str(foreign)}
    assert {e[2] for e in denied} == {other_id}
    # An id that does not exist at all is a plain 404 too.
    assert patient_client.get(f"/cabinet/documents/{uuid.uuid4()}/download").status_code == 404
    assert patient_client.get("/cabinet/documents/12/download").status_code == 404


def test_patient_sees_no_staff_screen(app, patient_client, types):
    public_id = store(app, patient_client.patient_id, types["lab"], "png")
    assert patient_client.get("/staff/documents/").status_code == 403
    assert patient_client.get(f"/staff/documents/{public_id}/download").status_code == 403


def test_doctor_without_relation_gets_404(
    app, client, make_patient, make_doctor, make_center, types
):
    patient_id = make_patient()
    public_id = store(app, patient_id, types["lab"], "png", "анализ.png")
    other_center = make_center()
    consultation(app, patient_id, center_id=make_center())  # another centre
    doctor_id = make_doctor(center_id=other_center)
    login(client, doctor_username(app, doctor_id))
    assert "анализ.png" not in client.get("/staff/documents/").get_data(as_text=True)
    for path in ("/", "/inline", "/download"):
        assert client.get(f"/staff/documents/{public_id}{path}").status_code == 404
    assert [e[3] for e in audit_events(app) if e[0] != "document.upload"] == ["denied"] * 3


def test_doctor_of_the_centre_sees_documents(
    app, client, make_patient, make_doctor, make_center, types
):
    patient_id = make_patient(surname="Кардиова")
    public_id = store(app, patient_id, types["ecg"], "png", "экг.png")
    center_id = make_center()
    consultation(app, patient_id, center_id=center_id, kind="centre_request", status="requested")
    doctor_id = make_doctor(center_id=center_id)
    login(client, doctor_username(app, doctor_id))

    html = client.get("/staff/documents/").get_data(as_text=True)
    assert "экг.png" in html and "Кардиова" in html
    show = client.get(f"/staff/documents/{public_id}/").get_data(as_text=True)
    assert f'src="/staff/documents/{public_id}/inline"' in show
    download = client.get(f"/staff/documents/{public_id}/download")
    assert download.status_code == 200
    assert download.headers["Content-Disposition"].startswith("attachment;")
    assert download.headers["Cache-Control"] == "no-store"
    assert client.get(f"/staff/documents/{public_id}/inline").status_code == 200
    actor = audit_events(app, "document.download")[0]
    assert actor[2] == patient_id and actor[3] == "ok"


def test_doctor_of_the_consultation_sees_documents(app, client, make_patient, make_doctor, types):
    patient_id = make_patient()
    public_id = store(app, patient_id, types["ecg"], "png")
    duty_id = make_doctor(is_duty=True)
    consultation(app, patient_id, doctor_id=duty_id, kind="duty", status="scheduled")
    login(client, doctor_username(app, duty_id))
    assert client.get(f"/staff/documents/{public_id}/download").status_code == 200


def test_manager_has_no_access_to_documents(app, client, make_patient, make_staff, types):
    patient_id = make_patient()
    public_id = store(app, patient_id, types["ecg"], "png")
    login(client, make_staff("Manager"))
    assert client.get("/staff/documents/").status_code == 403
    assert client.get(f"/staff/documents/{public_id}/download").status_code == 403
    assert client.get(f"/cabinet/documents/{public_id}/download").status_code == 403


def test_admin_sees_every_document(app, client, make_patient, make_staff, types):
    public_id = store(app, make_patient(), types["ecg"], "png")
    login(client, make_staff("Admin"))
    assert client.get(f"/staff/documents/{public_id}/download").status_code == 200


def test_anonymous_is_sent_to_login(app, client, make_patient, types):
    public_id = store(app, make_patient(), types["ecg"], "png")
    for path in (
        LIST,
        UPLOAD,
        f"/cabinet/documents/{public_id}/download",
        "/staff/documents/",
        f"/staff/documents/{public_id}/download",
    ):
        response = client.get(path)
        assert response.status_code == 302, path
        assert "/login" in response.headers["Location"]
    assert client.get("/api/v1/my/documents/").status_code == 401


def test_scope_conditions(app, make_patient, make_doctor, make_center, make_staff):
    from app.access import staff_patient_condition
    from app.extensions import db
    from models import OblakoUser, Patient

    center_id = make_center()
    mine, other = make_patient(), make_patient()
    consultation(app, mine, center_id=center_id)
    doctor_id = make_doctor(center_id=center_id)
    manager = make_staff("Manager")

    def visible(username: str) -> set[int]:
        with app.app_context():
            user = db.session.execute(
                select(OblakoUser).where(OblakoUser.username == username)
            ).scalar_one()
            return set(
                db.session.execute(
                    select(Patient.id).where(staff_patient_condition(user))
                ).scalars()
            )

    assert visible(doctor_username(app, doctor_id)) == {mine}
    assert visible(manager) == {mine, other}
    assert visible(patient_username(app, mine)) == set()


# ---------------------------------------------------------------------------------------------
# JSON API
# ---------------------------------------------------------------------------------------------


def test_api_lists_own_documents(app, patient_client, make_patient, types):
    own = store(app, patient_client.patient_id, types["ecg"], "png")
    store(app, make_patient(), types["ecg"], "png")
    response = patient_client.get("/api/v1/my/documents/")
    assert response.status_code == 200
    body = response.get_json()
    assert body["count"] == 1
    [item] = body["result"]
    assert item["id"] == str(own)
    assert item["type"] == "ecg"
    [doc] = documents_of(app, patient_client.patient_id)
    assert (item["sha256"], item["size"]) == (doc["sha256"], doc["size"])
    assert response.headers["Cache-Control"] == "no-store"


def test_api_with_jwt_and_refused_for_staff(app, client, make_patient, make_doctor, types):
    from flask_jwt_extended import create_access_token

    from app.extensions import db
    from models import Patient

    patient_id = make_patient()
    store(app, patient_id, types["ecg"], "png")
    with app.app_context():
        user_id = db.session.get(Patient, patient_id).user_id
        token = create_access_token(identity=str(user_id), fresh=True)
    response = client.get("/api/v1/my/documents/", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    assert response.get_json()["count"] == 1

    doctor_client = app.test_client()
    login(doctor_client, doctor_username(app, make_doctor()))
    assert doctor_client.get("/api/v1/my/documents/").status_code == 403


# ---------------------------------------------------------------------------------------------
# Demo documents
# ---------------------------------------------------------------------------------------------


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


def test_menus_show_document_screens(app, patient_client):
    html = patient_client.get(LIST).get_data(as_text=True)
    assert re.search(
        r'href="/cabinet/documents/"[^>]*>[^<]*(<i[^>]*></i>)?[^<]*Мои документы', html
    )


def test_staff_list_for_a_patient_out_of_scope_is_404(
    app, client, make_patient, make_doctor, make_center, types
):
    from app.extensions import db
    from models import Patient

    center_id = make_center()
    mine, other = make_patient(surname="Своя"), make_patient(surname="Чужая")
    consultation(app, mine, center_id=center_id)
    store(app, mine, types["lab"], "png", "свой.png")
    store(app, other, types["lab"], "png", "чужой.png")
    with app.app_context():
        mine_uuid = db.session.get(Patient, mine).public_id
        other_uuid = db.session.get(Patient, other).public_id
    login(client, doctor_username(app, make_doctor(center_id=center_id)))
    html = client.get(f"/staff/documents/?patient={mine_uuid}").get_data(as_text=True)
    assert "свой.png" in html and "чужой.png" not in html
    assert client.get(f"/staff/documents/?patient={other_uuid}").status_code == 404
    assert "Документы пациентов" in client.get("/staff/documents/").get_data(as_text=True)
