"""Scheduling a consultation, at the service level (app/consultations/): the doctor's and the
patient's time zones, overlaps with the doctor's other consultations, duration, no past dates."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest

from tests.consultation_world import (
    load,
    make_consultation,
    notifications_of,
    set_timezones,
    tomorrow_at,
    user,
)

pytestmark = pytest.mark.usefixtures("empty_storage")


def test_schedule_reads_doctor_zone_and_tells_patient_in_theirs(app, world):
    from app.consultations import schedule_consultation

    set_timezones(app, world, doctor="Asia/Vladivostok", patient="Europe/Kaliningrad")
    public_id = make_consultation(app, world)
    day = (datetime.now(UTC) + timedelta(days=3)).date()
    with app.app_context():
        schedule_consultation(
            load(public_id),
            by=user(world, "doctor_c1"),
            day=day,
            at=time(10, 0),
            duration_minutes=45,
        )
        from app.extensions import db

        db.session.commit()
        c = load(public_id)
        # 10:00 in Vladivostok (UTC+10) is 00:00 UTC, 02:00 in Kaliningrad (UTC+2).
        assert c.scheduled_at == datetime.combine(day, time(0, 0), tzinfo=UTC)
        assert c.duration_minutes == 45
        assert c.doctor_id == world.doctors["doctor_c1"] and c.scheduled_set_at is not None
        [n] = notifications_of(world, "patient")
        assert n.text.startswith("Консультация")
        assert "назначена на" in n.text and "02:00" in n.text and "Калининград" in n.text
        assert n.link == f"/cabinet/consultations/{public_id}"


@pytest.mark.parametrize(
    "when,minutes,ok",
    [
        ((10, 0), 30, False),  # the same time
        ((10, 15), 30, False),  # starts inside the other
        ((9, 45), 30, False),  # ends inside the other
        ((9, 0), 120, False),  # covers the other
        ((10, 30), 30, True),  # right after
        ((9, 30), 30, True),  # right before
    ],
)
def test_schedule_overlap(app, world, when, minutes, ok):
    from app.consultations import ConsultationError, schedule_consultation

    set_timezones(app, world, doctor="Europe/Moscow", patient="Europe/Moscow")
    day = (datetime.now(UTC) + timedelta(days=3)).date()
    existing = datetime.combine(day, time(10, 0)).replace(tzinfo=UTC) - timedelta(hours=3)
    make_consultation(
        app,
        world,
        kind="duty",
        status="scheduled",
        center_id=None,
        doctor_id=world.doctors["doctor_c1"],
        scheduled_at=existing,
        duration_minutes=30,
    )
    public_id = make_consultation(app, world)
    with app.app_context():
        c = load(public_id)
        kwargs = dict(
            by=user(world, "doctor_c1"), day=day, at=time(*when), duration_minutes=minutes
        )
        if ok:
            schedule_consultation(c, **kwargs)
            assert c.status == "scheduled"
        else:
            with pytest.raises(ConsultationError):
                schedule_consultation(c, **kwargs)
            assert load(public_id).status == "requested"


def test_overlap_ignores_cancelled_and_other_doctors(app, world):
    from app.consultations import schedule_consultation

    day = (datetime.now(UTC) + timedelta(days=3)).date()
    at = datetime.combine(day, time(7, 0), tzinfo=UTC)  # 10:00 Moscow
    make_consultation(
        app, world, status="cancelled", doctor_id=world.doctors["doctor_c1"], scheduled_at=at
    )
    make_consultation(
        app, world, status="scheduled", doctor_id=world.doctors["doctor_c1b"], scheduled_at=at
    )
    public_id = make_consultation(app, world)
    with app.app_context():
        c = load(public_id)
        schedule_consultation(
            c, by=user(world, "doctor_c1"), day=day, at=time(10, 0), duration_minutes=30
        )
        assert c.status == "scheduled"


def test_overlap_with_in_progress_refused(app, world):
    from app.consultations import ConsultationError, schedule_consultation

    day = (datetime.now(UTC) + timedelta(days=3)).date()
    make_consultation(
        app,
        world,
        status="in_progress",
        doctor_id=world.doctors["doctor_c1"],
        scheduled_at=datetime.combine(day, time(7, 0), tzinfo=UTC),
        duration_minutes=60,
    )
    public_id = make_consultation(app, world)
    with app.app_context():
        with pytest.raises(ConsultationError):
            schedule_consultation(
                load(public_id),
                by=user(world, "doctor_c1"),
                day=day,
                at=time(10, 30),
                duration_minutes=30,
            )


@pytest.mark.parametrize("minutes", [0, 14, 121])
def test_schedule_duration_bounds(app, world, minutes):
    from app.consultations import ConsultationError, schedule_consultation

    public_id = make_consultation(app, world)
    day, at = tomorrow_at(10)
    with app.app_context():
        with pytest.raises(ConsultationError):
            schedule_consultation(
                load(public_id),
                by=user(world, "doctor_c1"),
                day=day,
                at=at,
                duration_minutes=minutes,
            )


def test_schedule_in_the_past_refused(app, world):
    from flask_babel import force_locale

    from app.consultations import ConsultationError, schedule_consultation

    public_id = make_consultation(app, world)
    yesterday = (datetime.now(UTC) - timedelta(days=1)).date()
    with app.app_context(), force_locale("ru"):
        with pytest.raises(ConsultationError) as exc:
            schedule_consultation(
                load(public_id),
                by=user(world, "doctor_c1"),
                day=yesterday,
                at=time(12, 0),
                duration_minutes=30,
            )
        assert str(exc.value) == "Дата и время консультации уже прошли."
