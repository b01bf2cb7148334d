"""notify(): a cabinet notification always, SMS / e-mail queued in the outbox as opted in."""

from __future__ import annotations

from sqlalchemy import select

from app.extensions import db
from app.notifications import notify
from models import Notification, OutboundMessage, Patient


def test_notify_patient_queues_sms_and_email_once_per_key(app, make_patient):
    patient_id = make_patient(email="sms@example.org")
    with app.app_context():
        patient = db.session.get(Patient, patient_id)
        for _ in range(2):
            notify(
                patient.user,
                "test",
                "Консультация назначена",
                link="/cabinet/",
                dedupe_key="reminder:1",
            )
        db.session.commit()
        assert db.session.execute(select(Notification)).scalars().all()[0].text == (
            "Консультация назначена"
        )
        outbox = db.session.execute(select(OutboundMessage)).scalars().all()
        assert sorted((m.channel, m.recipient) for m in outbox) == [
            ("email", "sms@example.org"),
            ("sms", patient.phone),
        ]


def test_opt_out_is_respected(app, make_patient):
    patient_id = make_patient(email=None)
    with app.app_context():
        patient = db.session.get(Patient, patient_id)
        patient.notify_sms = False
        notify(patient.user, "test", "Текст")
        db.session.commit()
        assert db.session.execute(select(OutboundMessage)).scalars().all() == []
        assert len(db.session.execute(select(Notification)).scalars().all()) == 1
