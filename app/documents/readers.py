"""«Кто открывал мои документы»: who opened a patient's documents and conclusions, and when.

Read from the audit trail (app/audit.py), which records every allowed view, inline preview
and download of a document ("document.view", "document.preview", "document.download") and
every download of a conclusion ("conclusion.download"), with the patient the object belongs
to. Refused attempts are not readings and are left out; so are the patient's own (she knows
them). 152-ФЗ gives the patient the right to know how her data is processed.

A page costs the same number of statements whatever it holds: the count, the events, then
one query each for the people, their roles, the doctors among them, the documents and the
conclusions named on the page.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from datetime import datetime

from flask_babel import lazy_gettext as _l
from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.orm import joinedload, selectinload

from app.extensions import db
from app.permissions import ADMIN, DOCTOR, DUTY_DOCTOR, MANAGER, PATIENT
from models import (
    AuditEvent,
    AuditOutcome,
    Conclusion,
    Doctor,
    MedicalDocument,
    OblakoUser,
    Patient,
    parse_public_id,
)

PER_PAGE = 20

# What the patient reads for each audited action.
ACTION_LABELS: dict[str, object] = {
    "document.view": _l("Opened the document's page"),
    "document.preview": _l("Viewed"),
    "document.download": _l("Downloaded"),
    "conclusion.download": _l("Downloaded"),
}
READ_ACTIONS = tuple(ACTION_LABELS)

# The reader's role as the patient reads it, most specific first.
ROLE_LABELS: tuple[tuple[str, object], ...] = (
    (DUTY_DOCTOR, _l("Duty doctor")),
    (DOCTOR, _l("Doctor of the medical centre")),
    (MANAGER, _l("Manager of the service")),
    (ADMIN, _l("Administrator of the service")),
    (PATIENT, _l("Patient")),
)


@dataclass(frozen=True)
class Reading:
    """One opening of one of the patient's documents or conclusions."""

    at: datetime
    action: str
    role: str  # translated
    name: str  # the reader's name; "" when the account is gone
    organisation: str  # the doctor's centre; "" for the service's own staff
    obj_kind: str  # "document" | "conclusion"
    obj_label: str  # what was opened, as the patient knows it ("" when it is gone)
    document_id: uuid.UUID | None  # to link a document that still exists

    @property
    def action_label(self) -> str:
        return str(ACTION_LABELS.get(self.action, self.action))


@dataclass(frozen=True)
class ReadingsPage:
    items: list[Reading]
    total: int
    page: int
    per_page: int

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total / self.per_page))


def _condition(patient: Patient) -> ColumnElement[bool]:
    return (
        (AuditEvent.patient_id == patient.id)
        & AuditEvent.action.in_(READ_ACTIONS)
        & (AuditEvent.outcome == AuditOutcome.OK)
        & or_(AuditEvent.actor_id.is_(None), AuditEvent.actor_id != patient.user_id)
    )


def _role_label(user: OblakoUser | None) -> str:
    names = {r.name for r in user.roles} if user is not None else set()
    for role, label in ROLE_LABELS:
        if role in names:
            return str(label)
    return str(_l("Staff of the service"))


def _user_name(user: OblakoUser) -> str:
    return " ".join(p for p in (user.last_name, user.first_name) if p).strip() or user.username


def readings_page(patient: Patient, page: int = 1, per_page: int = PER_PAGE) -> ReadingsPage:
    """Who opened `patient`'s documents and conclusions, newest first, one page of them."""
    condition = _condition(patient)
    total = int(db.session.execute(select(func.count(AuditEvent.id)).where(condition)).scalar_one())
    pages = max(1, math.ceil(total / per_page))
    page = min(max(1, page), pages)
    events = list(
        db.session.execute(
            select(AuditEvent)
            .where(condition)
            .order_by(AuditEvent.at.desc(), AuditEvent.id.desc())
            .limit(per_page)
            .offset((page - 1) * per_page)
        ).scalars()
    )
    actor_ids = {e.actor_id for e in events if e.actor_id is not None}
    doc_ids = {
        pid
        for e in events
        if e.object_type == "medical_document" and (pid := parse_public_id(e.object_id))
    }
    conclusion_ids = {
        pid
        for e in events
        if e.object_type == "conclusion" and (pid := parse_public_id(e.object_id))
    }
    users: dict[int, OblakoUser] = {}
    doctors: dict[int, Doctor] = {}
    if actor_ids:
        users = {
            u.id: u
            for u in db.session.execute(
                select(OblakoUser)
                .options(selectinload(OblakoUser.roles))
                .where(OblakoUser.id.in_(actor_ids))
            ).scalars()
        }
        doctors = {
            d.user_id: d
            for d in db.session.execute(
                select(Doctor)
                .options(joinedload(Doctor.center))
                .where(Doctor.user_id.in_(actor_ids))
            ).scalars()
        }
    documents: dict[uuid.UUID, MedicalDocument] = {}
    if doc_ids:
        # Scoped to the patient again: an event names its patient, the document must agree.
        documents = {
            d.public_id: d
            for d in db.session.execute(
                select(MedicalDocument)
                .options(joinedload(MedicalDocument.document_type))
                .where(
                    MedicalDocument.public_id.in_(doc_ids),
                    MedicalDocument.patient_id == patient.id,
                )
            ).scalars()
        }
    conclusions: dict[uuid.UUID, Conclusion] = {}
    if conclusion_ids:
        conclusions = {
            c.public_id: c
            for c in db.session.execute(
                select(Conclusion)
                .options(joinedload(Conclusion.consultation))
                .where(Conclusion.public_id.in_(conclusion_ids))
            ).scalars()
            if c.consultation.patient_id == patient.id
        }
    items = [_reading(e, users, doctors, documents, conclusions) for e in events]
    return ReadingsPage(items=items, total=total, page=page, per_page=per_page)


def _reading(
    event: AuditEvent,
    users: dict[int, OblakoUser],
    doctors: dict[int, Doctor],
    documents: dict[uuid.UUID, MedicalDocument],
    conclusions: dict[uuid.UUID, Conclusion],
) -> Reading:
    from app.consultations.applications import document_type_label

    user = users.get(event.actor_id) if event.actor_id is not None else None
    doctor = doctors.get(event.actor_id) if event.actor_id is not None else None
    if doctor is not None:
        name = doctor.full_name
        organisation = doctor.center.name if doctor.center else ""
    else:
        name = _user_name(user) if user is not None else ""
        organisation = ""
    pid = parse_public_id(event.object_id)
    document_id = None
    if event.object_type == "conclusion":
        kind = "conclusion"
        conclusion = conclusions.get(pid) if pid else None
        label = (
            str(_l("Conclusion on consultation %(number)s", number=str(conclusion.consultation)))
            if conclusion is not None
            else ""
        )
    else:
        kind = "document"
        doc = documents.get(pid) if pid else None
        label = f"{document_type_label(doc.document_type)} — {doc.original_name}" if doc else ""
        document_id = doc.public_id if doc else None
    return Reading(
        at=event.at,
        action=event.action,
        role=_role_label(user),
        name=name,
        organisation=organisation,
        obj_kind=kind,
        obj_label=label,
        document_id=document_id,
    )
