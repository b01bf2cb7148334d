"""Starting a consultation and the doctor's conclusion: transitions by every kind of actor,
versions that never overwrite each other, the PDF (Cyrillic text, headers, audit) and access."""

from __future__ import annotations

import io
import uuid
from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select, update

from tests.conftest import (
    consultation_number,
    csrf_token,
    free_disease,
    login,
    patient_username,
)

PASSWORD_PAGE = "/account/password/"

GOOD = {
    "complaints_history": "Давящие боли за грудиной при нагрузке в течение двух месяцев.",
    "findings": "По выписке: инфаркт миокарда в 2025 году, ЭКГ — рубцовые изменения.",
    "diagnosis": "Ишемическая болезнь сердца. Стенокардия напряжения II ФК.",
    "icd10_code": "I20.8",
    "recommendations": "Продолжить приём бисопролола; контроль АД и ЧСС ежедневно.",
    "in_person_visit_needed": "y",
    "next_steps": "Нагрузочная проба через месяц, затем повторная консультация.",
}


# ---------------------------------------------------------------------------------------------
# The world
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def world(app, make_patient, make_center, make_doctor, make_staff):
    """Centre C1 with doctors D1 (assigned) and D2, centre C2 with doctor D3, a duty doctor,
    patient P (Владивосток) with a consultation at C1 scheduled in five minutes, patient Q."""
    from app.extensions import db
    from models import Disease, Doctor, Patient

    c1 = make_center(name="Кардиоцентр «Сердце»")
    c2 = make_center(name="Онкоцентр «Надежда»")
    w = {
        "c1": c1,
        "c2": c2,
        "d1": make_doctor(username="doc_d1", center_id=c1),
        "d2": make_doctor(username="doc_d2", center_id=c1),
        "d3": make_doctor(username="doc_d3", center_id=c2),
        "duty": make_doctor(username="doc_duty", is_duty=True),
        "p": make_patient(surname="Иванова", timezone="Asia/Vladivostok"),
        "q": make_patient(surname="Петрова"),
        "manager": make_staff("Manager", "manager1"),
        "admin": make_staff("Admin", "admin1"),
    }
    with app.app_context():
        disease = Disease(icd10_code="I20.8", name="Стенокардия", profile="cardiology")
        db.session.add(disease)
        db.session.commit()
        w["disease"] = disease.id
        w["d1_name"] = db.session.get(Doctor, w["d1"]).full_name
        w["p_name"] = db.session.get(Patient, w["p"]).full_name
    # Without a disease: the tests' own consultations of P at C1 carry it (one open
    # application per patient, centre and disease).
    w["consultation"] = make_consultation(app, w, doctor=w["d1"], disease_id=None)
    return w


def make_consultation(app, w, *, doctor=None, status="scheduled", minutes=5, kind=None, **kw):
    from app.extensions import db
    from models import Consultation, utcnow

    with app.app_context():
        kind = kind or ("centre_request" if doctor != w["duty"] else "duty")
        patient_id = kw.pop("patient", w["p"])
        center_id = kw.pop("center", None if doctor == w["duty"] else w["c1"])
        c = Consultation(
            public_id=uuid.uuid4(),
            kind=kind,
            status=status,
            patient_id=patient_id,
            center_id=center_id,
            doctor_id=doctor,
            disease_id=free_disease(
                patient_id, center_id, kw.pop("disease_id", w["disease"]), kind, status
            ),
            complaints="Боли в груди при подъёме по лестнице",
            scheduled_at=utcnow() + timedelta(minutes=minutes),
            **kw,
        )
        db.session.add(c)
        db.session.commit()
        return str(c.public_id)


def as_user(app, username):
    client = app.test_client()
    response = login(client, username)
    assert response.status_code == 302, "login failed"
    return client


def doctor_client(app, username="doc_d1"):
    return as_user(app, username)


def patient_client(app, patient_id):
    return as_user(app, patient_username(app, patient_id))


def post(client, url, data=None):
    token = csrf_token(client, PASSWORD_PAGE)
    return client.post(url, data={**(data or {}), "csrf_token": token})


def consultation_row(app, public_id):
    from app.extensions import db
    from models import Consultation

    with app.app_context():
        c = db.session.execute(
            select(Consultation).where(Consultation.public_id == uuid.UUID(public_id))
        ).scalar_one()
        db.session.expunge(c)
        return c


def conclusions(app, public_id):
    from app.extensions import db
    from models import Conclusion, Consultation

    with app.app_context():
        rows = db.session.execute(
            select(Conclusion)
            .join(Consultation, Consultation.id == Conclusion.consultation_id)
            .where(Consultation.public_id == uuid.UUID(public_id))
            .order_by(Conclusion.version)
        ).scalars()
        out = []
        for r in rows:
            db.session.expunge(r)
            out.append(r)
        return out


def notifications_of(app, patient_id):
    from app.extensions import db
    from models import Notification, Patient

    with app.app_context():
        user_id = db.session.get(Patient, patient_id).user_id
        return [
            n.text
            for n in db.session.execute(
                select(Notification).where(Notification.user_id == user_id)
            ).scalars()
        ]


def audit_actions(app, action):
    from app.extensions import db
    from models import AuditEvent

    with app.app_context():
        return list(
            db.session.execute(select(AuditEvent).where(AuditEvent.action == action)).scalars()
        )


def start_url(public_id):
    return f"/care/consultations/{public_id}/start"


def form_url(public_id):
    return f"/care/consultations/{public_id}/conclusion"


def flashed(client):
    with client.session_transaction() as session:
        return " ".join(str(m[1]) for m in session.get("_flashes", []))


def start(app, public_id, username="doc_d1"):
    client = doctor_client(app, username)
    response = post(client, start_url(public_id))
    return client, response


def issue(client, public_id, **changes):
    return post(client, form_url(public_id), {**GOOD, **changes})


def started(app, w, **kw):
    """A consultation of P at C1, in progress with D1, and D1's client."""
    public_id = make_consultation(app, w, doctor=w["d1"], **kw)
    client, response = start(app, public_id)
    assert response.status_code == 302
    assert consultation_row(app, public_id).status == "in_progress"
    return client, public_id


# ---------------------------------------------------------------------------------------------
# start_consultation
# ---------------------------------------------------------------------------------------------


def test_assigned_doctor_starts_and_the_patient_is_told(app, world):
    cid = world["consultation"]
    client, response = start(app, cid)
    assert response.status_code == 302
    assert "Консультация началась, пациент уведомлён." in flashed(client)
    row = consultation_row(app, cid)
    assert row.status == "in_progress" and row.started_at is not None
    texts = notifications_of(app, world["p"])
    assert any("Консультация началась" in t for t in texts)
    [event] = audit_actions(app, "consultation.start")
    assert event.object_id == cid and event.outcome == "ok"


def test_centre_doctor_takes_an_unassigned_consultation(app, world):
    from app.extensions import db
    from models import Doctor

    cid = make_consultation(app, world, doctor=None)
    _, response = start(app, cid, "doc_d2")
    assert response.status_code == 302
    row = consultation_row(app, cid)
    assert row.status == "in_progress"
    with app.app_context():
        assert row.doctor_id == world["d2"] == db.session.get(Doctor, world["d2"]).id


def test_duty_doctor_starts_and_concludes_own_booking(app, world):
    cid = make_consultation(app, world, doctor=world["duty"])
    client, response = start(app, cid, "doc_duty")
    assert response.status_code == 302
    assert consultation_row(app, cid).status == "in_progress"
    response = issue(client, cid)
    assert response.status_code == 302
    assert consultation_row(app, cid).status == "completed"
    assert [c.version for c in conclusions(app, cid)] == [1]


def test_too_early_is_refused_with_the_time(app, world):
    cid = make_consultation(app, world, doctor=world["d1"], minutes=60)
    client, _ = start(app, cid)
    assert "Слишком рано" in flashed(client)
    assert consultation_row(app, cid).status == "scheduled"
    # Fifteen minutes before is allowed.
    cid = make_consultation(app, world, doctor=world["d1"], minutes=14)
    start(app, cid)
    assert consultation_row(app, cid).status == "in_progress"


@pytest.mark.parametrize(
    ("status", "message"),
    [
        ("in_progress", "Консультация уже началась."),
        ("completed", "Консультация уже завершена."),
        ("cancelled", "Консультация отменена, её нельзя начать."),
        ("requested", "Начать можно только назначенную консультацию"),
        ("missed", "Консультация пропущена"),
    ],
)
def test_only_a_scheduled_consultation_starts(app, world, status, message):
    cid = make_consultation(app, world, doctor=world["d1"], status=status)
    client, response = start(app, cid)
    assert response.status_code == 302
    assert message in flashed(client)
    assert consultation_row(app, cid).status == status
    assert audit_actions(app, "consultation.start") == []


def test_starting_twice_keeps_the_first_start(app, world):
    cid = world["consultation"]
    client, _ = start(app, cid)
    first = consultation_row(app, cid).started_at
    post(client, start_url(cid))
    assert "Консультация уже началась." in flashed(client)
    assert consultation_row(app, cid).started_at == first
    assert len(notifications_of(app, world["p"])) == 1


def test_other_doctor_of_the_centre_cannot_start_anothers_consultation(app, world):
    client, _ = start(app, world["consultation"], "doc_d2")
    assert "Начать консультацию может только её врач." in flashed(client)
    assert consultation_row(app, world["consultation"]).status == "scheduled"


@pytest.mark.parametrize("who", ["doc_d3", "doc_duty"])
def test_doctor_outside_the_scope_gets_404(app, world, who):
    _, response = start(app, world["consultation"], who)
    assert response.status_code == 404
    assert doctor_client(app, who).get(form_url(world["consultation"])).status_code == 404
    assert consultation_row(app, world["consultation"]).status == "scheduled"


def test_patient_manager_and_anonymous_cannot_start(app, world):
    cid = world["consultation"]
    for client in (patient_client(app, world["p"]), as_user(app, "manager1")):
        assert post(client, start_url(cid)).status_code == 403
        assert client.get(form_url(cid)).status_code == 403
    anonymous = app.test_client()
    response = anonymous.get(form_url(cid))
    assert response.status_code == 302 and "/login/" in response.headers["Location"]
    assert consultation_row(app, cid).status == "scheduled"


def test_unknown_consultation_is_404(app, world):
    client = doctor_client(app)
    assert post(client, start_url(uuid.uuid4())).status_code == 404
    assert client.get(form_url(uuid.uuid4())).status_code == 404
    assert client.get("/care/consultations/not-a-uuid/conclusion").status_code == 404


# ---------------------------------------------------------------------------------------------
# issue_conclusion
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Versions
# ---------------------------------------------------------------------------------------------


def _content(c):
    return {
        k: getattr(c, k)
        for k in (
            "id",
            "public_id",
            "version",
            "supersedes_id",
            "complaints_history",
            "findings",
            "diagnosis",
            "icd10_code",
            "recommendations",
            "in_person_visit_needed",
            "next_steps",
            "issued_at",
            "pdf_storage_key",
        )
    }


def test_correction_is_a_new_version_and_the_first_stays(app, world):
    client, cid = started(app, world)
    issue(client, cid)
    [v1] = conclusions(app, cid)
    before = _content(v1)
    response = issue(client, cid, diagnosis="Стенокардия напряжения III ФК.", icd10_code="I20.9")
    assert response.status_code == 302
    assert "Выдана версия 2 заключения" in flashed(client)
    v1_again, v2 = conclusions(app, cid)
    assert _content(v1_again) == before
    assert (v2.version, v2.supersedes_id) == (2, v1.id)
    assert v2.diagnosis == "Стенокардия напряжения III ФК." and v2.icd10_code == "I20.9"
    assert v2.pdf_storage_key != v1.pdf_storage_key
    row = consultation_row(app, cid)
    assert row.status == "completed"
    assert any("Врач исправил заключение" in t for t in notifications_of(app, world["p"]))
    html = client.get(form_url(cid)).get_data(as_text=True)
    assert "Версия 2" in html and "заменяет версию 1" in html and "Версия 1" in html
    # The correction form starts from the latest version.
    assert "Стенокардия напряжения III ФК." in html
    # The first version's PDF still says what it said.
    v1_text = pdf_text(client.get(f"/conclusions/{v1.public_id}.pdf").data)
    assert "II ФК" in v1_text and "III ФК" not in v1_text


def test_the_latest_version_is_the_one_in_force_everywhere(app, world):
    """app.conclusions.access.latest_conclusion is the one answer: the form starts from it, a
    correction supersedes it, and the patient's consultation page links to its PDF."""
    from app.conclusions.access import latest_conclusion
    from app.extensions import db
    from models import Consultation

    client, cid = started(app, world)
    with app.app_context():
        row = db.session.execute(
            select(Consultation).where(Consultation.public_id == uuid.UUID(cid))
        ).scalar_one()
        assert latest_conclusion(row) is None
    issue(client, cid)
    issue(client, cid, diagnosis="Стенокардия напряжения III ФК.", icd10_code="I20.9")
    issue(client, cid, diagnosis="Стенокардия напряжения IV ФК.", icd10_code="I20.9")
    v1, v2, v3 = conclusions(app, cid)
    with app.app_context():
        row = db.session.execute(
            select(Consultation).where(Consultation.public_id == uuid.UUID(cid))
        ).scalar_one()
        latest = latest_conclusion(row)
        assert (latest.public_id, latest.version, latest.supersedes_id) == (v3.public_id, 3, v2.id)
    page = patient_client(app, world["p"]).get(f"/cabinet/consultations/{cid}")
    html = page.get_data(as_text=True)
    assert f"/conclusions/{v3.public_id}.pdf" in html
    assert str(v1.public_id) not in html and str(v2.public_id) not in html


def test_an_issued_row_cannot_be_modified_or_deleted(app, world):
    from app.conclusions import ConclusionImmutableError
    from app.extensions import db
    from models import Conclusion

    client, cid = started(app, world)
    issue(client, cid)
    [v1] = conclusions(app, cid)
    with app.app_context():
        row = db.session.get(Conclusion, v1.id)
        row.diagnosis = "Подменённый диагноз"
        with pytest.raises(ConclusionImmutableError):
            db.session.flush()
        db.session.rollback()
        row = db.session.get(Conclusion, v1.id)
        row.pdf_storage_key = None
        with pytest.raises(ConclusionImmutableError):
            db.session.flush()
        db.session.rollback()
        with pytest.raises(ConclusionImmutableError):
            db.session.execute(
                update(Conclusion).where(Conclusion.id == v1.id).values(diagnosis="x")
            )
        db.session.rollback()
        db.session.delete(db.session.get(Conclusion, v1.id))
        with pytest.raises(ConclusionImmutableError):
            db.session.flush()
        db.session.rollback()
    assert _content(conclusions(app, cid)[0]) == _content(v1)


def test_service_refuses_a_patient_or_nobody_as_author(app, world):
    from app.conclusions import ConclusionError
    from app.conclusions.form import ConclusionData
    from app.conclusions.issue import issue_conclusion
    from app.extensions import db
    from models import Consultation

    _, cid = started(app, world)
    with app.app_context():
        c = db.session.execute(
            select(Consultation).where(Consultation.public_id == uuid.UUID(cid))
        ).scalar_one()
        with pytest.raises(ConclusionError):
            issue_conclusion(c, by=None, data=ConclusionData(**_good_data()))
        db.session.rollback()
    assert conclusions(app, cid) == []


def _good_data():
    data = {k: v for k, v in GOOD.items() if k != "in_person_visit_needed"}
    return {**data, "in_person_visit_needed": True}


# ---------------------------------------------------------------------------------------------
# PDF
# ---------------------------------------------------------------------------------------------


def pdf_text(data: bytes) -> str:
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(data))
    return "\n".join(page.extract_text() for page in reader.pages)


def _norm(text: str) -> str:
    return " ".join(text.split())


def test_pdf_carries_everything_in_russian(app, world):
    from app.extensions import db
    from models import Conclusion

    client, cid = started(app, world)
    issue(client, cid)
    issue(client, cid, recommendations="Исправленные рекомендации: бисопролол 5 мг утром.")
    v1, v2 = conclusions(app, cid)
    response = client.get(f"/conclusions/{v2.public_id}.pdf")
    assert response.status_code == 200
    assert response.mimetype == "application/pdf"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "no-store" in response.headers["Cache-Control"]
    disposition = response.headers["Content-Disposition"]
    assert disposition.startswith("attachment;")
    number = consultation_number(app, cid)  # '26-1': the same on the page and in the SMS
    assert f"-{number}-v2.pdf" in disposition and "filename*=UTF-8''" in disposition
    assert response.data.startswith(b"%PDF-")
    text = _norm(pdf_text(response.data))
    issued = v2.issued_at.astimezone(ZoneInfo("Asia/Vladivostok"))
    for expected in (
        "Кардиоцентр «Сердце»",
        "Заключение врача по результатам телемедицинской консультации",
        f"№{number}",
        world["d1_name"],
        "Кардиолог",
        world["p_name"],
        "02.01.1980",
        f"{issued:%d.%m.%Y %H:%M} (UTC+10)",  # the patient's zone, not the server's
        "Версия 2, заменяет версию 1",
        "Жалобы и анамнез",
        _norm(GOOD["complaints_history"]),
        _norm(GOOD["findings"]),
        "Стенокардия напряжения II ФК.",
        "МКБ-10: I20.8",
        "Исправленные рекомендации: бисопролол 5 мг утром.",
        "Необходим очный приём врача.",
        _norm(GOOD["next_steps"]),
    ):
        assert expected in text, expected
    v1_text = _norm(pdf_text(client.get(f"/conclusions/{v1.public_id}.pdf").data))
    assert "Версия 1" in v1_text and "заменяет" not in v1_text
    # The download is the very file stored at issue time.
    with app.app_context():
        from app.conclusions.pdf import conclusion_bytes, conclusion_pdf
        from app.storage import path_for_key

        assert response.data == path_for_key(v2.pdf_storage_key).read_bytes()
        row = db.session.get(Conclusion, v2.id)
        # And it is reproducible: the same conclusion builds the same bytes.
        assert conclusion_pdf(row) == response.data
        assert conclusion_bytes(row) == response.data


def test_pdf_embeds_a_font_and_no_core_font(app, world):
    from pypdf import PdfReader

    client, cid = started(app, world)
    issue(client, cid)
    [v1] = conclusions(app, cid)
    reader = PdfReader(io.BytesIO(client.get(f"/conclusions/{v1.public_id}.pdf").data))
    fonts = reader.pages[0]["/Resources"]["/Font"]
    for ref in fonts.values():
        font = ref.get_object()
        assert font["/Subtype"] == "/Type0"  # embedded TrueType (CID), not Helvetica & co
        assert "DejaVu" in str(font["/BaseFont"])


def test_every_download_is_audited(app, world):
    client, cid = started(app, world)
    issue(client, cid)
    [v1] = conclusions(app, cid)
    url = f"/conclusions/{v1.public_id}.pdf"
    client.get(url)
    patient_client(app, world["p"]).get(url)
    patient_client(app, world["q"]).get(url)  # denied: audited as such, answered 404
    events = audit_actions(app, "conclusion.download")
    assert sorted(e.outcome for e in events) == ["denied", "ok", "ok"]
    assert all(e.patient_id == world["p"] for e in events)


def test_pdf_access(app, world):
    client, cid = started(app, world)
    issue(client, cid)
    [v1] = conclusions(app, cid)
    url = f"/conclusions/{v1.public_id}.pdf"
    assert patient_client(app, world["p"]).get(url).status_code == 200
    assert patient_client(app, world["q"]).get(url).status_code == 404
    assert doctor_client(app, "doc_d2").get(url).status_code == 200  # same centre
    assert doctor_client(app, "doc_d3").get(url).status_code == 404  # another centre
    assert doctor_client(app, "doc_duty").get(url).status_code == 404
    assert as_user(app, "admin1").get(url).status_code == 200
    assert as_user(app, "manager1").get(url).status_code == 403
    anonymous = app.test_client().get(url)
    assert anonymous.status_code == 302 and "/login/" in anonymous.headers["Location"]
    unknown = f"/conclusions/{uuid.uuid4()}.pdf"
    assert patient_client(app, world["p"]).get(unknown).status_code == 404


def test_patient_cannot_start_or_issue_even_own(app, world):
    pc = patient_client(app, world["p"])
    assert post(pc, start_url(world["consultation"])).status_code == 403
    assert issue(pc, world["consultation"]).status_code == 403
    assert consultation_row(app, world["consultation"]).status == "scheduled"


def test_scheduled_consultation_page_offers_the_start(app, world):
    client = doctor_client(app)
    html = client.get(form_url(world["consultation"])).get_data(as_text=True)
    assert "Начать консультацию" in html
    assert "Сначала начните консультацию, затем выдайте заключение." in html
    assert "Выдать заключение</button>" not in html
    # The colleague sees the consultation but no start button: it is not theirs.
    other = doctor_client(app, "doc_d2").get(form_url(world["consultation"]))
    assert "Начать консультацию" not in other.get_data(as_text=True)
