"""Pathway 1 through the HTTP views, who sees what: the centre doctors' queue (oldest first,
overdue flagged), the doctor's day in their time zone, row scope (404) and permissions."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from tests.conftest import csrf_token
from tests.consultation_world import (
    care_url,
    make_consultation,
    set_timezones,
    signed_in,
    state,
    text,
)

pytestmark = pytest.mark.usefixtures("empty_storage")


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


def test_day_defaults_to_today(app, world):
    response = signed_in(app, world, "doctor_c1").get("/care/day")
    assert response.status_code == 200
    assert "В этот день консультаций нет." in text(response)


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
