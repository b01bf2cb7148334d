"""Submitting an application, at the service level (app/consultations/): a requested consultation,
the centre's doctors notified, the documents its disease requires; refusals save nothing."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from tests.consultation_world import ACTORS, World, audit_actions, load, notifications_of, user

pytestmark = pytest.mark.usefixtures("empty_storage")


def application(world: World, **over):
    from app.consultations import ApplicationData

    data = dict(
        centre_public_id=world.centre1_public,
        disease_id=world.disease_i48,
        diagnosis_text="",
        complaints="Перебои в работе сердца, одышка",
        document_ids=(world.ecg, world.conclusion_doc),
    )
    data.update(over)
    return ApplicationData(**data)


def test_submit_creates_requested_application_and_notifies_centre(app, world):
    from app.consultations import submit_application
    from app.db import unit_of_work

    with app.app_context():
        before = datetime.now(UTC)
        with unit_of_work():
            c = submit_application(user(world, "patient"), application(world))
        c = load(c.public_id)
        assert c.status == "requested" and c.kind == "centre_request"
        assert c.patient_id == world.patient and c.center_id == world.centre1
        assert c.doctor_id is None
        assert before <= c.submitted_at <= datetime.now(UTC)
        assert c.due_by == c.submitted_at + timedelta(days=3)
        assert {d.public_id for d in c.documents} == {world.ecg, world.conclusion_doc}
        for doctor in ("doctor_c1", "doctor_c1b"):
            [n] = notifications_of(world, doctor)
            assert n.kind == "application_submitted"
            assert "Кардиоцентр" in n.text and n.link == f"/care/consultations/{c.public_id}"
        assert notifications_of(world, "doctor_c2") == []
        assert notifications_of(world, "duty") == []
        assert audit_actions(c.public_id) == ["consultation.submit"]


@pytest.mark.parametrize("actor", [a for a in ACTORS if a != "patient"])
def test_only_a_patient_submits_for_themselves(app, world, actor):
    from app.consultations import ConsultationError, submit_application
    from models import Consultation

    with app.app_context():
        with pytest.raises(ConsultationError):
            # Another patient's attempt fails on the documents, which are not theirs.
            submit_application(user(world, actor), application(world))
        from app.extensions import db

        db.session.rollback()
        assert db.session.execute(select(func.count(Consultation.id))).scalar() == 0


def test_missing_documents_are_named(app, world):
    from app.consultations import ConsultationError, submit_application

    with app.app_context():
        with pytest.raises(ConsultationError) as exc:
            submit_application(user(world, "patient"), application(world, document_ids=()))
        from flask_babel import force_locale

        with force_locale("ru"):
            assert str(exc.value) == "Не хватает документов: Заключение врача, ЭКГ."
        with pytest.raises(ConsultationError) as exc:
            submit_application(
                user(world, "patient"), application(world, document_ids=(world.ecg,))
            )
        with force_locale("ru"):
            assert str(exc.value) == "Не хватает документов: Заключение врача."


def test_free_text_diagnosis_needs_no_checklist(app, world):
    from app.consultations import submit_application

    with app.app_context():
        c = submit_application(
            user(world, "patient"),
            application(world, disease_id=None, diagnosis_text="Миокардит", document_ids=()),
        )
        assert c.disease_id is None and c.diagnosis_text == "Миокардит"
        assert c.status == "requested"


@pytest.mark.parametrize(
    "over",
    [
        {"document_ids": ("FOREIGN",)},
        {"centre_public_id": uuid.uuid4()},
        {"disease_id": "D25"},  # not in centre 1's catalogue
        {"disease_id": None, "diagnosis_text": ""},
        {"complaints": "   "},
        {"complaints": "ж" * 5000},
    ],
)
def test_submit_refusals_save_nothing(app, world, over):
    from app.consultations import ConsultationError, submit_application
    from app.db import unit_of_work
    from app.extensions import db
    from models import Consultation

    if over.get("document_ids") == ("FOREIGN",):
        over["document_ids"] = (world.ecg, world.conclusion_doc, world.foreign_doc)
    if over.get("disease_id") == "D25":
        over["disease_id"] = world.disease_d25
    with app.app_context():
        with pytest.raises(ConsultationError):
            with unit_of_work():
                submit_application(user(world, "patient"), application(world, **over))
        assert db.session.execute(select(func.count(Consultation.id))).scalar() == 0
        assert notifications_of(world, "doctor_c1") == []


def test_inactive_centre_refused(app, world):
    from app.consultations import ConsultationError, submit_application
    from app.extensions import db
    from models import MedicalCenter

    with app.app_context():
        db.session.get(MedicalCenter, world.centre1).active = False
        db.session.commit()
        with pytest.raises(ConsultationError):
            submit_application(user(world, "patient"), application(world))
