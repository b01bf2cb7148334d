"""Staff CRUD screens: reference data, schedule, doctors' accounts, scoped patient lists."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from flask.testing import FlaskClient
from sqlalchemy import event, func, select

from tests.conftest import TEST_PASSWORD, csrf_token, login, patient_username

# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _signed_in(app, username: str, password: str = TEST_PASSWORD) -> FlaskClient:
    client = app.test_client()
    response = login(client, username, password)
    assert response.status_code == 302 and "/login" not in response.headers["Location"]
    return client


def _post_form(client: FlaskClient, form_path: str, data: dict, **kw):
    data = {**data, "csrf_token": csrf_token(client, form_path)}
    return client.post(form_path, data=data, **kw)


def _text(response) -> str:
    return response.get_data(as_text=True)


def _doctor_username(app, doctor_id: int) -> str:
    from app.extensions import db
    from models import Doctor

    with app.app_context():
        return db.session.get(Doctor, doctor_id).user.username


def _make_consultation(
    app,
    *,
    patient_id,
    center_id=None,
    doctor_id=None,
    slot_id=None,
    status="requested",
    kind="centre_request",
) -> int:
    from app.extensions import db
    from models import Consultation

    with app.app_context():
        c = Consultation(
            kind=kind,
            status=status,
            patient_id=patient_id,
            center_id=center_id,
            doctor_id=doctor_id,
            slot_id=slot_id,
        )
        db.session.add(c)
        db.session.commit()
        return c.id


def _make_shift(app, doctor_id: int, start: datetime, hours: int = 2, minutes: int = 30) -> int:
    from app.extensions import db
    from app.staff import create_shift
    from models import DutyShift

    with app.app_context():
        shift = DutyShift(
            doctor_id=doctor_id,
            starts_at=start,
            ends_at=start + timedelta(hours=hours),
            slot_minutes=minutes,
        )
        create_shift(shift)
        db.session.commit()
        return shift.id


def _count(app, model, *where) -> int:
    from app.extensions import db

    with app.app_context():
        return db.session.execute(select(func.count()).select_from(model).where(*where)).scalar()


# Two months ahead, 09:00 in Moscow: shifts are scheduled up to a year ahead (app/dates.py).
FUTURE = (datetime.now(UTC) + timedelta(days=60)).replace(hour=6, minute=0, second=0, microsecond=0)
DAY = f"{FUTURE:%Y-%m-%d}"


# --------------------------------------------------------------------------------------------
# reference data
# --------------------------------------------------------------------------------------------


def test_manager_menu_is_russian(app, make_staff):
    client = _signed_in(app, make_staff("Manager"))
    html = _text(client.get("/centres/list/"))
    for label in (
        "Пациенты",
        "Консультации",
        "Дежурства",
        "Слоты записи",
        "Медицинские центры",
        "Перечень заболеваний",
        "Типы документов",
        "Врачи",
        "Исходящие сообщения",
    ):
        assert label in html, label


def test_menu_is_per_role_and_language_and_a_made_role_is_read_live(app, make_staff):
    """The navbar menu is rendered once per role set and language (views/account.py): each role
    still gets its own, each language its own, and a role made on the Roles screen (permissions
    in the database) sees an edit of its permissions on the next page."""
    from app.accounts import create_user
    from app.extensions import db

    manager, doctor = _signed_in(app, make_staff("Manager")), _signed_in(app, make_staff("Doctor"))
    for _ in range(2):  # the second page comes from the cache
        assert 'href="/outbox/list/"' in _text(manager.get("/notifications/"))
        assert 'href="/outbox/list/"' not in _text(doctor.get("/notifications/"))
    assert "Исходящие сообщения" in _text(manager.get("/notifications/"))
    manager.get("/lang/en")
    assert "Outbound messages" in _text(manager.get("/notifications/"))

    sm = app.appbuilder.sm
    with app.app_context():
        role = sm.add_role("Регистратура")
        sm.add_permission_role(role, sm.add_permission_view_menu("menu_access", "Outbox"))
        create_user(
            username="desk1",
            password=TEST_PASSWORD,
            role_names=["Регистратура"],
            first_name="Регистратор",
            last_name="Первый",
            email="desk1@example.org",
        )
        db.session.commit()
    desk = _signed_in(app, "desk1")
    assert 'href="/outbox/list/"' in _text(desk.get("/no-such-page/"))
    with app.app_context():
        role = sm.find_role("Регистратура")
        sm.del_permission_role(role, sm.find_permission_view_menu("menu_access", "Outbox"))
        db.session.commit()
    assert 'href="/outbox/list/"' not in _text(desk.get("/no-such-page/"))


def test_manager_creates_centre(app, make_staff):
    from models import MedicalCenter

    client = _signed_in(app, make_staff("Manager"))
    response = _post_form(
        client,
        "/centres/add",
        {
            "name": "Центр нефрологии",
            "profile": "nephrology",
            "region": "Казань",
            "description": "Консультации нефролога",
            "active": "y",
        },
    )
    assert response.status_code == 302
    assert _count(app, MedicalCenter, MedicalCenter.name == "Центр нефрологии") == 1
    html = _text(client.get("/centres/list/"))
    assert "Центр нефрологии" in html
    assert "Название" in html  # the column label, translated


def test_manager_creates_disease_with_required_documents(app, make_staff, make_center):
    from app.extensions import db
    from models import Disease, DocumentType

    center_id = make_center()
    with app.app_context():
        types = [
            DocumentType(code="ecg", name="ЭКГ"),
            DocumentType(code="lab", name="Анализы"),
            DocumentType(code="mri", name="МРТ"),
        ]
        db.session.add_all(types)
        db.session.commit()
        ecg, lab = types[0].id, types[1].id

    client = _signed_in(app, make_staff("Manager"))
    response = _post_form(
        client,
        "/diseases/add",
        {
            "icd10_code": "I10",
            "name": "Гипертензия",
            "profile": "cardiology",
            "active": "y",
            "required_document_types": [str(ecg), str(lab)],
            "centers": [str(center_id)],
        },
    )
    assert response.status_code == 302
    with app.app_context():
        disease = db.session.execute(
            select(Disease).where(Disease.icd10_code == "I10")
        ).scalar_one()
        assert sorted(t.code for t in disease.required_document_types) == ["ecg", "lab"]
        assert [c.id for c in disease.centers] == [center_id]
        disease_id = disease.id
    html = _text(client.get(f"/diseases/show/{disease_id}"))
    assert "Необходимые документы" in html and "ЭКГ" in html and "МРТ" not in html


def test_manager_creates_document_type(app, make_staff):
    from models import DocumentType

    client = _signed_in(app, make_staff("Manager"))
    response = _post_form(
        client,
        "/document-types/add",
        {
            "code": "xray",
            "name": "Рентген",
            "name_en": "X-ray",
            "sort_order": "9",
        },
    )
    assert response.status_code == 302
    assert _count(app, DocumentType, DocumentType.code == "xray") == 1


# --------------------------------------------------------------------------------------------
# schedule
# --------------------------------------------------------------------------------------------


def test_manager_creates_shift_and_slots_are_generated(app, make_staff, make_doctor):
    from app.extensions import db
    from models import DutyShift, Slot

    doctor_id = make_doctor(is_duty=True)
    client = _signed_in(app, make_staff("Manager"))
    response = _post_form(
        client,
        "/duty-shifts/add",
        {
            "doctor": str(doctor_id),
            "starts_at": f"{DAY} 09:00",
            "ends_at": f"{DAY} 12:00",
            "slot_minutes": "30",
            "topics": "Кардиология",
        },
    )
    assert response.status_code == 302
    with app.app_context():
        shift = db.session.execute(select(DutyShift)).scalar_one()
        # Typed in the manager's zone (Moscow, UTC+3), stored in UTC.
        assert shift.starts_at == FUTURE
        slots = db.session.execute(select(Slot).order_by(Slot.starts_at)).scalars().all()
        assert len(slots) == 6
        assert all(s.doctor_id == doctor_id for s in slots)
        assert slots[-1].ends_at == FUTURE.replace(hour=9)
        shift_id = shift.id
    # Shown back in the viewer's zone.
    assert "09:00" in _text(client.get(f"/duty-shifts/show/{shift_id}"))
    assert f"{DAY} 09:00" in _text(client.get(f"/duty-shifts/edit/{shift_id}"))


def test_invalid_shift_shows_translated_message(app, make_staff, make_doctor):
    from models import DutyShift

    doctor_id = make_doctor(is_duty=True)
    client = _signed_in(app, make_staff("Manager"))
    response = _post_form(
        client,
        "/duty-shifts/add",
        {
            "doctor": str(doctor_id),
            "starts_at": f"{DAY} 12:00",
            "ends_at": f"{DAY} 09:00",
            "slot_minutes": "30",
        },
        follow_redirects=True,
    )
    assert response.status_code == 200
    assert "Окончание дежурства должно быть позже его начала." in _text(response)
    assert _count(app, DutyShift) == 0


@pytest.mark.parametrize(
    "starts,ends,message",
    [
        ("9999-12-31 09:00", "9999-12-31 12:00", "Эта дата слишком далеко: выбрать можно не позже"),
        (
            f"{datetime.now(UTC) + timedelta(days=400):%Y-%m-%d} 09:00",
            f"{datetime.now(UTC) + timedelta(days=400):%Y-%m-%d} 12:00",
            "Эта дата слишком далеко: выбрать можно не позже",
        ),
        ("2020-03-01 09:00", "2020-03-01 12:00", "Эти дата и время уже прошли."),
    ],
)
def test_shift_out_of_range_is_refused(app, make_staff, make_doctor, starts, ends, message):
    from models import DutyShift, Slot

    doctor_id = make_doctor(is_duty=True)
    client = _signed_in(app, make_staff("Manager"))
    form = {"doctor": str(doctor_id), "starts_at": starts, "ends_at": ends, "slot_minutes": "30"}
    response = _post_form(client, "/duty-shifts/add", form, follow_redirects=True)
    assert response.status_code == 200
    assert message in _text(response)
    assert _count(app, DutyShift) == 0 and _count(app, Slot) == 0


def test_shift_moved_beyond_a_year_is_refused(app, make_staff, make_doctor):
    from app.extensions import db
    from models import DutyShift

    doctor_id = make_doctor(is_duty=True)
    shift_id = _make_shift(app, doctor_id, FUTURE, hours=2)
    client = _signed_in(app, make_staff("Manager"))
    far = f"{datetime.now(UTC) + timedelta(days=400):%Y-%m-%d}"
    response = _post_form(
        client,
        f"/duty-shifts/edit/{shift_id}",
        {
            "doctor": str(doctor_id),
            "starts_at": f"{far} 09:00",
            "ends_at": f"{far} 11:00",
            "slot_minutes": "30",
        },
        follow_redirects=True,
    )
    assert "Эта дата слишком далеко: выбрать можно не позже" in _text(response)
    with app.app_context():
        assert db.session.get(DutyShift, shift_id).starts_at == FUTURE


def test_overlapping_shift_refused(app, make_staff, make_doctor):
    from models import DutyShift

    doctor_id = make_doctor(is_duty=True)
    _make_shift(app, doctor_id, FUTURE, hours=4)
    client = _signed_in(app, make_staff("Manager"))
    response = _post_form(
        client,
        "/duty-shifts/add",
        {
            "doctor": str(doctor_id),
            "starts_at": f"{DAY} 10:00",
            "ends_at": f"{DAY} 11:00",
            "slot_minutes": "30",
        },
        follow_redirects=True,
    )
    assert "У этого врача уже есть дежурство в это время." in _text(response)
    assert _count(app, DutyShift) == 1


def test_editing_times_regenerates_slots(app, make_staff, make_doctor):
    from models import Slot

    doctor_id = make_doctor(is_duty=True)
    shift_id = _make_shift(app, doctor_id, FUTURE, hours=2)
    assert _count(app, Slot, Slot.shift_id == shift_id) == 4
    client = _signed_in(app, make_staff("Manager"))
    response = _post_form(
        client,
        f"/duty-shifts/edit/{shift_id}",
        {
            "doctor": str(doctor_id),
            "starts_at": f"{DAY} 09:00",
            "ends_at": f"{DAY} 10:00",
            "slot_minutes": "20",
            "topics": "",
        },
    )
    assert response.status_code == 302
    assert _count(app, Slot, Slot.shift_id == shift_id) == 3


def test_editing_times_of_booked_shift_is_refused(app, make_staff, make_doctor, make_patient):
    from app.extensions import db
    from models import DutyShift, Slot

    doctor_id = make_doctor(is_duty=True)
    shift_id = _make_shift(app, doctor_id, FUTURE, hours=2)
    with app.app_context():
        slot_id = (
            db.session.execute(select(Slot.id).where(Slot.shift_id == shift_id)).scalars().first()
        )
    _make_consultation(
        app,
        patient_id=make_patient(),
        doctor_id=doctor_id,
        slot_id=slot_id,
        status="scheduled",
        kind="duty",
    )
    client = _signed_in(app, make_staff("Manager"))
    response = _post_form(
        client,
        f"/duty-shifts/edit/{shift_id}",
        {
            "doctor": str(doctor_id),
            "starts_at": f"{DAY} 09:00",
            "ends_at": f"{DAY} 10:00",
            "slot_minutes": "30",
            "topics": "",
        },
        follow_redirects=True,
    )
    assert response.status_code == 200
    assert "На слоты этого дежурства уже есть записи: его время изменить нельзя." in _text(response)
    with app.app_context():
        shift = db.session.get(DutyShift, shift_id)
        assert shift.ends_at == FUTURE + timedelta(hours=2)
    assert _count(app, Slot, Slot.shift_id == shift_id) == 4
    # Topics alone may still change: the bookings are untouched.
    response = _post_form(
        client,
        f"/duty-shifts/edit/{shift_id}",
        {
            "doctor": str(doctor_id),
            "starts_at": f"{DAY} 09:00",
            "ends_at": f"{DAY} 11:00",
            "slot_minutes": "30",
            "topics": "ЗОЖ",
        },
    )
    assert response.status_code == 302
    with app.app_context():
        assert db.session.get(DutyShift, shift_id).topics == "ЗОЖ"
    # Nor can it be deleted.
    token = csrf_token(client, f"/duty-shifts/edit/{shift_id}")
    response = client.post(
        f"/duty-shifts/delete/{shift_id}", data={"csrf_token": token}, follow_redirects=True
    )
    assert "удалить его нельзя" in _text(response)
    assert _count(app, DutyShift) == 1


def test_manager_blocks_and_unblocks_slot(app, make_staff, make_doctor):
    from app.extensions import db
    from models import Slot

    shift_id = _make_shift(app, make_doctor(is_duty=True), FUTURE, hours=1)
    with app.app_context():
        slot_id = (
            db.session.execute(select(Slot.id).where(Slot.shift_id == shift_id)).scalars().first()
        )
    client = _signed_in(app, make_staff("Manager"))
    assert _post_form(client, f"/slots/edit/{slot_id}", {"blocked": "y"}).status_code == 302
    with app.app_context():
        assert db.session.get(Slot, slot_id).blocked is True
    assert _post_form(client, f"/slots/edit/{slot_id}", {}).status_code == 302
    with app.app_context():
        assert db.session.get(Slot, slot_id).blocked is False
    # Slots come only from shifts: no add, no delete.
    assert client.get("/slots/add").status_code == 403


def test_duty_doctor_sees_only_own_shifts_and_slots(app, make_doctor):
    from app.extensions import db
    from models import Slot

    mine = make_doctor(is_duty=True)
    other = make_doctor(is_duty=True)
    my_shift = _make_shift(app, mine, FUTURE, hours=1)
    other_shift = _make_shift(app, other, FUTURE + timedelta(days=1), hours=1)
    with app.app_context():
        other_slot = (
            db.session.execute(select(Slot.id).where(Slot.shift_id == other_shift))
            .scalars()
            .first()
        )
    client = _signed_in(app, _doctor_username(app, mine))
    html = _text(client.get("/duty-shifts/list/"))
    assert f"/duty-shifts/show/{my_shift}" in html
    assert f"/duty-shifts/show/{other_shift}" not in html
    assert client.get(f"/duty-shifts/show/{my_shift}").status_code == 200
    assert client.get(f"/duty-shifts/show/{other_shift}").status_code == 404
    assert client.get(f"/slots/show/{other_slot}").status_code == 404
    slots_html = _text(client.get("/slots/list/"))
    assert len(re.findall(r"/slots/show/\d+", slots_html)) == 2
    # Read only: no edits of shifts or slots.
    assert client.get(f"/duty-shifts/edit/{my_shift}").status_code == 403
    assert client.get("/duty-shifts/add").status_code == 403


def test_duty_doctor_sees_shift_in_own_time_zone(app, make_doctor):
    from app.extensions import db
    from models import Doctor

    doctor_id = make_doctor(is_duty=True)
    with app.app_context():
        db.session.get(Doctor, doctor_id).user.timezone = "Asia/Kamchatka"  # UTC+12
        db.session.commit()
    shift_id = _make_shift(app, doctor_id, FUTURE, hours=1)  # 06:00 UTC
    client = _signed_in(app, _doctor_username(app, doctor_id))
    html = _text(client.get(f"/duty-shifts/show/{shift_id}"))
    assert "18:00" in html and "06:00" not in html


# --------------------------------------------------------------------------------------------
# doctors' accounts
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# scoped lists
# --------------------------------------------------------------------------------------------


@pytest.fixture
def care_world(app, make_center, make_doctor, make_patient):
    """Centre A with a doctor; patients reaching the doctor by centre, personally, or not."""
    center_a, center_b = make_center(), make_center()
    doctor = make_doctor(center_id=center_a)
    duty = make_doctor(is_duty=True)
    by_centre = make_patient(surname="Центрова")
    personal = make_patient(surname="Личная")
    elsewhere = make_patient(surname="Чужая")
    lonely = make_patient(surname="Безконсультаций")
    at_duty = make_patient(surname="Дежурная")
    ids = {
        "by_centre": _make_consultation(app, patient_id=by_centre, center_id=center_a),
        "personal": _make_consultation(
            app, patient_id=personal, center_id=center_b, doctor_id=doctor
        ),
        "elsewhere": _make_consultation(app, patient_id=elsewhere, center_id=center_b),
        "at_duty": _make_consultation(
            app, patient_id=at_duty, doctor_id=duty, kind="duty", status="scheduled"
        ),
    }
    return {
        "doctor": doctor,
        "duty": duty,
        "consultations": ids,
        "patients": {
            "by_centre": by_centre,
            "personal": personal,
            "elsewhere": elsewhere,
            "lonely": lonely,
            "at_duty": at_duty,
        },
    }


def test_doctor_sees_patients_of_own_centre_and_own_consultations(app, care_world):
    client = _signed_in(app, _doctor_username(app, care_world["doctor"]))
    html = _text(client.get("/staff/patients/list/"))
    assert "Центрова" in html and "Личная" in html
    for hidden in ("Чужая", "Безконсультаций", "Дежурная"):
        assert hidden not in html
    patients = care_world["patients"]
    assert client.get(f"/staff/patients/show/{patients['by_centre']}").status_code == 200
    assert client.get(f"/staff/patients/show/{patients['elsewhere']}").status_code == 404
    assert client.get(f"/staff/patients/show/{patients['lonely']}").status_code == 404
    # Read-only screen.
    assert client.get(f"/staff/patients/edit/{patients['by_centre']}").status_code == 403


def test_opening_a_patient_card_is_audited(app, care_world):
    from app.extensions import db
    from models import AuditEvent

    client = _signed_in(app, _doctor_username(app, care_world["doctor"]))
    patients = care_world["patients"]
    assert client.get(f"/staff/patients/show/{patients['by_centre']}").status_code == 200
    assert client.get(f"/staff/patients/show/{patients['elsewhere']}").status_code == 404
    with app.app_context():
        events = (
            db.session.execute(select(AuditEvent).where(AuditEvent.action == "patient.view"))
            .scalars()
            .all()
        )
        assert [e.patient_id for e in events] == [patients["by_centre"]]


def test_manager_sees_every_patient(app, care_world, make_staff):
    client = _signed_in(app, make_staff("Manager"))
    html = _text(client.get("/staff/patients/list/"))
    for surname in ("Центрова", "Личная", "Чужая", "Безконсультаций", "Дежурная"):
        assert surname in html


def test_record_count_is_capped(app, care_world, make_staff, monkeypatch):
    """The total stops counting at the cap (constant cost per page); pages still work."""
    import views.common

    client = _signed_in(app, make_staff("Manager"))
    monkeypatch.setattr(views.common, "COUNT_CAP", 3)
    html = _text(client.get("/staff/patients/list/"))
    assert re.search(r"Количество записей:</strong>\s*3\+", html), html
    monkeypatch.setattr(views.common, "COUNT_CAP", 1000)
    html = _text(client.get("/staff/patients/list/"))
    assert re.search(r"Количество записей:</strong>\s*5\b", html)


def test_consultation_scope_per_role(app, care_world, make_staff):
    c = care_world["consultations"]

    def visible(client) -> set[str]:
        html = _text(client.get("/staff/consultations/list/"))
        shown = set(map(int, re.findall(r"/staff/consultations/show/(\d+)", html)))
        return {name for name, pk in c.items() if pk in shown}

    doctor = _signed_in(app, _doctor_username(app, care_world["doctor"]))
    assert visible(doctor) == {"by_centre", "personal"}
    assert doctor.get(f"/staff/consultations/show/{c['elsewhere']}").status_code == 404
    assert doctor.get(f"/staff/consultations/show/{c['by_centre']}").status_code == 200

    duty = _signed_in(app, _doctor_username(app, care_world["duty"]))
    assert visible(duty) == {"at_duty"}
    assert duty.get(f"/staff/consultations/show/{c['personal']}").status_code == 404
    html = _text(duty.get("/staff/patients/list/"))
    assert "Дежурная" in html and "Центрова" not in html

    manager = _signed_in(app, make_staff("Manager"))
    assert visible(manager) == set(c)
    assert "Заявка в центр" in _text(manager.get("/staff/consultations/list/"))


def test_outbox_for_manager_only(app, make_staff, care_world):
    from app.extensions import db
    from models import OutboundMessage

    with app.app_context():
        db.session.add(OutboundMessage(channel="sms", recipient="+79120000000", body="Код 1234"))
        db.session.commit()
    manager = _signed_in(app, make_staff("Manager"))
    html = _text(manager.get("/outbox/list/"))
    assert "+79120000000" in html and "В очереди" in html
    doctor = _signed_in(app, _doctor_username(app, care_world["doctor"]))
    assert doctor.get("/outbox/list/").status_code == 403


# --------------------------------------------------------------------------------------------
# access refused
# --------------------------------------------------------------------------------------------

STAFF_SCREENS = [
    "/staff/patients/list/",
    "/staff/consultations/list/",
    "/duty-shifts/list/",
    "/duty-shifts/add",
    "/slots/list/",
    "/centres/list/",
    "/centres/add",
    "/diseases/list/",
    "/document-types/list/",
    "/doctors/list/",
    "/doctors/add",
    "/outbox/list/",
]


@pytest.mark.parametrize("path", STAFF_SCREENS)
def test_patient_is_refused_on_staff_screens(app, make_patient, path):
    client = _signed_in(app, patient_username(app, make_patient()))
    # FAB answers 403 to a signed-in user without the permission.
    assert client.get(path).status_code == 403


@pytest.mark.parametrize("path", STAFF_SCREENS)
def test_anonymous_is_sent_to_login(client, path):
    response = client.get(path)
    assert response.status_code == 302
    assert "/login" in response.headers["Location"]


def test_doctor_cannot_manage_reference_or_staff(app, care_world):
    client = _signed_in(app, _doctor_username(app, care_world["doctor"]))
    assert client.get("/diseases/list/").status_code == 200  # read the catalogue
    for path in (
        "/diseases/add",
        "/centres/list/",
        "/doctors/list/",
        "/duty-shifts/list/",
        "/slots/list/",
    ):
        assert client.get(path).status_code == 403, path


def test_unscoped_fab_routes_are_gone(app, make_staff, care_world):
    """FAB's actions and downloads skip base_filters: they are not routed at all."""
    client = _signed_in(app, make_staff("Manager"))
    token = csrf_token(client, "/staff/patients/list/")
    patient = care_world["patients"]["elsewhere"]
    assert (
        client.post(
            "/staff/patients/action_post",
            data={"action": "muldelete", "rowid": [patient], "csrf_token": token},
        ).status_code
        == 404
    )
    assert (
        client.post(
            f"/staff/patients/action/muldelete/{patient}", data={"csrf_token": token}
        ).status_code
        == 404
    )
    assert client.get("/staff/patients/download/x.pdf").status_code == 404
    assert (
        client.post(
            f"/doctors/delete/{care_world['doctor']}", data={"csrf_token": token}
        ).status_code
        == 403
    )


# --------------------------------------------------------------------------------------------
# performance
# --------------------------------------------------------------------------------------------


def _queries_for(app, client: FlaskClient, path: str) -> int:
    from app.extensions import db

    statements: list[str] = []

    def count(conn, cursor, statement, *args):
        statements.append(statement)

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        assert client.get(path).status_code == 200
    finally:
        event.remove(engine, "before_cursor_execute", count)
    return len(statements)


@pytest.mark.parametrize("path", ["/staff/patients/list/", "/staff/consultations/list/"])
def test_list_query_count_does_not_grow_with_rows(
    app, make_center, make_doctor, make_patient, path
):
    center = make_center()
    doctor = make_doctor(center_id=center)
    client = _signed_in(app, _doctor_username(app, doctor))

    def add_patients(n: int) -> None:
        for _ in range(n):
            _make_consultation(app, patient_id=make_patient(), center_id=center, doctor_id=doctor)

    add_patients(5)
    small = _queries_for(app, client, path)
    add_patients(45)
    large = _queries_for(app, client, path)
    assert small == large
