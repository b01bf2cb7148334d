"""A referral consultation after the import (issue 4): the patient uploads documents, the
application enters the centre doctors' queue due in four days, and continues as pathway 1."""

from __future__ import annotations

import io
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from tests.conftest import csrf_token, make_pdf
from tests.consultation_world import (
    World,
    audit_actions,
    care_url,
    load,
    notification_texts,
    post,
    signed_in,
    state,
    text,
    user,
)

pytestmark = pytest.mark.usefixtures("empty_storage")


def make_referral(app, world: World, *, patient_id: int | None = None) -> uuid.UUID:
    """A referral consultation as the import leaves it: awaiting documents, none attached."""
    from app.extensions import db
    from models import Consultation, ConsultationKind, ConsultationStatus

    with app.app_context():
        c = Consultation(
            kind=ConsultationKind.REFERRAL,
            status=ConsultationStatus.AWAITING_DOCUMENTS,
            patient_id=patient_id or world.patient,
            center_id=world.centre1,
            disease_id=world.disease_i48,
        )
        db.session.add(c)
        db.session.commit()
        return c.public_id


def test_attaching_documents_puts_the_referral_in_the_queue(app, world):
    from app import consultations as svc
    from app.extensions import db
    from models import Doctor, MedicalDocument

    public_id = make_referral(app, world)
    with app.app_context():
        doctor = db.session.get(Doctor, world.doctors["doctor_c1"])
        assert svc.doctor_queue(doctor).total == 0  # waiting for the patient, not the doctor
        c = load(public_id)
        ecg = db.session.execute(
            select(MedicalDocument).where(MedicalDocument.public_id == world.ecg)
        ).scalar_one()
        before = datetime.now(UTC)
        assert svc.attach_documents(c, by=user(world, "patient"), document_ids=[ecg.public_id])
        db.session.commit()

        c = load(public_id)
        assert c.status == "requested"
        assert before <= c.submitted_at <= datetime.now(UTC)
        assert c.due_by - c.submitted_at == timedelta(days=4)  # centre applications: 3
        assert [d.public_id for d in c.documents] == [world.ecg]
        assert "consultation.referral_documents_uploaded" in audit_actions(public_id)
        queue = svc.doctor_queue(doctor)
        assert [q.public_id for q in queue.items] == [public_id]
        other = db.session.get(Doctor, world.doctors["doctor_c2"])
        assert svc.doctor_queue(other).total == 0

    for actor in ("doctor_c1", "doctor_c1b"):
        [note] = notification_texts(app, world, actor)
        assert "Направленный пациент загрузил документы" in note and str(c) in note
    assert notification_texts(app, world, "doctor_c2") == []


def test_documents_uploaded_refuses_other_statuses(app, world):
    from app import consultations as svc

    public_id = make_referral(app, world)
    with app.app_context():
        c = load(public_id)
        c.status = "scheduled"
        with pytest.raises(svc.ConsultationError):
            svc.documents_uploaded(c, by=user(world, "patient"))


def test_patient_uploads_documents_then_the_doctor_schedules(app, world, types_ids):
    public_id = make_referral(app, world)
    patient = signed_in(app, world, "patient")
    show = f"/cabinet/consultations/{public_id}"
    page = text(patient.get(show))
    assert 'id="awaiting-documents"' in page
    assert f"{show}/documents" in page  # the upload form is offered

    doctor = signed_in(app, world, "doctor_c1")
    assert str(public_id) not in text(doctor.get("/care/queue"))

    response = post(
        patient,
        show,
        f"{show}/documents",
        {
            "file": (io.BytesIO(make_pdf()), "Выписка.pdf"),
            "file_type": str(types_ids["conclusion"]),
        },
        content_type="multipart/form-data",
    )
    assert response.status_code == 302
    c = state(app, public_id)
    assert c.status == "requested" and c.due_by - c.submitted_at == timedelta(days=4)
    with app.app_context():
        assert [d.original_name for d in load(public_id).documents] == ["Выписка.pdf"]
    page = text(patient.get(show))
    assert "Документы добавлены к консультации." in page
    assert 'id="awaiting-documents"' not in page

    queue = text(doctor.get("/care/queue"))
    assert f'data-consultation="{public_id}"' in queue
    assert any("Направленный пациент" in t for t in notification_texts(app, world, "doctor_c1"))

    day = (datetime.now(UTC) + timedelta(days=3)).date()
    response = post(
        doctor,
        care_url(public_id),
        care_url(public_id, "schedule"),
        {"day": day.isoformat(), "at": "10:00", "duration": "30"},
    )
    assert response.status_code == 302
    c = state(app, public_id)
    assert c.status == "scheduled" and c.doctor_id == world.doctors["doctor_c1"]
    assert f'data-consultation="{public_id}"' not in text(doctor.get("/care/queue"))
    assert any("назначена" in t for t in notification_texts(app, world, "patient"))


def test_nothing_to_attach_leaves_the_referral_waiting(app, world):
    public_id = make_referral(app, world)
    patient = signed_in(app, world, "patient")
    show = f"/cabinet/consultations/{public_id}"
    post(patient, show, f"{show}/documents", {})
    assert state(app, public_id).status == "awaiting_documents"
    assert notification_texts(app, world, "doctor_c1") == []


def test_another_patient_cannot_attach_to_someone_elses_referral(app, world):
    public_id = make_referral(app, world)
    client = signed_in(app, world, "other_patient")
    show = f"/cabinet/consultations/{public_id}"
    token = csrf_token(client, "/account/password/")
    assert client.get(show).status_code == 404
    response = client.post(
        f"{show}/documents", data={"documents": str(world.foreign_doc), "csrf_token": token}
    )
    assert response.status_code == 404
    c = state(app, public_id)
    assert c.status == "awaiting_documents" and c.submitted_at is None
    assert notification_texts(app, world, "doctor_c1") == []


def test_patient_cannot_attach_foreign_document_to_own_referral(app, world):
    public_id = make_referral(app, world)
    patient = signed_in(app, world, "patient")
    show = f"/cabinet/consultations/{public_id}"
    post(patient, show, f"{show}/documents", {"documents": [str(world.foreign_doc)]})
    assert "Приложить можно только свои документы." in text(patient.get(show))
    assert state(app, public_id).status == "awaiting_documents"
