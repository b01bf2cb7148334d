"""Consultations with a patient and a doctor, ready for the media server's tests."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import pytest
from flask import Flask


@dataclass(frozen=True)
class Room:
    consultation_id: int
    patient_user_id: int
    doctor_user_id: int


@pytest.fixture
def make_room(app: Flask, make_patient, make_doctor, make_center) -> Callable[..., Room]:
    from app.extensions import db
    from models import Consultation, Doctor, Patient

    def factory(*, kind: str = "duty", status: str = "in_progress") -> Room:
        center_id = make_center()
        patient_id = make_patient()
        doctor_id = make_doctor(center_id=center_id)
        with app.app_context():
            c = Consultation(
                kind=kind,
                status=status,
                patient_id=patient_id,
                doctor_id=doctor_id,
                center_id=center_id,
            )
            db.session.add(c)
            db.session.commit()
            return Room(
                c.id,
                db.session.get(Patient, patient_id).user_id,
                db.session.get(Doctor, doctor_id).user_id,
            )

    return factory


def set_status(app: Flask, consultation_id: int, status: str) -> None:
    from app.extensions import db
    from models import Consultation

    with app.app_context():
        db.session.get(Consultation, consultation_id).status = status
        db.session.commit()


def chat_rows(app: Flask, consultation_id: int) -> list[tuple[int, str, str]]:
    from sqlalchemy import select

    from app.extensions import db
    from models import ChatMessage

    with app.app_context():
        rows = db.session.execute(
            select(ChatMessage.id, ChatMessage.client_msg_id, ChatMessage.body)
            .where(ChatMessage.consultation_id == consultation_id)
            .order_by(ChatMessage.id)
        ).all()
        return [tuple(r) for r in rows]


def make_invite(app, consultation_id: int, created_by: int, *, name: str = "Анна Переводчикова"):
    """A used guest invitation (an interpreter) to the consultation's room."""
    from app.extensions import db
    from models import MediaInvite, utcnow

    with app.app_context():
        invite = MediaInvite(
            consultation_id=consultation_id,
            token_hash=hashlib.sha256(secrets.token_bytes(16)).hexdigest(),
            guest_name=name,
            guest_role="interpreter",
            created_by_id=created_by,
            expires_at=utcnow() + timedelta(hours=1),
            used_at=utcnow(),
        )
        db.session.add(invite)
        db.session.commit()
        return invite.id
