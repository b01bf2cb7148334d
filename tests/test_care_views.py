"""Pathway 1 through the HTTP views: «Новая заявка», the doctors' queue and actions, the
patient's «Консультации» (show, add documents, cancel), the doctor's day, row scope (404)."""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime, time, timedelta

import pytest
from sqlalchemy import func, select

from tests.conftest import csrf_token, make_pdf
from tests.consultation_world import (
    care_url,
    make_consultation,
    notification_texts,
    post,
    set_timezones,
    signed_in,
    state,
    text,
)

pytestmark = pytest.mark.usefixtures("empty_storage")


def flashed(client) -> str:
    """The page after a redirect, with the flashed message on it."""
    return text(client.get("/cabinet/"))


def consultations_count(app) -> int:
    from app.extensions import db
    from models import Consultation

    with app.app_context():
        return db.session.execute(select(func.count(Consultation.id))).scalar()


NEW = "/cabinet/applications/new"


# ---------------------------------------------------------------------------------------------
# «Новая заявка»
# ---------------------------------------------------------------------------------------------


def test_patient_menu_has_new_application_and_consultations(app, world):
    client = signed_in(app, world, "patient")
    page = text(client.get("/cabinet/"))
    assert "Новая заявка" in page and "Консультации" in page


def test_centre_list_and_form_show_profile_and_checklist(app, world):
    client = signed_in(app, world, "patient")
    page = text(client.get(NEW))
    assert "Кардиоцентр" in page and "Кардиология" in page
    page = text(client.get(f"{NEW}?centre={world.centre1_public}"))
    assert "Иванова Анна Ивановна" in page  # from the profile, not editable
    assert re.search(r'id="applicant-age">\s*\d+\s*<', page)
    assert "Необходимые документы для «Фибрилляция и трепетание предсердий»" in page
    assert "Заключение врача" in page and "ЭКГ" in page
    assert "Лейомиома" not in page  # another centre's catalogue


def application_form(world, **over) -> dict:
    data = {
        "centre": str(world.centre1_public),
        "disease": str(world.disease_i48),
        "diagnosis_text": "",
        "complaints": "Перебои в работе сердца",
        "documents": [str(world.ecg)],
    }
    data.update(over)
    return data


def test_eligibility_refusal_names_missing_documents(app, world):
    client = signed_in(app, world, "patient")
    page_url = f"{NEW}?centre={world.centre1_public}"
    response = post(client, page_url, page_url, application_form(world, documents=[]))
    assert response.status_code == 400
    assert "Не хватает документов: Заключение врача, ЭКГ." in text(response)
    response = post(client, page_url, page_url, application_form(world))
    assert "Не хватает документов: Заключение врача." in text(response)
    assert consultations_count(app) == 0


def test_submit_with_upload_on_the_spot(app, world, types_ids):
    client = signed_in(app, world, "patient")
    page_url = f"{NEW}?centre={world.centre1_public}"
    data = application_form(
        world,
        file=(io.BytesIO(make_pdf()), "Заключение кардиолога.pdf"),
        file_type=str(types_ids["conclusion"]),
        # server-set fields are ignored if posted
        status="completed",
        patient_id="1",
    )
    response = post(client, page_url, page_url, data, content_type="multipart/form-data")
    assert response.status_code == 302
    from app.extensions import db
    from models import Consultation

    with app.app_context():
        c = db.session.execute(select(Consultation)).scalar_one()
        assert c.status == "requested" and c.patient_id == world.patient
        assert c.due_by - c.submitted_at == timedelta(days=3)
        names = sorted(d.original_name for d in c.documents)
        assert names == ["Заключение кардиолога.pdf", "ЭКГ.png"]
        public_id = c.public_id
    assert response.headers["Location"].endswith(f"/cabinet/consultations/{public_id}")
    page = text(client.get(f"/cabinet/consultations/{public_id}"))
    assert "Заявка отправлена. Врачи центра изучат её" in page
    assert len(notification_texts(app, world, "doctor_c1")) == 1
    assert len(notification_texts(app, world, "doctor_c1b")) == 1


def test_upload_on_the_spot_is_validated(app, world, types_ids):
    client = signed_in(app, world, "patient")
    page_url = f"{NEW}?centre={world.centre1_public}"
    data = application_form(
        world,
        file=(io.BytesIO(b"<html>not a pdf</html>"), "Заключение.pdf"),
        file_type=str(types_ids["conclusion"]),
    )
    response = post(client, page_url, page_url, data, content_type="multipart/form-data")
    assert response.status_code == 400
    assert "Можно загружать только файлы PDF, JPEG, PNG и DICOM." in text(response)
    assert consultations_count(app) == 0


def test_refused_application_keeps_no_uploaded_file(app, world, types_ids):
    from app.extensions import db
    from models import MedicalDocument

    with app.app_context():
        before = db.session.execute(select(func.count(MedicalDocument.id))).scalar()
    client = signed_in(app, world, "patient")
    page_url = f"{NEW}?centre={world.centre1_public}"
    # A real PDF, but filed as «Другое»: the conclusion is still missing.
    data = application_form(
        world,
        file=(io.BytesIO(make_pdf()), "Прочее.pdf"),
        file_type=str(types_ids["other"]),
    )
    response = post(client, page_url, page_url, data, content_type="multipart/form-data")
    assert "Не хватает документов: Заключение врача." in text(response)
    with app.app_context():
        assert db.session.execute(select(func.count(MedicalDocument.id))).scalar() == before


def test_free_text_diagnosis(app, world):
    client = signed_in(app, world, "patient")
    page_url = f"{NEW}?centre={world.centre1_public}"
    data = application_form(world, disease="", diagnosis_text="Миокардит", documents=[])
    assert post(client, page_url, page_url, data).status_code == 302
    assert consultations_count(app) == 1


@pytest.mark.parametrize("bad", ["foreign", "garbage"])
def test_foreign_document_ids_refused(app, world, bad):
    client = signed_in(app, world, "patient")
    page_url = f"{NEW}?centre={world.centre1_public}"
    ids = [str(world.ecg), str(world.conclusion_doc)]
    ids.append(str(world.foreign_doc) if bad == "foreign" else "not-a-uuid")
    response = post(client, page_url, page_url, application_form(world, documents=ids))
    assert response.status_code == 400
    assert "Приложить можно только свои документы." in text(response)
    assert consultations_count(app) == 0


def test_unknown_centre_shows_the_list(app, world):
    client = signed_in(app, world, "patient")
    page = text(client.get(f"{NEW}?centre=not-a-uuid", follow_redirects=True))
    assert "Выберите медицинский центр из списка." in page


# ---------------------------------------------------------------------------------------------
# The doctor's queue
# ---------------------------------------------------------------------------------------------


def test_queue_oldest_first_with_overdue_flag(app, world):
    now = datetime.now(UTC)
    fresh = make_consultation(app, world, submitted_at=now - timedelta(hours=2))
    overdue = make_consultation(
        app, world, submitted_at=now - timedelta(days=4), due_by=now - timedelta(days=1)
    )
    foreign = make_consultation(app, world, center_id=world.centre2)
    client = signed_in(app, world, "doctor_c1")
    response = client.get("/care/queue")
    assert response.status_code == 200
    page = text(response)
    assert page.index(str(overdue)) < page.index(str(fresh))
    assert str(foreign) not in page
    rows = re.findall(r'<tr class="([^"]*)" data-consultation="([^"]+)"', page)
    flags = {pid: "overdue" in cls for cls, pid in rows}
    assert flags == {str(overdue): True, str(fresh): False}
    assert "Просрочена" in page
    assert "Иванова Анна Ивановна" in page


def test_doctor_menu(app, world):
    page = text(signed_in(app, world, "doctor_c1").get("/care/queue"))
    assert "Заявки" in page and "Мой день" in page


@pytest.mark.parametrize("actor", ["patient", "manager", "duty"])
def test_queue_is_for_centre_doctors(app, world, actor):
    response = signed_in(app, world, actor).get("/care/queue")
    assert response.status_code in (302, 403)


# ---------------------------------------------------------------------------------------------
# Doctor's actions
# ---------------------------------------------------------------------------------------------


def test_show_has_patient_complaints_and_document_preview(app, world):
    public_id = make_consultation(app, world)
    page = text(signed_in(app, world, "doctor_c1").get(care_url(public_id)))
    assert "Иванова Анна Ивановна" in page and "Перебои в работе сердца" in page
    assert "Фибрилляция" in page
    from app.extensions import db
    from models import MedicalDocument

    with app.app_context():
        doc = db.session.execute(
            select(MedicalDocument).where(MedicalDocument.public_id == world.ecg)
        ).scalar_one()
    assert f"/staff/documents/{doc.public_id}/inline" in page


def test_schedule_in_both_time_zones(app, world):
    set_timezones(app, world, doctor="Asia/Vladivostok", patient="Europe/Kaliningrad")
    public_id = make_consultation(app, world)
    client = signed_in(app, world, "doctor_c1")
    day = (datetime.now(UTC) + timedelta(days=3)).date()
    response = post(
        client,
        care_url(public_id),
        care_url(public_id, "schedule"),
        {"day": day.isoformat(), "at": "10:00", "duration": "45", "doctor_id": "1"},
    )
    assert response.status_code == 302
    c = state(app, public_id)
    assert c.status == "scheduled"
    assert c.scheduled_at == datetime.combine(day, time(0, 0), tzinfo=UTC)
    page = text(client.get(care_url(public_id)))
    assert "Консультация назначена, пациент уведомлён." in page
    assert re.search(r'class="doctor-time">[^<]*10:00', page)
    assert re.search(r'class="patient-time">[^<]*02:00', page)
    [note] = notification_texts(app, world, "patient")
    assert "назначена на" in note and "02:00" in note
    patient_page = text(signed_in(app, world, "patient").get(f"/cabinet/consultations/{public_id}"))
    assert "02:00" in patient_page and "Калининград" in patient_page
    listing = text(signed_in(app, world, "patient").get("/cabinet/consultations/"))
    assert "02:00" in listing and "Кардиоцентр" in listing


@pytest.mark.parametrize(
    "data,message",
    [
        (
            {"day": "2020-01-01", "at": "10:00", "duration": "30"},
            "Дата и время консультации уже прошли.",
        ),
        (
            {"day": "2099-01-01", "at": "10:00", "duration": "5"},
            "Длительность — от 15 до 120 минут.",
        ),
        ({"day": "", "at": "10:00", "duration": "30"}, ""),
        ({"day": "not a date", "at": "25:99", "duration": "x"}, ""),
        # At most a year ahead (app/dates.py): not 31.12.9999, not in two years.
        (
            {"day": "9999-12-31", "at": "10:00", "duration": "30"},
            "Эта дата слишком далеко: выбрать можно не позже",
        ),
        (
            {
                "day": f"{datetime.now(UTC) + timedelta(days=2 * 365):%Y-%m-%d}",
                "at": "10:00",
                "duration": "30",
            },
            "Эта дата слишком далеко: выбрать можно не позже",
        ),
    ],
)
def test_schedule_refusals(app, world, data, message):
    public_id = make_consultation(app, world)
    client = signed_in(app, world, "doctor_c1")
    response = post(client, care_url(public_id), care_url(public_id, "schedule"), data)
    assert response.status_code == 302
    page = text(client.get(care_url(public_id)))
    if message:
        assert message in page
    assert state(app, public_id).status == "requested"
    assert notification_texts(app, world, "patient") == []  # the patient is told nothing


def test_schedule_eleven_months_ahead_is_allowed(app, world):
    public_id = make_consultation(app, world)
    client = signed_in(app, world, "doctor_c1")
    day = f"{datetime.now(UTC) + timedelta(days=330):%Y-%m-%d}"
    data = {"day": day, "at": "10:00", "duration": "30"}
    post(client, care_url(public_id), care_url(public_id, "schedule"), data)
    assert state(app, public_id).status == "scheduled"


def test_schedule_overlap_refused_with_message(app, world):
    set_timezones(app, world, doctor="Europe/Moscow", patient="Europe/Moscow")
    day = (datetime.now(UTC) + timedelta(days=3)).date()
    make_consultation(
        app,
        world,
        status="scheduled",
        doctor_id=world.doctors["doctor_c1"],
        scheduled_at=datetime.combine(day, time(7, 0), tzinfo=UTC),  # 10:00 Moscow
        duration_minutes=60,
    )
    public_id = make_consultation(app, world)
    client = signed_in(app, world, "doctor_c1")
    post(
        client,
        care_url(public_id),
        care_url(public_id, "schedule"),
        {"day": day.isoformat(), "at": "10:30", "duration": "30"},
    )
    assert "Это время пересекается с вашей консультацией" in text(client.get(care_url(public_id)))
    assert state(app, public_id).status == "requested"


def test_request_documents_then_upload_returns_to_requested(app, world, types_ids):
    public_id = make_consultation(app, world)
    doctor = signed_in(app, world, "doctor_c1")
    post(
        doctor,
        care_url(public_id),
        care_url(public_id, "request-documents"),
        {"message": "Приложите заключение кардиолога"},
    )
    assert state(app, public_id).status == "needs_documents"
    patient = signed_in(app, world, "patient")
    show = f"/cabinet/consultations/{public_id}"
    page = text(patient.get(show))
    assert "Нужны документы" in page
    assert "Приложите заключение кардиолога" in page
    assert notification_texts(app, world, "patient")
    response = post(
        patient,
        show,
        f"{show}/documents",
        {
            "file": (io.BytesIO(make_pdf()), "Заключение.pdf"),
            "file_type": str(types_ids["conclusion"]),
        },
        content_type="multipart/form-data",
    )
    assert response.status_code == 302
    c = state(app, public_id)
    assert c.status == "requested"
    assert "Документы добавлены к консультации." in text(patient.get(show))
    assert any("добавил документы" in t for t in notification_texts(app, world, "doctor_c1"))
    assert any("добавил документы" in t for t in notification_texts(app, world, "doctor_c1b"))


def test_patient_attaches_own_existing_document(app, world):
    public_id = make_consultation(app, world, status="needs_documents")
    patient = signed_in(app, world, "patient")
    show = f"/cabinet/consultations/{public_id}"
    post(patient, show, f"{show}/documents", {"documents": [str(world.conclusion_doc)]})
    assert state(app, public_id).status == "requested"


def test_patient_cannot_attach_foreign_document(app, world):
    public_id = make_consultation(app, world, status="needs_documents")
    patient = signed_in(app, world, "patient")
    show = f"/cabinet/consultations/{public_id}"
    post(patient, show, f"{show}/documents", {"documents": [str(world.foreign_doc)]})
    assert "Приложить можно только свои документы." in text(patient.get(show))
    c = state(app, public_id)
    assert c.status == "needs_documents"


def test_reject(app, world):
    public_id = make_consultation(app, world)
    doctor = signed_in(app, world, "doctor_c1")
    post(doctor, care_url(public_id), care_url(public_id, "reject"), {"reason": "Не наш профиль"})
    assert state(app, public_id).status == "rejected"
    assert "Заявка отклонена, пациент уведомлён." in text(doctor.get(care_url(public_id)))
    page = text(signed_in(app, world, "patient").get(f"/cabinet/consultations/{public_id}"))
    assert "Не наш профиль" in page and "Отклонена" in page


def test_reject_without_reason_refused(app, world):
    public_id = make_consultation(app, world)
    doctor = signed_in(app, world, "doctor_c1")
    post(doctor, care_url(public_id), care_url(public_id, "reject"), {"reason": ""})
    assert state(app, public_id).status == "requested"


def test_cancel_by_patient(app, world):
    public_id = make_consultation(
        app,
        world,
        status="scheduled",
        doctor_id=world.doctors["doctor_c1"],
        scheduled_at=datetime.now(UTC) + timedelta(days=1),
    )
    patient = signed_in(app, world, "patient")
    show = f"/cabinet/consultations/{public_id}"
    assert "Отменить консультацию" in text(patient.get(show))
    post(patient, show, f"{show}/cancel", {"reason": "Заболела"})
    c = state(app, public_id)
    assert c.status == "cancelled" and c.cancel_reason == "Заболела"
    page = text(patient.get(show))
    assert "Консультация отменена." in page and "Отменить консультацию" not in page
    assert any("отменил" in t for t in notification_texts(app, world, "doctor_c1"))


@pytest.mark.parametrize("actor", ["patient", "doctor_c1"])
def test_a_transition_decided_on_a_stale_state_is_refused_and_saves_nothing(
    app, world, monkeypatch, actor
):
    """Two transitions decided on the same state: between the page's read and its write the
    doctor started the consultation (another request). The cancel must not land over it: a
    translated message, the consultation as the other request left it, no notification."""
    import views.consultations as views_module
    from app import consultations as svc
    from app.extensions import db
    from models import Consultation

    public_id = make_consultation(
        app,
        world,
        status="scheduled",
        doctor_id=world.doctors["doctor_c1"],
        scheduled_at=datetime.now(UTC) + timedelta(days=1),
    )
    real_cancel = svc.cancel_consultation

    def cancel_after_a_concurrent_start(c, **kw):
        # Another request, in its own transaction, committed first (as the ORM does: the
        # version goes up with the change).
        with db.engine.begin() as other:
            other.execute(
                Consultation.__table__.update()
                .where(Consultation.__table__.c.public_id == public_id)
                .values(status="in_progress", version=Consultation.__table__.c.version + 1)
            )
        return real_cancel(c, **kw)

    monkeypatch.setattr(svc, "cancel_consultation", cancel_after_a_concurrent_start)
    assert views_module.svc is svc
    client = signed_in(app, world, actor)
    if actor == "patient":
        show = f"/cabinet/consultations/{public_id}"
        response = post(client, show, f"{show}/cancel", {"reason": "Заболела"})
    else:
        show = care_url(public_id)
        response = post(client, show, care_url(public_id, "cancel"), {"reason": "Врач заболел"})
    assert response.status_code == 302
    page = text(client.get(response.headers["Location"]))
    assert "Эту запись только что изменил другой пользователь" in page
    c = state(app, public_id)
    assert (c.status, c.cancel_reason, c.cancelled_at) == ("in_progress", "", None)
    other = "doctor_c1" if actor == "patient" else "patient"
    assert not any("отмен" in t for t in notification_texts(app, world, other))


def test_a_concurrent_change_in_a_view_without_its_own_answer_is_not_a_server_error(
    app, world, monkeypatch
):
    """A view that catches only its own module's errors («Начать консультацию» catches
    ConsultationError) and a flush that found the row changed: the application's net answers
    with the message and sends the user back — never a 500; nothing is saved."""
    from app.conclusions import start as conclusions_svc
    from app.errors import ChangedMeanwhile

    public_id = make_consultation(
        app,
        world,
        status="scheduled",
        doctor_id=world.doctors["doctor_c1"],
        scheduled_at=datetime.now(UTC) + timedelta(minutes=5),
    )

    def start_that_finds_the_row_changed(c, **kw):
        c.status = "in_progress"  # decided, then the flush finds another version
        raise ChangedMeanwhile()

    monkeypatch.setattr(conclusions_svc, "start_consultation", start_that_finds_the_row_changed)
    doctor = signed_in(app, world, "doctor_c1")
    page_url = care_url(public_id)
    response = post(
        doctor, page_url, care_url(public_id, "start"), {}, headers={"Referer": page_url}
    )
    assert response.status_code == 303
    # Back to "/" (the test's Referer is a path), which leads the doctor on to «Заявки».
    page = text(doctor.get(response.headers["Location"], follow_redirects=True))
    assert "Эту запись только что изменил другой пользователь" in page
    assert state(app, public_id).status == "scheduled"


def test_cancel_by_doctor(app, world):
    public_id = make_consultation(
        app,
        world,
        status="scheduled",
        doctor_id=world.doctors["doctor_c1"],
        scheduled_at=datetime.now(UTC) + timedelta(days=1),
    )
    doctor = signed_in(app, world, "doctor_c1")
    post(doctor, care_url(public_id), care_url(public_id, "cancel"), {"reason": "Врач заболел"})
    assert state(app, public_id).status == "cancelled"
    assert any(
        "отменена медицинским центром" in t for t in notification_texts(app, world, "patient")
    )


def test_cancel_by_duty_doctor(app, world):
    public_id = make_consultation(
        app,
        world,
        kind="duty",
        status="scheduled",
        center_id=None,
        doctor_id=world.doctors["duty"],
        scheduled_at=datetime.now(UTC) + timedelta(days=1),
    )
    duty = signed_in(app, world, "duty")
    post(duty, care_url(public_id), care_url(public_id, "cancel"), {"reason": "Смена отменена"})
    assert state(app, public_id).status == "cancelled"


def test_cancelling_completed_consultation_is_refused(app, world):
    public_id = make_consultation(
        app, world, status="completed", doctor_id=world.doctors["doctor_c1"]
    )
    patient = signed_in(app, world, "patient")
    show = f"/cabinet/consultations/{public_id}"
    response = post(patient, "/account/password/", f"{show}/cancel", {"reason": "Передумала"})
    assert response.status_code == 302
    assert "Эту консультацию уже нельзя отменить." in text(patient.get(show))
    assert state(app, public_id).status == "completed"


# ---------------------------------------------------------------------------------------------
# Row scope and permissions
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("actor", ["other_patient", "doctor_c1", "manager"])
def test_foreign_patient_consultation_is_404(app, world, actor):
    public_id = make_consultation(app, world)
    client = signed_in(app, world, actor)
    show = f"/cabinet/consultations/{public_id}"
    assert client.get(show).status_code in (403, 404, 302)
    token = csrf_token(client, "/account/password/") if actor == "other_patient" else None
    if token:
        assert client.get(show).status_code == 404
        response = client.post(f"{show}/cancel", data={"reason": "чужая", "csrf_token": token})
        assert response.status_code == 404
        response = client.post(
            f"{show}/documents", data={"documents": str(world.foreign_doc), "csrf_token": token}
        )
        assert response.status_code == 404
    assert state(app, public_id).status == "requested"


@pytest.mark.parametrize("actor", ["doctor_c2", "duty"])
def test_foreign_staff_consultation_is_404(app, world, actor):
    public_id = make_consultation(app, world)
    client = signed_in(app, world, actor)
    assert client.get(care_url(public_id)).status_code == 404
    token = csrf_token(client, "/account/password/")
    for action, data in [
        ("schedule", {"day": "2099-01-01", "at": "10:00", "duration": "30"}),
        ("request-documents", {"message": "чужая"}),
        ("reject", {"reason": "чужая"}),
        ("cancel", {"reason": "чужая"}),
    ]:
        response = client.post(care_url(public_id, action), data={**data, "csrf_token": token})
        # 404 for what is not theirs; FAB refuses (302/403) the actions a duty doctor lacks.
        allowed = actor == "doctor_c2" or action == "cancel"
        assert response.status_code == 404 if allowed else response.status_code in (302, 403)
    assert state(app, public_id).status == "requested"
    assert signed_in(app, world, actor).get(care_url("not-a-uuid")).status_code == 404


def test_patient_cannot_use_doctor_actions(app, world):
    public_id = make_consultation(app, world)
    client = signed_in(app, world, "patient")
    token = csrf_token(client, "/account/password/")
    response = client.post(
        care_url(public_id, "schedule"),
        data={"day": "2099-01-01", "at": "10:00", "duration": "30", "csrf_token": token},
    )
    assert response.status_code in (302, 403)
    assert state(app, public_id).status == "requested"


def test_unknown_consultation_is_404(app, world):
    import uuid

    client = signed_in(app, world, "patient")
    assert client.get(f"/cabinet/consultations/{uuid.uuid4()}").status_code == 404


# ---------------------------------------------------------------------------------------------
# The day
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("actor", ["doctor_c1", "duty"])
def test_day_view(app, world, actor):
    set_timezones(app, world, doctor="Asia/Vladivostok", patient="Europe/Moscow")
    from app.extensions import db
    from models import Doctor

    with app.app_context():
        db.session.get(Doctor, world.doctors["duty"]).timezone = "Asia/Vladivostok"
        db.session.commit()
    own = make_consultation(
        app,
        world,
        status="scheduled",
        doctor_id=world.doctors[actor],
        scheduled_at=datetime(2031, 5, 11, 23, 30, tzinfo=UTC),  # 09:30 on the 12th
    )
    other_day = make_consultation(
        app,
        world,
        status="scheduled",
        doctor_id=world.doctors[actor],
        scheduled_at=datetime(2031, 5, 12, 14, 30, tzinfo=UTC),  # 00:30 on the 13th
    )
    someone_else = make_consultation(
        app,
        world,
        status="scheduled",
        doctor_id=world.doctors["doctor_c1b"],
        scheduled_at=datetime(2031, 5, 12, 0, 30, tzinfo=UTC),
    )
    client = signed_in(app, world, actor)
    page = text(client.get("/care/day?date=2031-05-12"))
    assert f"/care/consultations/{own}" in page and "09:30" in page
    assert str(other_day) not in page and str(someone_else) not in page
    assert client.get(f"/care/consultations/{own}").status_code == 200
    assert client.get("/care/day?date=garbage").status_code == 200


@pytest.fixture
def types_ids(app, world):
    from app.extensions import db
    from models import DocumentType

    with app.app_context():
        return {t.code: t.id for t in db.session.execute(select(DocumentType)).scalars()}


def test_day_defaults_to_today(app, world):
    response = signed_in(app, world, "doctor_c1").get("/care/day")
    assert response.status_code == 200
    assert "В этот день консультаций нет." in text(response)


def test_assigned_doctor_can_start_from_the_care_screen(app, world):
    if "ConclusionView.start" not in app.view_functions:
        pytest.skip("the conclusions area is not registered")
    public_id = make_consultation(
        app,
        world,
        status="scheduled",
        doctor_id=world.doctors["doctor_c1"],
        scheduled_at=datetime.now(UTC) + timedelta(minutes=5),
    )
    page = text(signed_in(app, world, "doctor_c1").get(care_url(public_id)))
    assert "Начать консультацию" in page and f"{care_url(public_id, 'start')}" in page
    other = text(signed_in(app, world, "doctor_c1b").get(care_url(public_id)))
    assert "Начать консультацию" not in other
