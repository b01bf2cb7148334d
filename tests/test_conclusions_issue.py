"""Issuing the doctor's conclusion: the prefilled form, completing the consultation, the checks
(started, happened, every field, ICD-10 codes), who may issue it, a missing Cyrillic font."""

from __future__ import annotations

import pytest

from tests.conclusion_support import (
    GOOD,
    as_user,
    audit_actions,
    build_world,
    conclusions,
    consultation_row,
    doctor_client,
    flashed,
    form_url,
    issue,
    make_consultation,
    notifications_of,
    patient_client,
    started,
)


@pytest.fixture
def world(app, make_patient, make_center, make_doctor, make_staff):
    return build_world(app, make_patient, make_center, make_doctor, make_staff)


def test_form_is_prefilled_from_the_application(app, world):
    client, cid = started(app, world)
    html = client.get(form_url(cid)).get_data(as_text=True)
    assert "Выдать заключение" in html
    assert 'value="I20.8"' in html
    assert "Стенокардия" in html
    assert "Боли в груди при подъёме по лестнице" in html
    assert world["p_name"] in html


def test_issuing_completes_the_consultation_and_tells_the_patient(app, world):
    client, cid = started(app, world)
    response = issue(client, cid)
    assert response.status_code == 302
    assert "Заключение выдано, консультация завершена" in flashed(client)
    row = consultation_row(app, cid)
    assert row.status == "completed" and row.completed_at is not None
    [c] = conclusions(app, cid)
    assert (c.version, c.supersedes_id, c.author_id) == (1, None, world["d1"])
    assert c.icd10_code == "I20.8" and c.in_person_visit_needed is True
    assert c.diagnosis == GOOD["diagnosis"] and c.pdf_storage_key
    assert any("Готово заключение врача" in t for t in notifications_of(app, world["p"]))
    assert len(audit_actions(app, "conclusion.issue")) == 1
    html = client.get(form_url(cid)).get_data(as_text=True)
    assert "Версия 1" in html and "Исправить заключение" in html


def test_issuing_without_starting_is_refused(app, world):
    client = doctor_client(app)
    cid = world["consultation"]
    response = issue(client, cid)
    assert response.status_code == 400
    assert "Сначала начните консультацию" in response.get_data(as_text=True)
    assert consultation_row(app, cid).status == "scheduled"
    assert conclusions(app, cid) == []


@pytest.mark.parametrize("status", ["cancelled", "rejected", "missed", "needs_documents"])
def test_no_conclusion_for_a_consultation_that_did_not_happen(app, world, status):
    cid = make_consultation(app, world, doctor=world["d1"], status=status)
    response = issue(doctor_client(app), cid)
    assert response.status_code == 400
    assert "только по состоявшейся консультации" in response.get_data(as_text=True)
    assert conclusions(app, cid) == []


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("diagnosis", "   ", "Укажите диагноз."),
        ("complaints_history", "", "Опишите жалобы и анамнез."),
        ("recommendations", "", "Укажите рекомендации."),
        ("icd10_code", "", "Укажите код диагноза по МКБ-10."),
        ("icd10_code", "20.8", "Код МКБ-10 должен выглядеть как I21 или I21.0"),
        ("icd10_code", "I2", "Код МКБ-10 должен выглядеть как I21 или I21.0"),
        ("icd10_code", "I20.8.1", "Код МКБ-10 должен выглядеть как I21 или I21.0"),
        ("diagnosis", "д" * 2001, "Слишком длинный текст"),
    ],
)
def test_bad_input_is_explained_and_nothing_is_lost(app, world, field, value, message):
    client, cid = started(app, world)
    response = issue(client, cid, **{field: value})
    html = response.get_data(as_text=True)
    assert response.status_code == 400
    assert message in html
    # The doctor's other text is still in the form.
    assert GOOD["findings"] in html and GOOD["next_steps"] in html
    assert consultation_row(app, cid).status == "in_progress"
    assert conclusions(app, cid) == []


def test_icd10_typed_on_a_russian_keyboard_is_understood(app, world):
    client, cid = started(app, world)
    # Cyrillic «С» and a decimal comma: C34,1.
    assert issue(client, cid, icd10_code=" с34,1 ").status_code == 302
    assert conclusions(app, cid)[0].icd10_code == "C34.1"


@pytest.mark.no_db
def test_icd10_rules():
    from app.catalogue import normalize_icd10, valid_icd10

    for good in ("A00", "Z99", "I21.0", "M54.16", "U07.1"):
        assert valid_icd10(normalize_icd10(good)), good
    for bad in ("", "A0", "100", "I21.", "I21.123", "II21", "I21-0", "Ж21"):
        assert not valid_icd10(normalize_icd10(bad)), bad


def test_other_doctor_of_the_centre_cannot_issue(app, world):
    _, cid = started(app, world)
    client = doctor_client(app, "doc_d2")
    assert client.get(form_url(cid)).status_code == 200  # may read the centre's consultation
    response = issue(client, cid)
    assert response.status_code == 400
    assert "Заключение может выдать только врач этой консультации." in response.get_data(
        as_text=True
    )
    assert conclusions(app, cid) == []
    assert consultation_row(app, cid).status == "in_progress"


def test_patient_manager_admin_cannot_issue(app, world):
    _, cid = started(app, world)
    assert issue(patient_client(app, world["p"]), cid).status_code == 403
    assert issue(as_user(app, "manager1"), cid).status_code == 403
    response = issue(as_user(app, "admin1"), cid)  # Admin may look, but is not the doctor
    assert response.status_code == 400
    assert "только врач этой консультации" in response.get_data(as_text=True)
    assert conclusions(app, cid) == []


def test_missing_font_refuses_clearly_and_issues_nothing(app, world, monkeypatch):
    client, cid = started(app, world)
    monkeypatch.setitem(app.config, "CONCLUSION_FONT_PATH", "/nonexistent/DejaVuSans.ttf")
    response = issue(client, cid)
    assert response.status_code == 400
    assert "не установлен шрифт с кириллицей" in response.get_data(as_text=True)
    assert conclusions(app, cid) == []
    assert consultation_row(app, cid).status == "in_progress"


@pytest.mark.no_db
def test_font_path_error_names_the_setting(app):
    from app.conclusions import ConclusionFontMissing
    from app.conclusions.pdf import font_path

    with app.app_context():
        original = app.config["CONCLUSION_FONT_PATH"]
        app.config["CONCLUSION_FONT_PATH"] = "/nonexistent.ttf"
        try:
            with pytest.raises(ConclusionFontMissing, match="CONCLUSION_FONT_PATH"):
                font_path()
        finally:
            app.config["CONCLUSION_FONT_PATH"] = original
