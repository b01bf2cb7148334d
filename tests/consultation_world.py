"""A small world for consultation tests: two centres, their doctors, a duty doctor, staff and
two patients with documents (`world`), and consultations in any status (`make_consultation`).
Also the small helpers their tests share (a signed-in client, a page's text, a form post, the
actors and their notifications). Registered as a plugin in tests/conftest.py: the consultation
and care-view tests, test_referral_flow and others share it (no test module imports another)."""

from __future__ import annotations

import io
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

import pytest
from sqlalchemy import select

from tests.conftest import csrf_token, free_disease, login, make_image, make_pdf


@dataclass
class World:
    centre1: int
    centre2: int
    centre1_public: uuid.UUID
    centre2_public: uuid.UUID
    disease_i48: int  # requires: doctor's conclusion, ECG
    disease_d25: int  # gynaecology, not in centre 1's catalogue
    users: dict[str, int]  # actor name → ab_user.id
    doctors: dict[str, int]  # doctor_c1, doctor_c1b, doctor_c2, duty → doctor.id
    patient: int
    other_patient: int
    ecg: uuid.UUID  # the patient's ECG
    conclusion_doc: uuid.UUID  # the patient's doctor's conclusion
    foreign_doc: uuid.UUID  # the other patient's document


@pytest.fixture
def empty_storage(app):
    """No documents left on disk by an earlier test (the rows are gone already)."""
    import shutil
    from pathlib import Path

    shutil.rmtree(Path(app.config["STORAGE_DIR"]) / "documents", ignore_errors=True)


@pytest.fixture
def world(app, make_patient, make_center, make_doctor, make_staff) -> World:
    return build_world(app, make_patient, make_center, make_doctor, make_staff)


@pytest.fixture
def types_ids(app, world):
    """The document types' ids by code (the world's catalogue)."""
    from app.extensions import db
    from models import DocumentType

    with app.app_context():
        return {t.code: t.id for t in db.session.execute(select(DocumentType)).scalars()}


def build_world(app, make_patient, make_center, make_doctor, make_staff) -> World:
    """Two centres, their doctors, a duty doctor, staff, and two patients with documents."""
    from app.accounts import get_role
    from app.catalogue import load_catalogue
    from app.documents.upload import store_document
    from app.extensions import db
    from models import Disease, Doctor, MedicalCenter, OblakoUser, Patient

    c1 = make_center("Кардиоцентр")
    c2 = make_center("Другой центр")
    d1, d1b, d2 = (
        make_doctor(center_id=c1),
        make_doctor(center_id=c1),
        make_doctor(center_id=c2),
    )
    duty = make_doctor(is_duty=True)
    manager, admin = make_staff("Manager"), make_staff("Admin")
    p, other = make_patient(surname="Иванова"), make_patient(surname="Петрова")
    with app.app_context():
        types = load_catalogue()
        i48 = db.session.execute(select(Disease).where(Disease.icd10_code == "I48")).scalar_one()
        i10 = db.session.execute(select(Disease).where(Disease.icd10_code == "I10")).scalar_one()
        d25 = db.session.execute(select(Disease).where(Disease.icd10_code == "D25")).scalar_one()
        centre1, centre2 = db.session.get(MedicalCenter, c1), db.session.get(MedicalCenter, c2)
        centre1.diseases.extend([i48, i10])
        centre2.diseases.append(d25)
        patient, other_patient = db.session.get(Patient, p), db.session.get(Patient, other)
        ecg = store_document(
            patient,
            by=patient.user,
            stream=io.BytesIO(make_image("PNG")),
            filename="ЭКГ.png",
            document_type=types["ecg"],
        )
        concl = store_document(
            patient,
            by=patient.user,
            stream=io.BytesIO(make_pdf()),
            filename="Заключение.pdf",
            document_type=types["conclusion"],
        )
        foreign = store_document(
            other_patient,
            by=other_patient.user,
            stream=io.BytesIO(make_pdf()),
            filename="Чужое.pdf",
            document_type=types["ecg"],
        )
        db.session.commit()

        def user_id(username: str) -> int:
            return db.session.execute(
                select(OblakoUser.id).where(OblakoUser.username == username)
            ).scalar_one()

        doctor_users = {
            name: db.session.get(Doctor, did).user_id
            for name, did in (("doctor_c1", d1), ("doctor_c1b", d1b), ("doctor_c2", d2))
        }
        doctor_users["duty"] = db.session.get(Doctor, duty).user_id
        assert get_role("Admin")
        return World(
            centre1=c1,
            centre2=c2,
            centre1_public=centre1.public_id,
            centre2_public=centre2.public_id,
            disease_i48=i48.id,
            disease_d25=d25.id,
            users={
                "patient": patient.user_id,
                "other_patient": other_patient.user_id,
                **doctor_users,
                "manager": user_id(manager),
                "admin": user_id(admin),
            },
            doctors={"doctor_c1": d1, "doctor_c1b": d1b, "doctor_c2": d2, "duty": duty},
            patient=p,
            other_patient=other,
            ecg=ecg.public_id,
            conclusion_doc=concl.public_id,
            foreign_doc=foreign.public_id,
        )


def make_consultation(app, world: World, *, status: str = "requested", **kw) -> uuid.UUID:
    """A centre application of the world's patient at centre 1, in the given status."""
    from app.extensions import db
    from models import Consultation, MedicalDocument

    with app.app_context():
        now = datetime.now(UTC)
        kind = kw.pop("kind", "centre_request")
        patient_id = kw.pop("patient_id", world.patient)
        center_id = kw.pop("center_id", world.centre1)
        c = Consultation(
            kind=kind,
            status=status,
            patient_id=patient_id,
            center_id=center_id,
            disease_id=free_disease(patient_id, center_id, world.disease_i48, kind, status),
            complaints="Перебои в работе сердца",
            submitted_at=kw.pop("submitted_at", now),
            due_by=kw.pop("due_by", now + timedelta(days=3)),
            **kw,
        )
        c.documents.append(
            db.session.execute(
                select(MedicalDocument).where(MedicalDocument.public_id == world.ecg)
            ).scalar_one()
        )
        db.session.add(c)
        db.session.commit()
        return c.public_id


def set_timezones(app, world, *, doctor: str, patient: str) -> None:
    from app.extensions import db
    from models import Doctor, Patient

    with app.app_context():
        db.session.get(Doctor, world.doctors["doctor_c1"]).timezone = doctor
        db.session.get(Patient, world.patient).timezone = patient
        db.session.commit()


def signed_in(app, world, actor: str):
    from app.extensions import db
    from models import OblakoUser

    with app.app_context():
        username = db.session.get(OblakoUser, world.users[actor]).username
    client = app.test_client()
    response = login(client, username)
    assert response.status_code == 302 and "/login" not in response.headers["Location"]
    return client


def text(response) -> str:
    return response.get_data(as_text=True)


def state(app, public_id):
    from app.extensions import db
    from models import Consultation

    with app.app_context():
        return db.session.execute(
            select(Consultation).where(Consultation.public_id == public_id)
        ).scalar_one()


def notification_texts(app, world, actor: str) -> list[str]:
    from app.extensions import db
    from models import Notification

    with app.app_context():
        return list(
            db.session.execute(
                select(Notification.text)
                .where(Notification.user_id == world.users[actor])
                .order_by(Notification.id)
            ).scalars()
        )


def post(client, form_page: str, url: str, data: dict, **kw):
    return client.post(url, data={**data, "csrf_token": csrf_token(client, form_page)}, **kw)


def care_url(public_id, action: str = "") -> str:
    return f"/care/consultations/{public_id}" + (f"/{action}" if action else "")


def user(world: World, actor: str):
    from app.extensions import db
    from models import OblakoUser

    return db.session.get(OblakoUser, world.users[actor])


def load(public_id: uuid.UUID):
    from app.extensions import db
    from models import Consultation

    db.session.expire_all()
    return db.session.execute(
        select(Consultation).where(Consultation.public_id == public_id)
    ).scalar_one()


def audit_actions(public_id: uuid.UUID) -> list[str]:
    from app.extensions import db
    from models import AuditEvent

    return list(
        db.session.execute(
            select(AuditEvent.action)
            .where(AuditEvent.object_id == str(public_id))
            .order_by(AuditEvent.id)
        ).scalars()
    )


# The actors of the service-level tests (tests/test_consultation_{scope,submission,transitions,
# scheduling}.py): the patient who owns the consultation, another patient, a doctor of its centre,
# a doctor of another centre, a duty doctor, a manager (and an admin where it matters).
ACTORS = ("patient", "other_patient", "doctor_c1", "doctor_c2", "duty", "manager")


def notifications_of(world: World, actor: str) -> list:
    from app.extensions import db
    from models import Notification

    return list(
        db.session.execute(
            select(Notification)
            .where(Notification.user_id == world.users[actor])
            .order_by(Notification.id)
        ).scalars()
    )


def tomorrow_at(hour: int, minute: int = 0) -> tuple[date, time]:
    return (datetime.now(UTC) + timedelta(days=2)).date(), time(hour, minute)
