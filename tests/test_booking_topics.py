"""A duty doctor by topic (issue 17, item 3): a topic, then a day, then a time; «Видеосвязь» by
default and sound only for a weak connection, recorded on the consultation, shown to staff and
read by the room."""

from __future__ import annotations

import re
import uuid
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from tests.conftest import (
    TEST_PASSWORD,
    add_shift,
    csrf_token,
    login,
    patient_username,
    tomorrow_at,
)

INDEX = "/cabinet/booking/"


@pytest.fixture
def patient(app, make_patient):
    patient_id = make_patient(timezone="Asia/Vladivostok")
    client = app.test_client()
    login(client, patient_username(app, patient_id))
    return client, patient_id


@pytest.fixture
def shifts(app, make_doctor):
    """A cardiology-only doctor, a doctor for women's health and lifestyle on two days, and a
    doctor whose shift names no topic (takes every one)."""
    cardio, gyn, anyone = (make_doctor(is_duty=True) for _ in range(3))
    return {
        "cardio": add_shift(app, cardio, tomorrow_at(2), slots=2, topic_codes="cardiovascular"),
        "gyn_day1": add_shift(
            app, gyn, tomorrow_at(3), slots=2, topic_codes="gynaecological lifestyle"
        ),
        "gyn_day2": add_shift(
            app, gyn, tomorrow_at(3, days=2), slots=1, topic_codes="gynaecological lifestyle"
        ),
        "any": add_shift(app, anyone, tomorrow_at(5), slots=1),
    }


def text(response) -> str:
    return response.get_data(as_text=True)


def post_booking(client, slot_id: str, **data):
    path = f"/cabinet/booking/{slot_id}"
    token = csrf_token(client, path)
    return client.post(path, data={"csrf_token": token, "mode": "video", **data})


def consultations(app):
    from app.extensions import db
    from models import Consultation

    with app.app_context():
        return list(db.session.execute(select(Consultation)).scalars())


def test_a_topic_first_then_its_free_times_grouped_by_day(app, patient, shifts) -> None:
    client, _ = patient
    page = text(client.get(INDEX))
    assert "Шаг 1 из 3" in page
    for code, label in (
        ("cardiovascular", "Сердце и сосуды"),
        ("gynaecological", "Женское здоровье (гинекология)"),
        ("lifestyle", "Здоровый образ жизни"),
    ):
        assert f'href="/cabinet/booking/?topic={code}"' in page and label in page
    assert "/cabinet/booking/" + shifts["cardio"][0] not in page  # no time before a topic

    page = text(client.get(INDEX + "?topic=gynaecological"))
    listed = set(re.findall(r"/cabinet/booking/([0-9a-f-]{36})\?topic=gynaecological", page))
    assert listed == {*shifts["gyn_day1"], *shifts["gyn_day2"], *shifts["any"]}
    # Grouped by the patient's day: two days, the first one open.
    days = re.findall(r'<details class="oblako-day" data-day="([0-9-]+)"\s*(open)?', page)
    assert len(days) == 2 and days[0][1] == "open" and days[1][1] == ""
    assert "3 свободных окна" in page

    page = text(client.get(INDEX + "?topic=cardiovascular"))
    listed = set(re.findall(r"/cabinet/booking/([0-9a-f-]{36})\?topic=", page))
    assert listed == {*shifts["cardio"], *shifts["any"]}


def test_a_topic_without_free_time_says_so(app, patient, make_doctor) -> None:
    client, _ = patient
    add_shift(app, make_doctor(is_duty=True), tomorrow_at(2), slots=1, topic_codes="lifestyle")
    page = text(client.get(INDEX))
    assert 'href="/cabinet/booking/?topic=lifestyle"' in page
    assert 'href="/cabinet/booking/?topic=cardiovascular"' not in page
    assert "нет свободного времени в ближайшие 14 дней" in page
    # An unknown topic: back to the topics with a message, never a 500.
    response = client.get(INDEX + "?topic=%3Cscript%3E", follow_redirects=True)
    assert response.status_code == 200 and "Выберите тему из списка." in text(response)


def test_booking_with_sound_only_records_the_mode_and_topic(app, patient, shifts) -> None:
    from app.extensions import db
    from models import Doctor

    client, _ = patient
    slot = shifts["cardio"][0]
    form = text(client.get(f"/cabinet/booking/{slot}?topic=cardiovascular"))
    assert "Видеосвязь" in form and "Только звук (при слабом интернете)" in form
    assert re.search(r'value="video"[^>]*checked|checked[^>]*value="video"', form)
    assert 'name="topic"' in form and 'value="cardiovascular"' in form
    response = post_booking(client, slot, mode="audio", topic="cardiovascular")
    assert response.status_code == 302
    (c,) = consultations(app)
    assert (c.mode, c.topic, c.status) == ("audio", "cardiovascular", "scheduled")

    page = text(client.get(f"/cabinet/consultations/{c.public_id}"))
    assert 'data-mode="audio"' in page and "Только звук" in page and "Сердце и сосуды" in page
    # The duty doctor's pages say which mode, and the room asks for the microphone alone.
    with app.app_context():
        doctor = db.session.get(Doctor, c.doctor_id)
        username = doctor.user.username
        local_day = c.scheduled_at.astimezone(ZoneInfo(doctor.timezone)).date()
    staff = app.test_client()
    login(staff, username, TEST_PASSWORD)
    care = text(staff.get(f"/care/consultations/{c.public_id}"))
    assert 'id="consultation-mode" data-mode="audio"' in care and "Только звук" in care
    assert "Сердце и сосуды" in care
    day_page = text(staff.get(f"/care/day?date={local_day.isoformat()}"))
    assert 'class="consultation-mode" data-mode="audio"' in day_page
    shown = text(staff.get(f"/staff/consultations/show/{c.id}"))
    assert "Только звук (при слабом интернете)" in shown and "Сердце и сосуды" in shown
    room = staff.get(f"/media/room/{c.public_id}")
    assert room.status_code == 200 and 'data-mode="audio"' in text(room)


def test_video_stays_the_default(app, patient, shifts) -> None:
    client, _ = patient
    assert post_booking(client, shifts["any"][0], topic="lifestyle").status_code == 302
    (c,) = consultations(app)
    assert (c.mode, c.topic) == ("video", "lifestyle")


def test_a_topic_the_shift_does_not_take_or_a_bad_one_is_refused(app, patient, shifts) -> None:
    client, _ = patient
    response = post_booking(client, shifts["cardio"][0], topic="gynaecological")
    assert response.status_code == 302 and "topic=gynaecological" in response.headers["Location"]
    page = text(client.get(response.headers["Location"]))
    assert "В это время врач не консультирует по этой теме" in page
    for data, message in (
        ({"topic": "astrology"}, "Выберите тему из списка."),
        ({"mode": "hologram"}, "Выберите способ связи."),
    ):
        response = post_booking(client, shifts["cardio"][1], **data)
        assert response.status_code == 200 and message in text(response)
    assert consultations(app) == []


def test_the_manager_sets_a_shifts_topics(app, make_staff, make_doctor) -> None:
    from app.extensions import db
    from models import DutyShift

    doctor_id = make_doctor(is_duty=True)
    client = app.test_client()
    login(client, make_staff("Manager"))
    day = tomorrow_at(9, days=3).strftime("%Y-%m-%d")
    form = text(client.get("/duty-shifts/add"))
    assert "Темы для записи" in form and 'value="gynaecological"' in form
    response = client.post(
        "/duty-shifts/add",
        data={
            "csrf_token": csrf_token(client, "/duty-shifts/add"),
            "doctor": str(doctor_id),
            "starts_at": f"{day} 09:00",
            "ends_at": f"{day} 10:00",
            "slot_minutes": "30",
            "topics": "",
            "topic_codes": ["lifestyle", "cardiovascular", "nonsense"],
        },
    )
    assert response.status_code == 302, text(response)
    with app.app_context():
        shift = db.session.execute(select(DutyShift)).scalar_one()
        assert shift.topic_codes == "cardiovascular lifestyle"
        shift_id = shift.id
    listed = text(client.get("/duty-shifts/list/"))
    assert "Сердце и сосуды, Здоровый образ жизни" in listed
    edit = text(client.get(f"/duty-shifts/edit/{shift_id}"))
    assert re.search(r'value="cardiovascular"[^>]*checked|checked[^>]*value="cardiovascular"', edit)


def test_only_patients_book_and_only_own_consultation_shows_the_mode(
    app, patient, shifts, make_patient
) -> None:
    client, _ = patient
    assert post_booking(client, shifts["any"][0], mode="audio").status_code == 302
    (c,) = consultations(app)
    other = app.test_client()
    login(other, patient_username(app, make_patient()))
    assert other.get(f"/cabinet/consultations/{c.public_id}").status_code == 404
    assert other.get(f"/media/room/{c.public_id}").status_code == 404
    assert uuid.UUID(str(c.public_id))
