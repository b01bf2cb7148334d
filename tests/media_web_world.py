"""The consultation room's web side, its world: two centres, their doctors, duty doctors,
staff and patients P and Q (`stage_world`), consultations of P, chat lines, the join token's
claims and the room page's configuration, for the tests/test_media_*.py modules."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta

import jwt

from tests.conftest import login, patient_username


def stage_world(app, make_patient, make_center, make_doctor, make_staff):
    """Centre C1 with doctors D1 (assigned) and D2, centre C2 with D3, a duty doctor; patient P
    (Vladivostok) with a C1 consultation starting in 5 minutes, patient Q."""
    c1, c2 = make_center("Кардиоцентр"), make_center("Онкоцентр")
    w = {
        "c1": c1,
        "c2": c2,
        "d1": make_doctor(username="media_d1", center_id=c1),
        "d2": make_doctor(username="media_d2", center_id=c1),
        "d3": make_doctor(username="media_d3", center_id=c2),
        "duty": make_doctor(username="media_duty", is_duty=True),
        "duty2": make_doctor(username="media_duty2", is_duty=True),
        "p": make_patient(surname="Медиева", timezone="Asia/Vladivostok"),
        "q": make_patient(surname="Чужова"),
        "manager": make_staff("Manager", "media_manager"),
        "admin": make_staff("Admin", "media_admin"),
    }
    w["p_login"] = patient_username(app, w["p"])
    w["q_login"] = patient_username(app, w["q"])
    w["c"] = make_consultation(app, w, doctor=w["d1"])
    return w


def make_consultation(app, w, *, doctor=None, status="scheduled", minutes=5, kind=None, **kw):
    """A consultation of P starting in `minutes` (negative: in the past)."""
    from app.extensions import db
    from models import Consultation, utcnow

    duty = doctor in (w["duty"], w["duty2"])
    with app.app_context():
        c = Consultation(
            public_id=uuid.uuid4(),
            kind=kind or ("duty" if duty else "centre_request"),
            status=status,
            patient_id=kw.pop("patient", w["p"]),
            center_id=kw.pop("center", None if duty else w["c1"]),
            doctor_id=doctor,
            complaints="Боли в груди",
            scheduled_at=utcnow() + timedelta(minutes=minutes),
            duration_minutes=30,
            **kw,
        )
        db.session.add(c)
        db.session.commit()
        return c.public_id


def signed_in(app, username):
    client = app.test_client()
    if username:
        assert login(client, username).status_code == 302
    return client


def decode(app, token: str) -> dict:
    from config import media_token_key

    return jwt.decode(
        token, media_token_key(app.config), algorithms=["HS256"], audience="oblako-media"
    )


def consultation(app, public_id):
    from sqlalchemy import select

    from app.extensions import db
    from models import Consultation

    with app.app_context():
        return db.session.execute(
            select(Consultation).where(Consultation.public_id == public_id)
        ).scalar_one()


def add_messages(app, public_id, author_user_id: int, *bodies: str) -> list[int]:
    from app.extensions import db
    from models import ChatMessage

    c = consultation(app, public_id)
    ids = []
    with app.app_context():
        for body in bodies:
            m = ChatMessage(
                consultation_id=c.id,
                author_id=author_user_id,
                body=body,
                client_msg_id=uuid.uuid4().hex,
            )
            db.session.add(m)
            db.session.flush()
            ids.append(m.id)
        db.session.commit()
    return ids


def user_id_of_doctor(app, doctor_id: int) -> int:
    from app.extensions import db
    from models import Doctor

    with app.app_context():
        return db.session.get(Doctor, doctor_id).user_id


def user_id_of_patient(app, patient_id: int) -> int:
    from app.extensions import db
    from models import Patient

    with app.app_context():
        return db.session.get(Patient, patient_id).user_id


def session_generation(app, user_id: str | int) -> int:
    from app.extensions import db
    from models import OblakoUser

    with app.app_context():
        return db.session.get(OblakoUser, int(user_id)).session_generation


def room_config(html: str) -> dict:
    import json

    match = re.search(
        r'<script type="application/json" id="oblako-room-config">(.*?)</script>', html, re.S
    )
    assert match, "no room config on the page"
    return json.loads(match.group(1))
