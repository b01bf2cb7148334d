"""Medical documents in the patient's cabinet: the list (paged, a fixed number of queries),
preview and download with their headers, every look audited, deleting and when it is refused."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import event

from tests.conftest import csrf_token
from tests.document_support import (
    LIST,
    UPLOAD,
    audit_events,
    consultation,
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


def test_menus_show_document_screens(app, patient_client):
    html = patient_client.get(LIST).get_data(as_text=True)
    assert re.search(
        r'href="/cabinet/documents/"[^>]*>[^<]*(<i[^>]*></i>)?[^<]*Мои документы', html
    )


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
