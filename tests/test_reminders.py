"""Reminders 24 h and 1 h before a scheduled consultation: exactly once, in the reader's zone."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from app.extensions import db
from app.reminders import send_reminders
from models import (
    Consultation,
    ConsultationKind,
    ConsultationStatus,
    Doctor,
    Notification,
    OutboundMessage,
    Patient,
)

# 09:00 UTC = 14:00 in Yekaterinburg (UTC+5) = 12:00 in Moscow (UTC+3).
AT = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)


@pytest.fixture
def make_scheduled(app, make_patient, make_doctor):
    def factory(
        *,
        at: datetime = AT,
        status: str = ConsultationStatus.SCHEDULED,
        patient_tz: str = "Asia/Yekaterinburg",
        patient_id: int | None = None,
        doctor_id: int | None = None,
    ) -> int:
        patient_id = patient_id or make_patient(timezone=patient_tz)
        doctor_id = doctor_id or make_doctor(is_duty=True)
        with app.app_context():
            c = Consultation(
                kind=ConsultationKind.DUTY,
                status=status,
                patient_id=patient_id,
                doctor_id=doctor_id,
                scheduled_at=at,
            )
            db.session.add(c)
            db.session.commit()
            return c.id

    return factory


def _run(app, now: datetime):
    with app.app_context():
        return send_reminders(now)


def _texts(app, user_of) -> list[str]:
    with app.app_context():
        return list(
            db.session.execute(
                select(Notification.text)
                .where(Notification.user_id == user_of)
                .order_by(Notification.id)
            ).scalars()
        )


def _users(app, consultation_id: int) -> tuple[int, int]:
    with app.app_context():
        c = db.session.get(Consultation, consultation_id)
        return c.patient.user_id, c.doctor.user_id


def _outbox(app) -> list[tuple[str, str]]:
    with app.app_context():
        rows = db.session.execute(
            select(OutboundMessage.channel, OutboundMessage.dedupe_key).order_by(OutboundMessage.id)
        ).all()
        return [tuple(r) for r in rows]


def test_day_and_hour_reminders_once_each_in_the_patients_time_zone(app, make_scheduled):
    cid = make_scheduled()
    patient_user, doctor_user = _users(app, cid)

    assert _run(app, AT - timedelta(hours=25)).day_before == 0  # not yet
    report = _run(app, AT - timedelta(hours=23, minutes=58))
    assert (report.day_before, report.hour_before) == (1, 0)
    for minutes in (5, 10, 600):  # the worker runs every five minutes: nothing new
        again = _run(app, AT - timedelta(hours=23, minutes=58) + timedelta(minutes=minutes))
        assert (again.day_before, again.hour_before) == (0, 0)

    [patient_day] = _texts(app, patient_user)
    assert "3 декабря 2026, 14:00" in patient_day  # Yekaterinburg, not Moscow, not UTC
    assert "по вашему местному времени" in patient_day
    [doctor_day] = _texts(app, doctor_user)
    assert "3 декабря 2026, 12:00" in doctor_day  # the duty doctor's own zone (Moscow)

    report = _run(app, AT - timedelta(minutes=58))
    assert (report.day_before, report.hour_before) == (0, 1)
    assert _run(app, AT - timedelta(minutes=53)).hour_before == 0
    assert _run(app, AT - timedelta(minutes=3)).hour_before == 0

    patient_texts = _texts(app, patient_user)
    assert len(patient_texts) == 2
    assert "менее чем через час" in patient_texts[1] and "14:00" in patient_texts[1]
    assert len(_texts(app, doctor_user)) == 2

    with app.app_context():
        c = db.session.get(Consultation, cid)
        assert c.reminder_24h_sent_at == AT - timedelta(hours=23, minutes=58)
        assert c.reminder_1h_sent_at == AT - timedelta(minutes=58)
        public_id = c.public_id
    # The patient gets SMS and e-mail (opted in); the doctor only the cabinet notification.
    assert _outbox(app) == [
        ("sms", f"reminder24:{public_id}:20261203T0900:sms"),
        ("email", f"reminder24:{public_id}:20261203T0900:email"),
        ("sms", f"reminder1:{public_id}:20261203T0900:sms"),
        ("email", f"reminder1:{public_id}:20261203T0900:email"),
    ]


def test_booked_half_an_hour_ahead_gets_only_the_hour_reminder(app, make_scheduled):
    cid = make_scheduled()

    report = _run(app, AT - timedelta(minutes=30))

    assert (report.day_before, report.hour_before) == (0, 1)
    assert _run(app, AT - timedelta(minutes=25)).day_before == 0
    with app.app_context():
        c = db.session.get(Consultation, cid)
        assert c.reminder_24h_sent_at is None and c.reminder_1h_sent_at is not None
    assert [key.split(":")[0] for _, key in _outbox(app)] == ["reminder1", "reminder1"]


@pytest.mark.parametrize(
    "status",
    [ConsultationStatus.CANCELLED, ConsultationStatus.REQUESTED, ConsultationStatus.COMPLETED],
)
def test_no_reminders_unless_scheduled(app, make_scheduled, status):
    make_scheduled(status=status)

    for before in (timedelta(hours=20), timedelta(minutes=30)):
        report = _run(app, AT - before)
        assert (report.day_before, report.hour_before) == (0, 0)
    assert _outbox(app) == []
    with app.app_context():
        assert db.session.execute(select(func.count(Notification.id))).scalar() == 0


def test_cancelled_after_the_day_reminder_gets_no_hour_reminder(app, make_scheduled):
    cid = make_scheduled()
    assert _run(app, AT - timedelta(hours=20)).day_before == 1
    with app.app_context():
        db.session.get(Consultation, cid).status = ConsultationStatus.CANCELLED
        db.session.commit()

    assert _run(app, AT - timedelta(minutes=50)).hour_before == 0


def test_no_reminder_for_a_consultation_in_the_past(app, make_scheduled):
    make_scheduled()
    report = _run(app, AT + timedelta(minutes=1))
    assert (report.day_before, report.hour_before) == (0, 0)


def test_patient_without_sms_consent_gets_cabinet_and_email_only(app, make_scheduled):
    cid = make_scheduled()
    with app.app_context():
        patient = db.session.get(Consultation, cid).patient
        patient.notify_sms = False
        db.session.commit()

    _run(app, AT - timedelta(hours=3))

    assert [channel for channel, _ in _outbox(app)] == ["email"]


def test_two_concurrent_runs_send_each_reminder_once(app, make_scheduled, make_doctor):
    doctor_id = make_doctor(is_duty=True)
    ids = [make_scheduled(at=AT + timedelta(minutes=10 * n), doctor_id=doctor_id) for n in range(8)]
    ids += [
        make_scheduled(at=AT - timedelta(hours=20, minutes=n), doctor_id=doctor_id)
        for n in range(4)
    ]  # these are within the hour window for `now` below
    now = AT - timedelta(hours=20, minutes=50)
    barrier = threading.Barrier(2)
    reports, errors = [], []

    def worker():
        try:
            with app.app_context():
                barrier.wait()
                reports.append(send_reminders(now))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)

    assert errors == []
    assert sum(r.day_before for r in reports) == 8
    assert sum(r.hour_before for r in reports) == 4
    with app.app_context():
        per_user = db.session.execute(
            select(Notification.user_id, func.count()).group_by(Notification.user_id)
        ).all()
        doctor_user = db.session.get(Doctor, doctor_id).user_id
        patients = db.session.execute(
            select(func.count(Patient.id)).where(
                Patient.id.in_(select(Consultation.patient_id).where(Consultation.id.in_(ids)))
            )
        ).scalar()
    counts = dict(per_user)
    assert counts.pop(doctor_user) == 12
    assert len(counts) == patients == 12 and set(counts.values()) == {1}
    assert len(_outbox(app)) == 24  # SMS + e-mail per patient, none twice
    assert len({key for _, key in _outbox(app)}) == 24


def test_cli_reminders_prints_counts(app, make_scheduled):
    make_scheduled(at=datetime.now(UTC) + timedelta(minutes=40))
    result = app.test_cli_runner().invoke(args=["oblako", "reminders"])
    assert result.exit_code == 0, result.output
    assert "1 h reminders 1" in result.output


def test_huey_immediate_mode_runs_the_reminder_task(app, make_scheduled):
    from app.tasks import bind_app, huey, send_reminders_periodically

    assert huey.immediate
    bind_app(app)
    cid = make_scheduled(at=datetime.now(UTC) + timedelta(hours=5))

    send_reminders_periodically()  # no app context here: the task brings the worker's own

    with app.app_context():
        assert db.session.get(Consultation, cid).reminder_24h_sent_at is not None
