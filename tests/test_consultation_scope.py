"""Who sees a consultation, at the service level (app/consultations/): the patient's and the
staff's row scope, tried by every actor; a doctor's queue (oldest first) and day."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta

import pytest

from tests.consultation_world import ACTORS, make_consultation, set_timezones, user

pytestmark = pytest.mark.usefixtures("empty_storage")


# ---------------------------------------------------------------------------------------------
# Row scope
# ---------------------------------------------------------------------------------------------


PATIENT_SCOPE = {"patient": True}


STAFF_SCOPE_CENTRE = {"doctor_c1": True, "admin": True}


@pytest.mark.parametrize("actor", [*ACTORS, "admin"])
def test_patient_scope(app, world, actor):
    from app.consultations import consultation_for_patient
    from app.errors import NotFound

    public_id = make_consultation(app, world)
    with app.app_context():
        if PATIENT_SCOPE.get(actor):
            assert consultation_for_patient(user(world, actor), public_id).public_id == public_id
        else:
            with pytest.raises(NotFound):
                consultation_for_patient(user(world, actor), public_id)
        with pytest.raises(NotFound):
            consultation_for_patient(user(world, actor), uuid.uuid4())


@pytest.mark.parametrize("actor", [*ACTORS, "admin"])
def test_staff_scope_of_a_centre_application(app, world, actor):
    from app.consultations import consultation_for_staff
    from app.errors import NotFound

    public_id = make_consultation(app, world)
    with app.app_context():
        if STAFF_SCOPE_CENTRE.get(actor):
            assert consultation_for_staff(user(world, actor), public_id).public_id == public_id
        else:
            with pytest.raises(NotFound):
                consultation_for_staff(user(world, actor), public_id)


@pytest.mark.parametrize("actor", ACTORS)
def test_staff_scope_of_a_duty_booking(app, world, actor):
    """A duty booking (no centre) is seen by its own duty doctor only."""
    from app.consultations import consultation_for_staff
    from app.errors import NotFound

    public_id = make_consultation(
        app, world, kind="duty", status="scheduled", center_id=None, doctor_id=world.doctors["duty"]
    )
    with app.app_context():
        if actor == "duty":
            assert consultation_for_staff(user(world, actor), public_id)
        else:
            with pytest.raises(NotFound):
                consultation_for_staff(user(world, actor), public_id)


def test_doctor_sees_consultation_assigned_to_them_outside_centre(app, world):
    from app.consultations import consultation_for_staff

    public_id = make_consultation(
        app,
        world,
        status="scheduled",
        center_id=world.centre1,
        doctor_id=world.doctors["doctor_c2"],
    )
    with app.app_context():
        assert consultation_for_staff(user(world, "doctor_c2"), public_id)


def test_deactivated_doctor_loses_scope(app, world):
    from app.consultations import consultation_for_staff
    from app.errors import NotFound
    from app.extensions import db
    from models import Doctor

    public_id = make_consultation(app, world)
    with app.app_context():
        db.session.get(Doctor, world.doctors["doctor_c1"]).active = False
        db.session.commit()
        with pytest.raises(NotFound):
            consultation_for_staff(user(world, "doctor_c1"), public_id)


# ---------------------------------------------------------------------------------------------
# The queue and the day
# ---------------------------------------------------------------------------------------------


def test_queue_oldest_first_own_centre_only(app, world):
    from app.consultations import doctor_queue
    from app.extensions import db
    from models import Doctor

    now = datetime.now(UTC)
    newest = make_consultation(app, world, submitted_at=now - timedelta(hours=1))
    oldest = make_consultation(app, world, submitted_at=now - timedelta(days=5))
    middle = make_consultation(
        app, world, status="needs_documents", submitted_at=now - timedelta(days=1)
    )
    make_consultation(app, world, status="scheduled", submitted_at=now - timedelta(days=6))
    make_consultation(app, world, center_id=world.centre2, submitted_at=now - timedelta(days=7))
    with app.app_context():
        page = doctor_queue(db.session.get(Doctor, world.doctors["doctor_c1"]))
        assert [c.public_id for c in page.items] == [oldest, middle, newest]
        assert page.total == 3 and not page.capped


def test_queue_is_a_constant_number_of_queries(app, world):
    from sqlalchemy import event

    from app.consultations import doctor_queue
    from app.extensions import db
    from models import Doctor

    for _ in range(12):
        make_consultation(app, world)
    with app.app_context():
        doctor = db.session.get(Doctor, world.doctors["doctor_c1"])
        statements: list[str] = []

        def count(*args, **kw):
            statements.append(args[2])

        event.listen(db.engine, "before_cursor_execute", count)
        try:
            page = doctor_queue(doctor, page_size=5)
            for c in page.items:
                _ = c.patient.full_name, c.disease and c.disease.name
        finally:
            event.remove(db.engine, "before_cursor_execute", count)
        assert len(page.items) == 5 and page.pages == 3
        assert len(statements) == 2


def test_doctor_day_uses_doctor_zone(app, world):
    from app.consultations import doctor_day
    from app.extensions import db
    from models import Doctor

    set_timezones(app, world, doctor="Asia/Vladivostok", patient="Europe/Moscow")
    day = date(2031, 5, 12)
    # 23:30 UTC on the 11th is 09:30 on the 12th in Vladivostok; 14:30 UTC on the 12th is
    # 00:30 on the 13th there.
    inside = make_consultation(
        app,
        world,
        status="scheduled",
        doctor_id=world.doctors["doctor_c1"],
        scheduled_at=datetime(2031, 5, 11, 23, 30, tzinfo=UTC),
    )
    make_consultation(
        app,
        world,
        status="scheduled",
        doctor_id=world.doctors["doctor_c1"],
        scheduled_at=datetime(2031, 5, 12, 14, 30, tzinfo=UTC),
    )
    with app.app_context():
        items = doctor_day(db.session.get(Doctor, world.doctors["doctor_c1"]), day)
        assert [c.public_id for c in items] == [inside]
