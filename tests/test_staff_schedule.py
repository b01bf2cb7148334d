"""The duty schedule through the staff screens: shifts and the slots they generate (dates within
a year, overlaps, edits of booked shifts), blocking slots, a duty doctor's own read-only view."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from tests.conftest import csrf_token
from tests.staff_support import count as _count
from tests.staff_support import doctor_username as _doctor_username
from tests.staff_support import make_consultation as _make_consultation
from tests.staff_support import post_form as _post_form
from tests.staff_support import signed_in as _signed_in
from tests.staff_support import text as _text


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


# Two months ahead, 09:00 in Moscow: shifts are scheduled up to a year ahead (app/dates.py).
FUTURE = (datetime.now(UTC) + timedelta(days=60)).replace(hour=6, minute=0, second=0, microsecond=0)


DAY = f"{FUTURE:%Y-%m-%d}"


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
