"""Doctors' accounts through the staff screens: a manager creates a doctor (a duty doctor gets
the duty role) who can sign in, deactivates them, and sees the form's errors."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from tests.conftest import login
from tests.staff_support import count as _count
from tests.staff_support import post_form as _post_form
from tests.staff_support import signed_in as _signed_in
from tests.staff_support import text as _text


def _doctor_form(**over) -> dict:
    data = {
        "surname": "Сердцева",
        "name": "Ирина",
        "patronymic": "Олеговна",
        "specialty": "Кардиолог",
        "is_duty": "",
        "timezone": "Asia/Yekaterinburg",
        "username": "serdtseva",
        "password": "Kardio2030x",
        "email": "serdtseva@example.org",
    }
    data.update(over)
    return {k: v for k, v in data.items() if v != ""}


def test_manager_creates_doctor_who_can_sign_in_then_deactivates(app, make_staff, make_center):
    from app.extensions import db
    from models import Doctor

    center_id = make_center()
    manager = _signed_in(app, make_staff("Manager"))
    response = _post_form(manager, "/doctors/add", _doctor_form(center=str(center_id)))
    assert response.status_code == 302
    with app.app_context():
        doctor = db.session.execute(select(Doctor)).scalar_one()
        assert doctor.center_id == center_id
        assert [r.name for r in doctor.user.roles] == ["Doctor"]
        assert doctor.user.timezone == "Asia/Yekaterinburg"
        doctor_id = doctor.id

    doctor_client = _signed_in(app, "serdtseva", "Kardio2030x")
    assert doctor_client.get("/staff/patients/list/").status_code == 200

    form = _doctor_form(center=str(center_id))
    for key in ("username", "password", "email"):
        form.pop(key)
    response = _post_form(manager, f"/doctors/edit/{doctor_id}", form)  # "active" unticked
    assert response.status_code == 302
    with app.app_context():
        assert db.session.get(Doctor, doctor_id).user.active is False
    # The open session ends, and signing in again is refused.
    assert doctor_client.get("/staff/patients/list/").status_code == 302
    assert "/login" in login(app.test_client(), "serdtseva", "Kardio2030x").headers["Location"]


def test_duty_doctor_account_gets_duty_role(app, make_staff):
    from app.extensions import db
    from models import Doctor

    manager = _signed_in(app, make_staff("Manager"))
    response = _post_form(manager, "/doctors/add", _doctor_form(is_duty="y", username="duty9"))
    assert response.status_code == 302
    with app.app_context():
        doctor = db.session.execute(select(Doctor)).scalar_one()
        assert doctor.is_duty and [r.name for r in doctor.user.roles] == ["DutyDoctor"]
    duty = _signed_in(app, "duty9", "Kardio2030x")
    assert duty.get("/duty-shifts/list/").status_code == 200


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"password": "short1"}, "Пароль должен содержать не менее 8 символов."),
        ({"password": "serdtseva2030"}, "Пароль не должен содержать ваше имя"),
        ({"username": "taken"}, "Этот логин уже занят."),
    ],
)
def test_doctor_account_form_errors(app, make_staff, override, message):
    from models import Doctor

    make_staff("Manager", username="taken")
    manager = _signed_in(app, "taken")
    response = _post_form(manager, "/doctors/add", _doctor_form(**override))
    assert response.status_code == 200  # the form comes back with the error
    assert message in _text(response)
    assert _count(app, Doctor) == 0
