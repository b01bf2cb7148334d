"""Pathway 2: booking a duty doctor by schedule («у дежурного врача (по расписанию)»).

A patient picks a free slot of an active duty doctor in the next BOOKING_WINDOW_DAYS days; the
booking is a `duty` consultation created directly in status `scheduled`.

A slot is booked by at most one active consultation, and the database guarantees it (DESIGN §2):
the partial unique index `uq_consultation_active_slot` (slot_id where the status holds the slot)
refuses a second active consultation of a slot on every backend, whatever the Python code did.
The consultation is inserted with `INSERT … ON CONFLICT (slot_id) WHERE <the index's predicate>
DO NOTHING RETURNING …`: the index itself decides, and a refused insert returns no row instead of
raising, so the loser gets a clean answer and the caller's session and transaction stay usable
(no SAVEPOINT needed). On top of it, book_slot() serialises the bookers of one slot and of one
patient:

- PostgreSQL: the patient's row and the slot's row are locked (`SELECT … FOR NO KEY UPDATE`;
  NO KEY so that rows referencing them, such as this consultation, can still be inserted).
  A second booker of the slot waits on the slot lock, then its insert meets the committed
  booking in the index and is refused. The patient's lock makes the limit of upcoming bookings
  exact under concurrent requests: the count runs in a statement that starts after that lock
  is held, so it sees every booking of the patient's earlier lock holders.
- SQLite: writers are serialised by the database-wide write lock; the first statement of the
  locked part is a (no-op) write, so the transaction holds that lock from then on and every read
  after it sees the last committed booking.

Cost under a race (bench/bench_booking_race.py). Before any lock, one unlocked Core statement
looks at the slot: when it is already plainly not bookable (taken by a committed booking, past,
blocked, doctor off duty) the refusal is given at once, without queueing on the slot's lock.
A slot that looks free still goes the locked way above, which alone decides. A booking is then
six statements and the commit: the look, the patient's lock, the slot's lock (with the doctor,
the doctor's user and the patient's count of upcoming bookings), the insert on conflict, and one
flush of the doctor's notification, its outbox row and the audit event. The locking and insert
statements are built once and run with parameters, and the patient's lock reads two columns,
not the patient and user objects. Every booker also re-reads the free slots after a refusal
(as the page does): free_slots() is one Core query of the columns the page shows, no ORM
objects (it was three full objects a row and most of a race's cost).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from flask import current_app
from flask_babel import lazy_gettext as _l
from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import aliased, contains_eager
from sqlalchemy.orm.attributes import set_committed_value

from app.audit import audit
from app.errors import DomainError, NotFound
from app.extensions import db
from app.notifications import LOOKUP, notify
from models import (
    SLOT_HOLDING_STATUSES,
    Consultation,
    ConsultationKind,
    ConsultationMode,
    ConsultationStatus,
    Doctor,
    DutyShift,
    MedicalDocument,
    OblakoUser,
    Patient,
    Slot,
    consultation_document,
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


@dataclass(frozen=True)
class DoctorCard:
    """What the booking page shows of a duty doctor (no ORM object: see free_slots())."""

    id: int
    surname: str
    name: str
    patronymic: str
    specialty: str

    @property
    def full_name(self) -> str:
        return " ".join(p for p in (self.surname, self.name, self.patronymic) if p)


@dataclass
class DoctorSlots:
    doctor: DoctorCard
    topics: list[str] = field(default_factory=list)
    days: list[DaySlots] = field(default_factory=list)

    @property
    def count(self) -> int:
        return sum(len(d.slots) for d in self.days)


class FreeSlot(NamedTuple):
    """A bookable slot as the page and a booker need it: plain columns, no ORM objects."""

    public_id: uuid.UUID
    starts_at: datetime
    ends_at: datetime
    doctor_id: int
    surname: str
    name: str
    patronymic: str
    specialty: str
    topics: str | None


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


def _free_slots_statement():
    return (
        select(
            Slot.public_id,
            Slot.starts_at,
            Slot.ends_at,
            Doctor.id,
            Doctor.surname,
            Doctor.name,
            Doctor.patronymic,
            Doctor.specialty,
            DutyShift.topics,
        )
        .select_from(Slot)
        .join(Doctor, Doctor.id == Slot.doctor_id)
        .join(DutyShift, DutyShift.id == Slot.shift_id)
        .where(
            Doctor.active.is_(True),
            Doctor.is_duty.is_(True),
            Slot.blocked.is_(False),
            Slot.starts_at > bindparam("now"),
            Slot.starts_at < bindparam("until"),
            ~slot_is_held(),
        )
        .order_by(Doctor.surname, Doctor.name, Doctor.id, Slot.starts_at)
    )


_FREE_SLOTS = _free_slots_statement()  # built once, like _PEEK below


def free_slots(*, now: datetime | None = None, days: int = BOOKING_WINDOW_DAYS) -> list[FreeSlot]:
    """Bookable slots of active duty doctors: one Core query (anti-join), only the columns the
    booking page and a booker use. Every booker of a race reads it after each refusal, so
    three full ORM objects a row (slot, doctor, shift) were most of a race's cost."""
    now = now or utcnow()
    result = db.session.connection().execute(
        _FREE_SLOTS, {"now": now, "until": now + timedelta(days=days)}
    )
    return [FreeSlot._make(row) for row in result]


def slot_choice(slot: Slot | FreeSlot, timezone: str | None) -> SlotChoice:
    zone = _zone(timezone)
    return SlotChoice(
        slot.public_id, slot.starts_at.astimezone(zone), slot.ends_at.astimezone(zone)
    )


def free_slots_by_doctor(timezone: str | None, *, now: datetime | None = None) -> list[DoctorSlots]:
    """Free slots grouped by doctor and by the patient's local day, times in that zone."""
    grouped: list[DoctorSlots] = []
    for slot in free_slots(now=now):
        if not grouped or grouped[-1].doctor.id != slot.doctor_id:
            grouped.append(
                DoctorSlots(
                    doctor=DoctorCard(
                        slot.doctor_id,
                        slot.surname,
                        slot.name,
                        slot.patronymic or "",
                        slot.specialty or "",
                    )
                )
            )
        entry = grouped[-1]
        topics = (slot.topics or "").strip()
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


def _primary_key(obj) -> int:
    """The row's id without a refresh of an expired instance (one statement fewer)."""
    identity = sa_inspect(obj).identity
    return identity[0] if identity else obj.id


def _take_write_locks(patient: Patient, slot_pid: uuid.UUID) -> int | None:
    """Serialise the bookers of this slot and of this patient (see the module docstring).

    Returns the patient's user id (the audit's actor), read in the locking statement: two plain
    columns, not the patient and user objects, which nothing else in a booking needs.
    """
    if _is_sqlite():
        # A write first: the transaction takes SQLite's write lock now, not at the INSERT.
        db.session.execute(
            update(Slot)
            .where(Slot.public_id == slot_pid)
            .values(blocked=Slot.blocked)
            .execution_options(synchronize_session=False)
        )
    # SQLite renders no FOR UPDATE: there the write lock above already serialises.
    return db.session.connection().execute(_LOCK_PATIENT, {"pid": _primary_key(patient)}).scalar()


def _slot_statement(pid, *, lock: bool, columns=()):
    """`pid`: the slot's public id, or a bindparam for a statement built once."""
    stmt = (
        select(Slot, *columns)
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
    return stmt


def _load_slot(slot_public_id: str | uuid.UUID, *, lock: bool) -> Slot:
    pid = parse_public_id(slot_public_id)
    if pid is None:
        raise SlotNotFound(_l("This time slot does not exist."))
    slot = db.session.execute(_slot_statement(pid, lock=lock)).unique().scalar_one_or_none()
    if slot is None:
        raise SlotNotFound(_l("This time slot does not exist."))
    return slot


def _lock_slot_statement(*, lock: bool):
    upcoming = (
        select(func.count(Consultation.id))
        .where(_upcoming_duty(bindparam("patient_id"), bindparam("now")))
        .scalar_subquery()
    )
    return _slot_statement(bindparam("slot_pid"), lock=lock, columns=[upcoming])


# Built once each, at first use (constructing one cost as much as running it, in the locked
# part of a booking).
_LOCK_SLOT: dict[bool, Any] = {}


def _lock_slot(
    slot_pid: uuid.UUID, patient: Patient, now: datetime, *, lock: bool = True
) -> tuple[Slot, int]:
    """The slot, locked (PostgreSQL), and the patient's upcoming duty bookings: one statement.

    The count is exact because the patient's lock is already held when this statement starts
    (see the module docstring); it is not a check of the slot, which the insert leaves to the
    unique index.
    """
    stmt = _LOCK_SLOT.get(lock)
    if stmt is None:
        stmt = _LOCK_SLOT[lock] = _lock_slot_statement(lock=lock)
    row = (
        db.session.execute(
            stmt, {"slot_pid": slot_pid, "patient_id": _primary_key(patient), "now": now}
        )
        .unique()
        .one_or_none()
    )
    if row is None:
        raise SlotNotFound(_l("This time slot does not exist."))
    return row[0], int(row[1] or 0)


def _slot_refusal(
    *, active: bool, is_duty: bool, starts_at: datetime, blocked: bool, now: datetime
) -> BookingError | None:
    """Why the slot cannot be booked, whoever holds it (None: it can, if nobody does)."""
    if not (active and is_duty):
        return BookingError(_l("This doctor is not taking bookings now."), slot_gone=True)
    if starts_at <= now:
        return BookingError(_l("This time has already passed. Choose another one."), slot_gone=True)
    if starts_at >= now + timedelta(days=BOOKING_WINDOW_DAYS):
        return BookingError(
            _l("Booking is open for the next %(n)d days only.", n=BOOKING_WINDOW_DAYS),
            slot_gone=True,
        )
    if blocked:
        return BookingError(_l("This time is not available for booking."), slot_gone=True)
    return None


def _check_slot(slot: Slot, now: datetime, *, held: bool = True) -> None:
    """Refuse a slot that cannot be booked; `held=False`: leave "taken" to the unique index."""
    doctor = slot.doctor
    refusal = _slot_refusal(
        active=doctor.active,
        is_duty=doctor.is_duty,
        starts_at=slot.starts_at,
        blocked=slot.blocked,
        now=now,
    )
    if refusal is not None:
        raise refusal
    if held and _slot_is_held(slot):
        raise BookingError(SLOT_TAKEN, slot_gone=True)


@dataclass(frozen=True)
class SlotPeek:
    """What the unlocked look at a slot found, for the booking that follows it."""

    doctor_id: int
    # The Patient row of the doctor's own user, if any: notify() reads its opt-ins from it.
    doctor_patient_id: int | None


def _peek_statement():
    doctor_patient = aliased(Patient)
    return (
        select(
            Doctor.id,
            Doctor.active,
            Doctor.is_duty,
            Slot.starts_at,
            Slot.blocked,
            slot_is_held().label("held"),
            doctor_patient.id,
        )
        .select_from(Slot)
        .join(Doctor, Doctor.id == Slot.doctor_id)
        .outerjoin(doctor_patient, doctor_patient.user_id == Doctor.user_id)
        .where(Slot.public_id == bindparam("slot_pid"))
    )


_PEEK = _peek_statement()  # built once: constructing it costs more than running it
_LOCK_PATIENT = (
    select(Patient.user_id)
    .where(Patient.id == bindparam("pid"))
    .with_for_update(of=Patient, key_share=True)
)


def _peek_slot(slot_pid: uuid.UUID, now: datetime) -> SlotPeek | None:
    """Refuse at once what is plainly not bookable: one Core statement, no lock, no ORM objects.

    Only its refusals are final (they describe committed rows); a slot that looks free is then
    booked the locked way, which alone decides. Returns None when it has nothing to tell.
    """
    row = db.session.connection().execute(_PEEK, {"slot_pid": slot_pid}).first()
    if row is None:
        raise SlotNotFound(_l("This time slot does not exist."))
    doctor_id, active, is_duty, starts_at, blocked, held, doctor_patient_id = row
    refusal = _slot_refusal(
        active=active, is_duty=is_duty, starts_at=starts_at, blocked=blocked, now=now
    )
    if refusal is not None:
        raise refusal
    if held:
        raise BookingError(SLOT_TAKEN, slot_gone=True)
    return SlotPeek(doctor_id, doctor_patient_id)


def _slot_is_held(slot: Slot) -> bool:
    stmt = select(Consultation.id).where(
        Consultation.slot_id == slot.id, Consultation.status.in_(_HOLDING)
    )
    return db.session.execute(stmt.limit(1)).first() is not None


def _upcoming_duty(patient_id, now):
    """Values or bindparams."""
    return (
        (Consultation.patient_id == patient_id)
        & (Consultation.kind == ConsultationKind.DUTY)
        & (Consultation.status == ConsultationStatus.SCHEDULED)
        & (Consultation.scheduled_at > now)
    )


def upcoming_duty_bookings(patient: Patient, now: datetime) -> int:
    stmt = select(func.count(Consultation.id)).where(_upcoming_duty(patient.id, now))
    return int(db.session.execute(stmt).scalar() or 0)


_INSERTS: dict[str, Any] = {}


def _insert_statement(dialect: str):
    """INSERT … ON CONFLICT (slot_id) WHERE <the index's predicate> DO NOTHING RETURNING …,
    built once per dialect (the values are the execution's parameters)."""
    stmt = _INSERTS.get(dialect)
    if stmt is None:
        dialect_insert = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}.get(dialect)
        if dialect_insert is None:
            raise RuntimeError(f"booking needs PostgreSQL or SQLite, not {dialect}")
        index = next(i for i in Consultation.__table__.indexes if i.name == ACTIVE_SLOT_INDEX)
        stmt = _INSERTS[dialect] = (
            dialect_insert(Consultation)
            .on_conflict_do_nothing(
                index_elements=[Consultation.slot_id],
                index_where=index.dialect_options[dialect]["where"],
            )
            .returning(Consultation)
        )
    return stmt


def _insert_unless_slot_held(values: dict) -> Consultation | None:
    """INSERT the consultation unless the unique index says an active one holds its slot.

    `ON CONFLICT (slot_id) WHERE <the index's own predicate> DO NOTHING`: the index is the
    arbiter (without it the statement fails), and a refusal is no row rather than an error, so
    the transaction stays usable. Returns the persistent Consultation, or None when refused.
    """
    stmt = _insert_statement(db.session.get_bind().dialect.name)
    return db.session.scalars(stmt, values).first()


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

    peek = _peek_slot(slot_pid, now)  # may refuse here, before any lock
    documents = _own_documents(patient, document_ids)

    patient_id = _primary_key(patient)  # an expired instance is not refreshed for its id
    actor_id = _take_write_locks(patient, slot_pid)
    slot, upcoming = _lock_slot(slot_pid, patient, now)
    _check_slot(slot, now, held=False)  # "taken" is the unique index's answer, below
    limit = max_upcoming_bookings()
    if upcoming >= limit:
        raise BookingError(
            _l(
                "You already have the most upcoming duty doctor bookings allowed (%(n)d). "
                "Cancel one of them to book another time.",
                n=limit,
            )
        )

    consultation = _insert_unless_slot_held(
        {
            "public_id": uuid.uuid4(),
            "kind": ConsultationKind.DUTY,
            "status": ConsultationStatus.SCHEDULED,
            "patient_id": patient_id,
            "doctor_id": slot.doctor_id,
            "slot_id": slot.id,
            "scheduled_at": slot.starts_at,
            "duration_minutes": max(1, int((slot.ends_at - slot.starts_at).total_seconds() // 60)),
            "question": question,
            "mode": mode,
            "submitted_at": now,
            "scheduled_set_at": now,
        }
    )
    if consultation is None:
        raise BookingError(SLOT_TAKEN, slot_gone=True)
    if documents:
        db.session.execute(
            insert(consultation_document),
            [{"consultation_id": consultation.id, "document_id": d.id} for d in documents],
        )
    set_committed_value(consultation, "documents", documents)

    doctor = slot.doctor
    doctor_patient: Patient | object | None = LOOKUP
    if peek is not None and peek.doctor_id == doctor.id:
        doctor_patient = (
            None
            if peek.doctor_patient_id is None
            else db.session.get(Patient, peek.doctor_patient_id)
        )
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
        new_dedupe_key=True,  # the consultation's public_id is new in this transaction
        patient=doctor_patient,
    )
    audit(
        "consultation.book",
        actor_id=actor_id if actor_id is not None else patient.user_id,
        obj_type="consultation",
        obj_id=consultation.public_id,
        patient_id=patient_id,
    )
    db.session.flush()  # the notification, its outbox rows and the audit event: one flush
    return consultation
