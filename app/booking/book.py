"""Booking a free slot: book_slot() creates a `duty` consultation directly in status `scheduled`.

A slot is booked by at most one active consultation, and the database guarantees it (DESIGN
§2): the partial unique index `uq_consultation_active_slot` (slot_id where the status holds
the slot) refuses a second one on every backend, whatever the Python code did. The
consultation is inserted with `INSERT … ON CONFLICT (slot_id) WHERE <the index's predicate> DO
NOTHING RETURNING …` (SQLAlchemy's dialect insert): the index decides, and a refused insert
returns no row instead of raising, so the loser gets a clean answer and the caller's
transaction stays usable.

Before that, the bookers of one slot and of one patient are serialised:
- PostgreSQL: the patient's row, then the slot's row, `FOR NO KEY UPDATE` (NO KEY: rows that
  reference them, this consultation, can still be inserted). A second booker of the slot waits
  on the slot's lock, then its insert meets the committed booking in the index. The patient's
  lock makes the limit of upcoming bookings exact: the count runs after the lock is held.
- SQLite: the first statement is a (no-op) write, so the transaction holds the database's
  write lock from then on and every read after it sees the last committed booking.

An unlocked look first (slots.bookable_slot) refuses at once what is plainly not bookable,
without queueing on the lock. The doctor's notification and the audit event are written as
in every other transition (app.consultations.common).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from flask import current_app
from flask_babel import lazy_gettext as _l
from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import contains_eager

from app.audit import audit_consultation
from app.booking.slots import (
    SLOT_TAKEN,
    TOPIC_LABELS,
    BookingError,
    SlotNotFound,
    bookable_slot,
    clean_topic,
    serves_topic,
    slot_refusal,
    slot_statement,
)
from app.consultations.common import (
    ConsultationError,
    notify_staff,
    own_documents,
    own_patient,
)
from app.dates import zone
from app.extensions import db
from models import (
    Consultation,
    ConsultationKind,
    ConsultationMode,
    ConsultationStatus,
    MedicalDocument,
    OblakoUser,
    Patient,
    Slot,
    parse_public_id,
    utcnow,
)

DEFAULT_MAX_UPCOMING_DUTY_BOOKINGS = 2
QUESTION_MAX = 2000
MAX_DOCUMENTS = 20
ACTIVE_SLOT_INDEX = "uq_consultation_active_slot"
# «Видеосвязь» first, the default; sound only for a weak connection.
MODE_LABELS = {
    ConsultationMode.VIDEO: _l("Video call"),
    ConsultationMode.AUDIO: _l("Sound only (for a weak Internet connection)"),
}

_INSERTS = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}


def mode_label(value: str | None) -> str:
    """How a consultation is held, as people read it (staff pages, the patient's page)."""
    try:
        return str(MODE_LABELS[ConsultationMode(value or ConsultationMode.VIDEO)])
    except (KeyError, ValueError):
        return value or ""


def topic_label(value: str | None) -> str:
    topic = clean_topic(value)
    return str(TOPIC_LABELS[topic]) if topic is not None else ""


def max_upcoming_bookings() -> int:
    return int(
        current_app.config.get("MAX_UPCOMING_DUTY_BOOKINGS", DEFAULT_MAX_UPCOMING_DUTY_BOOKINGS)
    )


def is_slot_conflict(exc: IntegrityError) -> bool:
    """True when the violation is the one-active-booking-per-slot index (either backend)."""
    text = str(getattr(exc, "orig", exc))
    return ACTIVE_SLOT_INDEX in text or "consultation.slot_id" in text


def upcoming_duty_bookings(patient_id: int, now: datetime) -> int:
    """The patient's duty bookings still ahead (the ones the limit counts)."""
    stmt = select(func.count(Consultation.id)).where(
        Consultation.patient_id == patient_id,
        Consultation.kind == ConsultationKind.DUTY,
        Consultation.status == ConsultationStatus.SCHEDULED,
        Consultation.scheduled_at > now,
    )
    return int(db.session.execute(stmt).scalar() or 0)


def own_documents_for_booking(patient: Patient, limit: int = 100) -> list[MedicalDocument]:
    """The patient's documents for the form's checkboxes, newest first."""
    stmt = (
        select(MedicalDocument)
        .options(contains_eager(MedicalDocument.document_type))
        .join(MedicalDocument.document_type)
        .where(MedicalDocument.patient_id == patient.id)
        .order_by(MedicalDocument.uploaded_at.desc(), MedicalDocument.id.desc())
        .limit(limit)
    )
    return list(db.session.execute(stmt).scalars())


def _lock_booking(patient_id: int, slot_pid: uuid.UUID, *, lock: bool = True) -> Slot:
    """Serialise the bookers of this patient and of this slot (module docstring) and read the
    slot, its doctor and the doctor's user as they are now. `lock=False` only reads."""
    if db.session.get_bind().dialect.name == "sqlite":
        # A write first: the transaction takes SQLite's write lock now, not at the INSERT.
        # (SQLite renders no FOR UPDATE: this lock alone serialises there.)
        db.session.execute(
            update(Slot.__table__)
            .where(Slot.__table__.c.public_id == slot_pid)
            .values(blocked=Slot.__table__.c.blocked)
        )
    stmt = slot_statement(slot_pid).execution_options(populate_existing=True)
    if lock:
        db.session.execute(
            select(Patient.id).where(Patient.id == patient_id).with_for_update(key_share=True)
        )
        # OF slot: the doctor's row stays free, so bookings of other slots do not queue here.
        stmt = stmt.with_for_update(of=Slot, key_share=True)
    slot = db.session.execute(stmt).unique().scalar_one_or_none()
    if slot is None:
        raise SlotNotFound(_l("This time slot does not exist."))
    return slot


def _insert_unless_held(values: dict) -> Consultation | None:
    """INSERT … ON CONFLICT (slot_id) WHERE <the index's own predicate> DO NOTHING RETURNING:
    the new consultation, or None when an active one holds the slot (the index's answer)."""
    dialect = db.session.get_bind().dialect.name
    if dialect not in _INSERTS:
        raise RuntimeError(f"booking needs PostgreSQL or SQLite, not {dialect}")
    index = next(i for i in Consultation.__table__.indexes if i.name == ACTIVE_SLOT_INDEX)
    stmt = (
        _INSERTS[dialect](Consultation)
        .values(**values)
        .on_conflict_do_nothing(
            index_elements=[Consultation.slot_id],
            index_where=index.dialect_options[dialect]["where"],
        )
        .returning(Consultation)
    )
    return db.session.execute(stmt).scalar_one_or_none()


def book_slot(
    patient: Patient | OblakoUser,
    slot_public_id: str | uuid.UUID,
    *,
    question: str = "",
    document_ids: Sequence[str | uuid.UUID] = (),
    mode: str = ConsultationMode.VIDEO,
    topic: str | None = None,
    now: datetime | None = None,
) -> Consultation:
    """Book a free slot for the patient: a `duty` consultation in status `scheduled`.

    Takes the patient (or the patient's user). Raises SlotNotFound for an unknown slot and
    BookingError for every refusal. Writes in the caller's transaction, never commits (the
    caller's unit of work does). Returns the consultation, persistent in the session.
    """
    now = now or utcnow()
    if not isinstance(patient, Patient):
        patient = own_patient(patient)
        if patient is None:
            raise SlotNotFound(_l("Booking is for patients."))
    question = (question or "").strip()
    if len(question) > QUESTION_MAX:
        raise BookingError(
            _l("The question is too long: at most %(n)d characters.", n=QUESTION_MAX)
        )
    if mode not in MODE_LABELS:
        raise BookingError(_l("Choose how to connect."))
    picked = clean_topic(topic) if topic else None
    if topic and picked is None:
        raise BookingError(_l("Choose a topic from the list."))
    slot_pid = parse_public_id(slot_public_id)
    if slot_pid is None:
        raise SlotNotFound(_l("This time slot does not exist."))

    bookable_slot(slot_pid, now=now)  # refuses what is plainly not bookable, before any lock
    try:
        documents = own_documents(patient, document_ids, at_most=MAX_DOCUMENTS)
    except ConsultationError as exc:
        raise BookingError(exc.message) from None

    slot = _lock_booking(patient.id, slot_pid)
    refusal = slot_refusal(slot, now)  # "taken" is the unique index's answer, below
    if refusal is not None:
        raise refusal
    if picked is not None and not serves_topic(slot.shift.topic_codes, picked):
        raise BookingError(
            _l("The doctor does not take this topic at this time. Choose another time."),
            slot_gone=True,
        )
    limit = max_upcoming_bookings()
    if upcoming_duty_bookings(patient.id, now) >= limit:
        raise BookingError(
            _l(
                "You already have the most upcoming duty doctor bookings allowed (%(n)d). "
                "Cancel one of them to book another time.",
                n=limit,
            )
        )
    c = _insert_unless_held(
        {
            "public_id": uuid.uuid4(),
            "kind": ConsultationKind.DUTY,
            "status": ConsultationStatus.SCHEDULED,
            "patient_id": patient.id,
            "doctor_id": slot.doctor_id,
            "slot_id": slot.id,
            "scheduled_at": slot.starts_at,
            "duration_minutes": max(1, int((slot.ends_at - slot.starts_at).total_seconds() // 60)),
            "question": question,
            "mode": mode,
            "topic": picked.value if picked is not None else None,
            "submitted_at": now,
            "scheduled_set_at": now,
        }
    )
    if c is None:
        raise BookingError(SLOT_TAKEN, slot_gone=True)
    if documents:
        c.documents.extend(documents)

    doctor = slot.doctor
    when = slot.starts_at.astimezone(zone(doctor.timezone)).strftime("%d.%m.%Y %H:%M")
    audit_consultation("consultation.book", c, by_id=patient.user_id)
    notify_staff(
        c,
        "consultation_booked",
        _l(
            "New booking with you as the duty doctor: %(when)s (%(tz)s).",
            when=when,
            tz=doctor.timezone,
        ),
        # The consultation is new in this transaction: nothing can have queued this key yet.
        dedupe_key=f"booking:{c.public_id}:doctor",
        new_dedupe_key=True,
    )
    return c
