"""Shared by the conclusion tests (test_conclusions_*): their world of centres, doctors and
patients (`build_world`), consultations in any status, signed-in clients, starting and issuing
through the pages, and what the database and the PDFs say afterwards."""

from __future__ import annotations

import io
import uuid
from datetime import timedelta

from sqlalchemy import select

from tests.conftest import csrf_token, free_disease, login, patient_username

PASSWORD_PAGE = "/account/password/"

GOOD = {
    "complaints_history": "Давящие боли за грудиной при нагрузке в течение двух месяцев.",
    "findings": "По выписке: инфаркт миокарда в 2025 году, ЭКГ — рубцовые изменения.",
    "diagnosis": "Ишемическая болезнь сердца. Стенокардия напряжения II ФК.",
    "icd10_code": "I20.8",
    "recommendations": "Продолжить приём бисопролола; контроль АД и ЧСС ежедневно.",
    "in_person_visit_needed": "y",
    "next_steps": "Нагрузочная проба через месяц, затем повторная консультация.",
}


def build_world(app, make_patient, make_center, make_doctor, make_staff) -> dict:
    """Centre C1 with doctors D1 (assigned) and D2, centre C2 with doctor D3, a duty doctor,
    patient P (Владивосток) with a consultation at C1 scheduled in five minutes, patient Q."""
    from app.extensions import db
    from models import Disease, Doctor, Patient

    c1 = make_center(name="Кардиоцентр «Сердце»")
    c2 = make_center(name="Онкоцентр «Надежда»")
    w = {
        "c1": c1,
        "c2": c2,
        "d1": make_doctor(username="doc_d1", center_id=c1),
        "d2": make_doctor(username="doc_d2", center_id=c1),
        "d3": make_doctor(username="doc_d3", center_id=c2),
        "duty": make_doctor(username="doc_duty", is_duty=True),
        "p": make_patient(surname="Иванова", timezone="Asia/Vladivostok"),
        "q": make_patient(surname="Петрова"),
        "manager": make_staff("Manager", "manager1"),
        "admin": make_staff("Admin", "admin1"),
    }
    with app.app_context():
        disease = Disease(icd10_code="I20.8", name="Стенокардия", profile="cardiology")
        db.session.add(disease)
        db.session.commit()
        w["disease"] = disease.id
        w["d1_name"] = db.session.get(Doctor, w["d1"]).full_name
        w["p_name"] = db.session.get(Patient, w["p"]).full_name
    # Without a disease: the tests' own consultations of P at C1 carry it (one open
    # application per patient, centre and disease).
    w["consultation"] = make_consultation(app, w, doctor=w["d1"], disease_id=None)
    return w


def make_consultation(app, w, *, doctor=None, status="scheduled", minutes=5, kind=None, **kw):
    from app.extensions import db
    from models import Consultation, utcnow

    with app.app_context():
        kind = kind or ("centre_request" if doctor != w["duty"] else "duty")
        patient_id = kw.pop("patient", w["p"])
        center_id = kw.pop("center", None if doctor == w["duty"] else w["c1"])
        c = Consultation(
            public_id=uuid.uuid4(),
            kind=kind,
            status=status,
            patient_id=patient_id,
            center_id=center_id,
            doctor_id=doctor,
            disease_id=free_disease(
                patient_id, center_id, kw.pop("disease_id", w["disease"]), kind, status
            ),
            complaints="Боли в груди при подъёме по лестнице",
            scheduled_at=utcnow() + timedelta(minutes=minutes),
            **kw,
        )
        db.session.add(c)
        db.session.commit()
        return str(c.public_id)


def as_user(app, username):
    client = app.test_client()
    response = login(client, username)
    assert response.status_code == 302, "login failed"
    return client


def doctor_client(app, username="doc_d1"):
    return as_user(app, username)


def patient_client(app, patient_id):
    return as_user(app, patient_username(app, patient_id))


def post(client, url, data=None):
    token = csrf_token(client, PASSWORD_PAGE)
    return client.post(url, data={**(data or {}), "csrf_token": token})


def consultation_row(app, public_id):
    from app.extensions import db
    from models import Consultation

    with app.app_context():
        c = db.session.execute(
            select(Consultation).where(Consultation.public_id == uuid.UUID(public_id))
        ).scalar_one()
        db.session.expunge(c)
        return c


def conclusions(app, public_id):
    from app.extensions import db
    from models import Conclusion, Consultation

    with app.app_context():
        rows = db.session.execute(
            select(Conclusion)
            .join(Consultation, Consultation.id == Conclusion.consultation_id)
            .where(Consultation.public_id == uuid.UUID(public_id))
            .order_by(Conclusion.version)
        ).scalars()
        out = []
        for r in rows:
            db.session.expunge(r)
            out.append(r)
        return out


def notifications_of(app, patient_id):
    from app.extensions import db
    from models import Notification, Patient

    with app.app_context():
        user_id = db.session.get(Patient, patient_id).user_id
        return [
            n.text
            for n in db.session.execute(
                select(Notification).where(Notification.user_id == user_id)
            ).scalars()
        ]


def audit_actions(app, action):
    from app.extensions import db
    from models import AuditEvent

    with app.app_context():
        return list(
            db.session.execute(select(AuditEvent).where(AuditEvent.action == action)).scalars()
        )


def start_url(public_id):
    return f"/care/consultations/{public_id}/start"


def form_url(public_id):
    return f"/care/consultations/{public_id}/conclusion"


def flashed(client):
    with client.session_transaction() as session:
        return " ".join(str(m[1]) for m in session.get("_flashes", []))


def start(app, public_id, username="doc_d1"):
    client = doctor_client(app, username)
    response = post(client, start_url(public_id))
    return client, response


def issue(client, public_id, **changes):
    return post(client, form_url(public_id), {**GOOD, **changes})


def started(app, w, **kw):
    """A consultation of P at C1, in progress with D1, and D1's client."""
    public_id = make_consultation(app, w, doctor=w["d1"], **kw)
    client, response = start(app, public_id)
    assert response.status_code == 302
    assert consultation_row(app, public_id).status == "in_progress"
    return client, public_id


def pdf_text(data: bytes) -> str:
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(data))
    return "\n".join(page.extract_text() for page in reader.pages)
