"""Pathway 1 through the HTTP views, the actions on a consultation: the doctor schedules (both
time zones), asks for documents, rejects, cancels, starts; the patient adds documents, cancels;
concurrent changes refused with a message."""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime, time, timedelta

import pytest
from sqlalchemy import select

from tests.conftest import make_pdf
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
