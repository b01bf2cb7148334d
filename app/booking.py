"""Pathway 2: booking a duty doctor by schedule («у дежурного врача (по расписанию)»).

A patient picks a free slot of an active duty doctor in the next BOOKING_WINDOW_DAYS days; the
booking is a `duty` consultation created directly in status `scheduled`.

A slot is booked by at most one active consultation, and the database guarantees it (DESIGN §2):
the partial unique index `uq_consultation_active_slot` (slot_id where the status holds the slot)
refuses a second active consultation of a slot on every backend, whatever the Python code did.
On top of it, book_slot() serialises the bookers of one slot so that the loser gets a clean
answer instead of a constraint violation:

- PostgreSQL: the patient's row and the slot's row are locked (`SELECT … FOR NO KEY UPDATE`;
  NO KEY so that rows referencing them, such as this consultation, can still be inserted).
  A second booker waits on the slot lock, then reads the committed booking and is refused. The
  patient's lock makes the limit of upcoming bookings exact under concurrent requests.
- SQLite: writers are serialised by the database-wide write lock; the first statement of the
  booking is a (no-op) write, so the transaction holds that lock from its start and every read
  after it sees the last committed booking.

The insert runs in a SAVEPOINT and is flushed there: if the unique index bites anyway (a writer
that skipped the lock), the violation is raised inside book_slot(), translated into BookingError
and the session stays usable for the caller's unit of work.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from flask import current_app
from flask_babel import lazy_gettext as _l
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import contains_eager

from app.audit import audit
from app.errors import DomainError, NotFound
from app.extensions import db
from app.notifications import notify
from models import (
    SLOT_HOLDING_STATUSES,
    Consultation,
    ConsultationKind,
    ConsultationMode,
    ConsultationStatus,
    Doctor,
    MedicalDocument,
    OblakoUser,
    Patient,
    Slot,
    utcnow,
)

BOOKING_WINDOW_DAYS = 14
DEFAULT_MAX_UPCOMING_DUTY_BOOKINGS = 2
QUESTION_MAX = 2000
MAX_DOCUMENTS = 20
ACTIVE_SLOT_INDEX = "uq_consultation_active_slot"

SLOT_TAKEN = _l("This time has just been taken. Choose another one.")
MODE_LABELS = {ConsultationMode.VIDEO: _l("Video call")}


class BookingError(DomainError):
    """The booking was refused; `slot_gone` when the slot itself can no longer be booked."""

    def __init__(self, message: str, *, slot_gone: bool = False) -> None:
        super().__init__(message)
        self.slot_gone = slot_gone


class SlotNotFound(NotFound):
    pass


_HOLDING = [str(s) for s in SLOT_HOLDING_STATUSES]


# ---------------------------------------------------------------------------------------------
# Free slots
# ---------------------------------------------------------------------------------------------


@dataclass
class SlotChoice:
    public_id: uuid.UUID
    starts_at: datetime  # in the patient's time zone
    ends_at: datetime


@dataclass
class DaySlots:
    day: date  # the patient's local date
    slots: list[SlotChoice] = field(default_factory=list)


@dataclass
class DoctorSlots:
    doctor: Doctor
    topics: list[str] = field(default_factory=list)
    days: list[DaySlots] = field(default_factory=list)

    @property
    def count(self) -> int:
        return sum(len(d.slots) for d in self.days)


def _zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "")
    except Exception:
        return ZoneInfo(current_app.config.get("DEFAULT_TIMEZONE", "Europe/Moscow"))


def slot_is_held():
    """SQL condition: an active consultation holds the slot (the index's own predicate)."""
    return (
        select(Consultation.id)
        .where(Consultation.slot_id == Slot.id, Consultation.status.in_(_HOLDING))
        .exists()
    )


def free_slots(*, now: datetime | None = None, days: int = BOOKING_WINDOW_DAYS) -> list[Slot]:
    """Bookable slots of active duty doctors: one query (anti-join, doctor and shift eager)."""
    now = now or utcnow()
    stmt = (
        select(Slot)
        .join(Slot.doctor)
        .join(Slot.shift)
        .options(contains_eager(Slot.doctor), contains_eager(Slot.shift))
        .where(
            Doctor.active.is_(True),
            Doctor.is_duty.is_(True),
            Slot.blocked.is_(False),
            Slot.starts_at > now,
            Slot.starts_at < now + timedelta(days=days),
            ~slot_is_held(),
        )
        .order_by(Doctor.surname, Doctor.name, Doctor.id, Slot.starts_at)
    )
    return list(db.session.execute(stmt).scalars())


def slot_choice(slot: Slot, timezone: str | None) -> SlotChoice:
    zone = _zone(timezone)
    return SlotChoice(
        slot.public_id, slot.starts_at.astimezone(zone), slot.ends_at.astimezone(zone)
    )


def free_slots_by_doctor(timezone: str | None, *, now: datetime | None = None) -> list[DoctorSlots]:
    """Free slots grouped by doctor and by the patient's local day, times in that zone."""
    grouped: list[DoctorSlots] = []
    for slot in free_slots(now=now):
        if not grouped or grouped[-1].doctor.id != slot.doctor_id:
            grouped.append(DoctorSlots(doctor=slot.doctor))
        entry = grouped[-1]
        topics = (slot.shift.topics or "").strip()
        if topics and topics not in entry.topics:
            entry.topics.append(topics)
        choice = slot_choice(slot, timezone)
        if not entry.days or entry.days[-1].day != choice.starts_at.date():
            entry.days.append(DaySlots(day=choice.starts_at.date()))
        entry.days[-1].slots.append(choice)
    return grouped


def parse_public_id(value: str | uuid.UUID | None) -> uuid.UUID | None:
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except (TypeError, ValueError):
        return None


def bookable_slot(slot_public_id: str | uuid.UUID, *, now: datetime | None = None) -> Slot:
    """The slot for the booking form, or BookingError / SlotNotFound saying why not (no lock)."""
    slot = _load_slot(slot_public_id, lock=False)
    _check_slot(slot, now or utcnow())
    return slot


def own_documents_for_booking(patient: Patient, limit: int = 100) -> list[MedicalDocument]:
    stmt = (
        select(MedicalDocument)
        .options(contains_eager(MedicalDocument.document_type))
        .join(MedicalDocument.document_type)
        .where(MedicalDocument.patient_id == patient.id)
        .order_by(MedicalDocument.uploaded_at.desc(), MedicalDocument.id.desc())
        .limit(limit)
    )
    return list(db.session.execute(stmt).scalars())


# ---------------------------------------------------------------------------------------------
# Booking
# ---------------------------------------------------------------------------------------------


def max_upcoming_bookings() -> int:
    return int(
        current_app.config.get("MAX_UPCOMING_DUTY_BOOKINGS", DEFAULT_MAX_UPCOMING_DUTY_BOOKINGS)
    )


def is_slot_conflict(exc: IntegrityError) -> bool:
    """True when the violation is the one-active-booking-per-slot index (either backend)."""
    text = str(getattr(exc, "orig", exc))
    return ACTIVE_SLOT_INDEX in text or "consultation.slot_id" in text


def _is_sqlite() -> bool:
    return db.session.get_bind().dialect.name == "sqlite"


def _take_write_locks(patient: Patient, slot_pid: uuid.UUID) -> None:
    """Serialise the bookers of this slot and of this patient (see the module docstring)."""
    if _is_sqlite():
        # A write first: the transaction takes SQLite's write lock now, not at the INSERT.
        db.session.execute(
            update(Slot)
            .where(Slot.public_id == slot_pid)
            .values(blocked=Slot.blocked)
            .execution_options(synchronize_session=False)
        )
        return
    db.session.execute(
        select(Patient.id).where(Patient.id == patient.id).with_for_update(key_share=True)
    )


def _load_slot(slot_public_id: str | uuid.UUID, *, lock: bool) -> Slot:
    pid = parse_public_id(slot_public_id)
    if pid is None:
        raise SlotNotFound(_l("This time slot does not exist."))
    stmt = (
        select(Slot)
        .join(Slot.doctor)
        # The doctor's user is notified of the booking: loaded here, not by a lazy load later.
        .options(contains_eager(Slot.doctor).joinedload(Doctor.user))
        .where(Slot.public_id == pid)
    )
    if lock:
        # The check for an active booking is a separate statement after this one on purpose:
        # a subquery here would read the snapshot taken before waiting for the lock.
        # OF slot: the doctor's row stays free, so bookings of other slots do not queue here.
        # populate_existing: the locked row's values replace any older copy in the session.
        stmt = stmt.with_for_update(of=Slot, key_share=True)
        stmt = stmt.execution_options(populate_existing=True)
    slot = db.session.execute(stmt).unique().scalar_one_or_none()
    if slot is None:
        raise SlotNotFound(_l("This time slot does not exist."))
    return slot


def _check_slot(slot: Slot, now: datetime) -> None:
    doctor = slot.doctor
    if not (doctor.active and doctor.is_duty):
        raise BookingError(_l("This doctor is not taking bookings now."), slot_gone=True)
    if slot.starts_at <= now:
        raise BookingError(_l("This time has already passed. Choose another one."), slot_gone=True)
    if slot.starts_at >= now + timedelta(days=BOOKING_WINDOW_DAYS):
        raise BookingError(
            _l("Booking is open for the next %(n)d days only.", n=BOOKING_WINDOW_DAYS),
            slot_gone=True,
        )
    if slot.blocked:
        raise BookingError(_l("This time is not available for booking."), slot_gone=True)
    if _slot_is_held(slot):
        raise BookingError(SLOT_TAKEN, slot_gone=True)


def _slot_is_held(slot: Slot) -> bool:
    stmt = select(Consultation.id).where(
        Consultation.slot_id == slot.id, Consultation.status.in_(_HOLDING)
    )
    return db.session.execute(stmt.limit(1)).first() is not None


def upcoming_duty_bookings(patient: Patient, now: datetime) -> int:
    stmt = select(func.count(Consultation.id)).where(
        Consultation.patient_id == patient.id,
        Consultation.kind == ConsultationKind.DUTY,
        Consultation.status == ConsultationStatus.SCHEDULED,
        Consultation.scheduled_at > now,
    )
    return int(db.session.execute(stmt).scalar() or 0)


def _own_documents(patient: Patient, document_ids: Iterable[str | uuid.UUID]) -> list:
    wanted: set[uuid.UUID] = set()
    for raw in document_ids or ():
        if raw in ("", None):
            continue
        pid = parse_public_id(raw)
        if pid is None:
            raise BookingError(_l("Only your own documents can be attached."))
        wanted.add(pid)
    if not wanted:
        return []
    if len(wanted) > MAX_DOCUMENTS:
        raise BookingError(_l("At most %(n)d documents can be attached.", n=MAX_DOCUMENTS))
    docs = list(
        db.session.execute(
            select(MedicalDocument).where(
                MedicalDocument.public_id.in_(wanted), MedicalDocument.patient_id == patient.id
            )
        ).scalars()
    )
    if len(docs) != len(wanted):
        raise BookingError(_l("Only your own documents can be attached."))
    return docs


def _patient_of(actor: Patient | OblakoUser) -> Patient:
    if isinstance(actor, Patient):
        return actor
    patient = db.session.execute(
        select(Patient).where(Patient.user_id == actor.id)
    ).scalar_one_or_none()
    if patient is None:
        raise NotFound(_l("Booking is for patients."))
    return patient


def book_slot(
    patient: Patient | OblakoUser,
    slot_public_id: str | uuid.UUID,
    *,
    question: str = "",
    document_ids: Sequence[str | uuid.UUID] = (),
    mode: str = ConsultationMode.VIDEO,
    now: datetime | None = None,
) -> Consultation:
    """Book a free slot for the patient: a `duty` consultation in status `scheduled`.

    Takes the patient (or the patient's user). Raises SlotNotFound for an unknown slot and
    BookingError for every refusal. Flushes, never commits (the caller's unit of work does).
    """
    now = now or utcnow()
    patient = _patient_of(patient)
    question = (question or "").strip()
    if len(question) > QUESTION_MAX:
        raise BookingError(
            _l("The question is too long: at most %(n)d characters.", n=QUESTION_MAX)
        )
    if mode not in MODE_LABELS:
        raise BookingError(_l("Choose how to connect."))
    slot_pid = parse_public_id(slot_public_id)
    if slot_pid is None:
        raise SlotNotFound(_l("This time slot does not exist."))

    _take_write_locks(patient, slot_pid)
    slot = _load_slot(slot_pid, lock=True)
    _check_slot(slot, now)
    limit = max_upcoming_bookings()
    if upcoming_duty_bookings(patient, now) >= limit:
        raise BookingError(
            _l(
                "You already have the most upcoming duty doctor bookings allowed (%(n)d). "
                "Cancel one of them to book another time.",
                n=limit,
            )
        )
    documents = _own_documents(patient, document_ids)

    consultation = Consultation(
        public_id=uuid.uuid4(),
        kind=ConsultationKind.DUTY,
        status=ConsultationStatus.SCHEDULED,
        patient_id=patient.id,
        doctor_id=slot.doctor_id,
        slot_id=slot.id,
        scheduled_at=slot.starts_at,
        duration_minutes=max(1, int((slot.ends_at - slot.starts_at).total_seconds() // 60)),
        question=question,
        mode=mode,
        submitted_at=now,
        scheduled_set_at=now,
    )
    consultation.documents = documents
    try:
        # The savepoint keeps the session usable when the unique index refuses the insert.
        with db.session.begin_nested():
            db.session.add(consultation)
            db.session.flush()
    except IntegrityError as exc:
        if not is_slot_conflict(exc):
            raise
        raise BookingError(SLOT_TAKEN, slot_gone=True) from None

    doctor = slot.doctor
    when = slot.starts_at.astimezone(_zone(doctor.timezone)).strftime("%d.%m.%Y %H:%M")
    notify(
        doctor.user,
        "consultation_booked",
        _l(
            "New booking with you as the duty doctor: %(when)s (%(tz)s).",
            when=when,
            tz=doctor.timezone,
        ),
        link=f"/care/consultations/{consultation.public_id}",
        dedupe_key=f"booking:{consultation.public_id}:doctor",
    )
    audit(
        "consultation.book",
        actor=patient.user,
        obj_type="consultation",
        obj_id=consultation.public_id,
        patient_id=patient.id,
    )
    return consultation
