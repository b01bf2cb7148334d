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

- PostgreSQL: the patient's row and the slot's row are locked in one statement
  (`SELECT … FOR NO KEY UPDATE OF patient, slot`; NO KEY so that rows referencing them, such
  as this consultation, can still be inserted). A second booker of the slot waits on the slot
  lock, then its insert meets the committed booking in the index and is refused. The patient's
  lock makes the limit of upcoming bookings exact under concurrent requests: the count runs in
  the next statement, which starts after that lock is held, so it sees every booking of the
  patient's earlier lock holders.
- SQLite: writers are serialised by the database-wide write lock; the first statement of the
  locked part is a (no-op) write, so the transaction holds that lock from then on and every read
  after it sees the last committed booking.

Cost under a race (bench/bench_booking_race.py). Before any lock, one unlocked Core statement
looks at the slot: when it is already plainly not bookable (taken by a committed booking, past,
blocked, doctor off duty) the refusal is given at once, without queueing on the slot's lock.
A slot that looks free still goes the locked way above, which alone decides. On PostgreSQL a
booking is then three statements and the commit, all Core, no unit-of-work flush: the look;
the locks (reading the slot, its doctor and how to reach the doctor); and one statement that
counts the patient's upcoming bookings and, below the limit, inserts the consultation on
conflict do nothing and — only if that returned a row — the doctor's notification, its outbox
rows and the audit event (see "The booking's writes"). The rows are built by the same
functions notify() and audit() use (notification_values(), outbox_values(), audit_values()).
Every booker also re-reads the free slots after a refusal (as the page does): free_slots() is
one Core query of the columns the page shows, no ORM objects.
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
from sqlalchemy import (
    Integer,
    Table,
    bindparam,
    column,
    func,
    insert,
    literal_column,
    select,
    text,
    update,
)
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import aliased, contains_eager, make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value

from app.audit import audit_values
from app.errors import DomainError, NotFound
from app.extensions import db
from app.notifications import notification_values, outbox_values
from models import (
    SLOT_HOLDING_STATUSES,
    AuditEvent,
    Consultation,
    ConsultationKind,
    ConsultationMode,
    ConsultationStatus,
    Doctor,
    DutyShift,
    MedicalDocument,
    Notification,
    OblakoUser,
    OutboundMessage,
    Patient,
    Slot,
    allocate_consultation_numbers,
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
# "The status holds the slot" as literal constants, not an expanding IN parameter: nothing to
# render at each execution (that was a tenth of a refusal's CPU), and PostgreSQL's planner sees
# the partial unique index's own predicate. The values are the enum's, never user input.
_STATUS_HOLDS_SLOT = Consultation.status.in_([literal_column(f"'{s}'") for s in _HOLDING])


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
        select(Consultation.id).where(Consultation.slot_id == Slot.id, _STATUS_HOLDS_SLOT).exists()
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
    three full ORM objects a row (slot, doctor, shift) were most of a race's cost; all()
    fetches the rows at once (iterating the result fetches them one by one)."""
    now = now or utcnow()
    rows = (
        db.session.connection()
        .execute(_FREE_SLOTS, {"now": now, "until": now + timedelta(days=days)})
        .all()
    )
    return [FreeSlot._make(row) for row in rows]


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


def _peek_statement():
    return (
        select(
            Doctor.active,
            Doctor.is_duty,
            Slot.starts_at,
            Slot.blocked,
            slot_is_held().label("held"),
        )
        .select_from(Slot)
        .join(Doctor, Doctor.id == Slot.doctor_id)
        .where(Slot.public_id == bindparam("slot_pid"))
    )


_PEEK = _peek_statement()  # built once: constructing it costs more than running it


def _peek_slot(slot_pid: uuid.UUID, now: datetime) -> None:
    """Refuse at once what is plainly not bookable: one Core statement, no lock, no ORM objects.

    Only its refusals are final (they describe committed rows); a slot that looks free is then
    booked the locked way, which alone decides.
    """
    row = db.session.connection().execute(_PEEK, {"slot_pid": slot_pid}).first()
    if row is None:
        raise SlotNotFound(_l("This time slot does not exist."))
    active, is_duty, starts_at, blocked, held = row
    refusal = _slot_refusal(
        active=active, is_duty=is_duty, starts_at=starts_at, blocked=blocked, now=now
    )
    if refusal is not None:
        raise refusal
    if held:
        raise BookingError(SLOT_TAKEN, slot_gone=True)


class LockedSlot(NamedTuple):
    """What the locking statement reads: the booker's user, the slot, its doctor and how to
    reach the doctor (the doctor's own Patient row, if any, holds the opt-ins)."""

    actor_id: int
    slot_id: int
    doctor_id: int
    starts_at: datetime
    ends_at: datetime
    blocked: bool
    doctor_active: bool
    is_duty: bool
    doctor_timezone: str
    doctor_user_id: int
    doctor_email: str | None
    doctor_patient_id: int | None
    notify_sms: bool | None
    notify_email: bool | None
    phone: str | None
    email: str | None


def _lock_statement(*, lock: bool):
    doctor_patient = aliased(Patient, name="doctor_patient")
    stmt = (
        select(
            Patient.user_id,
            Slot.id,
            Slot.doctor_id,
            Slot.starts_at,
            Slot.ends_at,
            Slot.blocked,
            Doctor.active,
            Doctor.is_duty,
            Doctor.timezone,
            Doctor.user_id,
            OblakoUser.email,
            doctor_patient.id,
            doctor_patient.notify_sms,
            doctor_patient.notify_email,
            doctor_patient.phone,
            doctor_patient.email,
        )
        .select_from(Patient)
        .join(Slot, Slot.public_id == bindparam("slot_pid"))
        .join(Doctor, Doctor.id == Slot.doctor_id)
        .join(OblakoUser, OblakoUser.id == Doctor.user_id)
        .outerjoin(doctor_patient, doctor_patient.user_id == Doctor.user_id)
        .where(Patient.id == bindparam("patient_id"))
    )
    if lock:
        # OF patient, slot: the doctor's row stays free, so bookings of other slots do not
        # queue here; NO KEY so that rows referencing them (this consultation) can be inserted.
        # Nothing here reads what the lock protects from a stale snapshot: the count of the
        # patient's bookings and the arbiter of the slot are in the next statement.
        stmt = stmt.with_for_update(of=[Patient, Slot], key_share=True)
    return stmt


_LOCKS = {True: _lock_statement(lock=True), False: _lock_statement(lock=False)}


def _lock_booking(patient_id: int, slot_pid: uuid.UUID, *, lock: bool = True) -> LockedSlot:
    """Serialise the bookers of this slot and of this patient (see the module docstring) and
    read what the booking needs: one Core statement on PostgreSQL."""
    conn = db.session.connection()
    if conn.dialect.name == "sqlite":
        # A write first: the transaction takes SQLite's write lock now, not at the INSERT.
        # (SQLite renders no FOR UPDATE: this lock alone serialises there.)
        conn.execute(_SQLITE_WRITE_LOCK, {"slot_pid": slot_pid})
    row = conn.execute(_LOCKS[lock], {"slot_pid": slot_pid, "patient_id": patient_id}).first()
    if row is None:
        raise SlotNotFound(_l("This time slot does not exist."))
    return LockedSlot._make(row)


_SQLITE_WRITE_LOCK = (
    update(Slot.__table__)
    .where(Slot.__table__.c.public_id == bindparam("slot_pid"))
    .values(blocked=Slot.__table__.c.blocked)
)


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


def _slot_is_held(slot: Slot) -> bool:
    stmt = select(Consultation.id).where(Consultation.slot_id == slot.id, _STATUS_HOLDS_SLOT)
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


# ---------------------------------------------------------------------------------------------
# The booking's writes
# ---------------------------------------------------------------------------------------------
#
# The consultation, the doctor's notification, its outbox messages and the audit event are
# plain rows here (Core, no unit-of-work flush): on PostgreSQL all of them and the count of the
# patient's upcoming bookings are ONE statement, built once per shape from the tables:
#
#   WITH upcoming AS (SELECT count(*) … the patient's upcoming duty bookings),
#        booked AS (INSERT INTO consultation … SELECT … FROM upcoming WHERE n < :limit
#                   ON CONFLICT (slot_id) WHERE <the index's predicate> DO NOTHING RETURNING id),
#        r1 AS (INSERT INTO notification … SELECT … FROM booked), … (outbox, audit)
#   SELECT upcoming.n, booked.id FROM upcoming LEFT JOIN booked ON true
#
# The dependent rows are written only when `booked` returned a row, in the same transaction.
# The count runs in a statement that starts after the patient's lock is held, so it is exact
# (module docstring). SQLite runs the same steps as separate statements (in-process, no round
# trips to save, and it has no INSERT inside WITH).


def _complete(table: Table, values: dict[str, Any]) -> dict[str, Any]:
    """`values` plus the columns' own Python defaults (what a Core insert would add), for the
    INSERT … SELECT of the PostgreSQL statement, which applies none."""
    out = dict(values)
    for col in table.columns:
        if col.key in out or col.primary_key or col.default is None:
            continue
        if col.default.is_scalar:
            out[col.key] = col.default.arg
        elif col.default.is_callable:
            out[col.key] = col.default.arg(None)
    return out


def _insert_select(table: Table, name: str, keys: Sequence[str], source: str, where: str = ""):
    """`INSERT INTO table (keys) SELECT CAST(:name_key AS type) … FROM source`, its bind
    parameters typed by the columns (the casts: a parameter in a SELECT list has no type)."""
    dialect = postgresql.dialect()
    casts, binds = [], []
    for key in keys:
        col = table.c[key]
        casts.append(f"CAST(:{name}_{key} AS {col.type.compile(dialect=dialect)})")
        binds.append(bindparam(f"{name}_{key}", type_=col.type))
    # Names from the tables' metadata, values only as bound parameters: nothing user-given.
    sql = (
        f"INSERT INTO {table.name} ({', '.join(table.c[k].name for k in keys)}) "  # noqa: S608
        f"SELECT {', '.join(casts)} FROM {source}{where}"
    )
    return sql, binds


_CONSULTATION = Consultation.__table__
_BOOKING_STATEMENTS: dict[tuple, Any] = {}


def _booking_statement(consultation_keys: tuple[str, ...], rows: tuple[tuple[Table, tuple], ...]):
    """The PostgreSQL statement above for this shape (built once per shape)."""
    shape = (consultation_keys, rows)
    stmt = _BOOKING_STATEMENTS.get(shape)
    if stmt is not None:
        return stmt
    index = next(i for i in _CONSULTATION.indexes if i.name == ACTIVE_SLOT_INDEX)
    predicate = index.dialect_options["postgresql"]["where"]
    c = _CONSULTATION.c
    upcoming = (  # the criteria of _upcoming_duty(); metadata names, bound values
        f"SELECT count({c.id.name}) AS n FROM {_CONSULTATION.name} "  # noqa: S608
        f"WHERE {c.patient_id.name} = :q_patient_id AND {c.kind.name} = :q_kind "
        f"AND {c.status.name} = :q_status AND {c.scheduled_at.name} > :q_now"
    )
    insert_sql, binds = _insert_select(
        _CONSULTATION, "c", consultation_keys, "upcoming", " WHERE upcoming.n < :q_limit"
    )
    ctes = [
        f"upcoming AS ({upcoming})",
        f"booked AS ({insert_sql} ON CONFLICT ({c.slot_id.name}) WHERE {predicate} "
        f"DO NOTHING RETURNING {c.id.name})",
    ]
    for n, (table, keys) in enumerate(rows):
        sql, row_binds = _insert_select(table, f"r{n}", keys, "booked")
        ctes.append(f"r{n} AS ({sql})")
        binds += row_binds
    binds += [
        bindparam("q_patient_id", type_=c.patient_id.type),
        bindparam("q_kind", type_=c.kind.type),
        bindparam("q_status", type_=c.status.type),
        bindparam("q_now", type_=c.scheduled_at.type),
        bindparam("q_limit", type_=Integer()),
    ]
    sql = (
        "WITH " + ",\n".join(ctes) + "\nSELECT upcoming.n, booked.id FROM upcoming "
        "LEFT OUTER JOIN booked ON true"
    )
    stmt = _BOOKING_STATEMENTS[shape] = (
        text(sql).bindparams(*binds).columns(column("n", Integer), column("id", Integer))
    )
    return stmt


_SQLITE_INSERT = (
    sqlite.insert(_CONSULTATION)
    .on_conflict_do_nothing(
        index_elements=[_CONSULTATION.c.slot_id],
        index_where=next(
            i for i in _CONSULTATION.indexes if i.name == ACTIVE_SLOT_INDEX
        ).dialect_options["sqlite"]["where"],
    )
    .returning(_CONSULTATION.c.id)
)
_UPCOMING = select(func.count(Consultation.id)).where(
    _upcoming_duty(bindparam("patient_id"), bindparam("now"))
)


def _write_booking(
    consultation: dict[str, Any], rows: list[tuple[Table, dict[str, Any]]], limit: int, now
) -> tuple[int, int | None]:
    """Count the patient's upcoming duty bookings and, below `limit`, insert the consultation
    unless the unique index says an active one holds its slot, then (only then) the `rows`.

    Returns (upcoming bookings before this one, the new consultation's id or None when the
    index refused it). `ON CONFLICT (slot_id) WHERE <the index's own predicate> DO NOTHING`:
    the index is the arbiter (without it the statement fails), and a refusal is no row rather
    than an error, so the transaction stays usable.
    """
    conn = db.session.connection()
    patient_id = consultation["patient_id"]
    if conn.dialect.name == "sqlite":
        upcoming = conn.execute(_UPCOMING, {"patient_id": patient_id, "now": now}).scalar()
        if upcoming >= limit:
            return upcoming, None
        new_id = conn.execute(_SQLITE_INSERT, consultation).scalar()
        if new_id is not None:
            for table, values in rows:
                conn.execute(insert(table), values)
        return upcoming, new_id
    if conn.dialect.name != "postgresql":
        raise RuntimeError(f"booking needs PostgreSQL or SQLite, not {conn.dialect.name}")
    consultation = _complete(_CONSULTATION, consultation)
    completed = [(table, _complete(table, values)) for table, values in rows]
    keys = tuple(consultation)
    stmt = _booking_statement(keys, tuple((t, tuple(v)) for t, v in completed))
    params: dict[str, Any] = {f"c_{k}": v for k, v in consultation.items()}
    for n, (_, values) in enumerate(completed):
        params.update({f"r{n}_{k}": v for k, v in values.items()})
    params.update(
        q_patient_id=patient_id,
        q_kind=ConsultationKind.DUTY,
        q_status=ConsultationStatus.SCHEDULED,
        q_now=now,
        q_limit=limit,
    )
    upcoming, new_id = conn.execute(stmt, params).one()
    return upcoming, new_id


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
    BookingError for every refusal. Writes in the caller's transaction, never commits (the
    caller's unit of work does). Returns the consultation, persistent in the session.
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

    _peek_slot(slot_pid, now)  # may refuse here, before any lock
    documents = _own_documents(patient, document_ids)

    patient_id = _primary_key(patient)  # an expired instance is not refreshed for its id
    locked = _lock_booking(patient_id, slot_pid)
    refusal = _slot_refusal(  # "taken" is the unique index's answer, below
        active=locked.doctor_active,
        is_duty=locked.is_duty,
        starts_at=locked.starts_at,
        blocked=locked.blocked,
        now=now,
    )
    if refusal is not None:
        raise refusal

    public_id = uuid.uuid4()
    values = {
        "public_id": public_id,
        # Explicit: the PostgreSQL statement is text, which applies no column default. Taken
        # after the patient's and the slot's locks; a refusal rolls it back with the rest.
        "number": allocate_consultation_numbers(db.session.connection(), 1, now)[0],
        "kind": ConsultationKind.DUTY,
        "status": ConsultationStatus.SCHEDULED,
        "patient_id": patient_id,
        "doctor_id": locked.doctor_id,
        "slot_id": locked.slot_id,
        "scheduled_at": locked.starts_at,
        "duration_minutes": max(1, int((locked.ends_at - locked.starts_at).total_seconds() // 60)),
        "question": question,
        "mode": mode,
        "submitted_at": now,
        "scheduled_set_at": now,
    }
    when = locked.starts_at.astimezone(_zone(locked.doctor_timezone)).strftime("%d.%m.%Y %H:%M")
    # The doctor's notification, its outbox messages (new dedupe keys: the consultation's
    # public_id is new in this transaction) and the audit event, as notify() and audit() would
    # write them.
    notification, messages = notification_values(
        locked.doctor_user_id,
        locked.doctor_email,
        "consultation_booked",
        _l(
            "New booking with you as the duty doctor: %(when)s (%(tz)s).",
            when=when,
            tz=locked.doctor_timezone,
        ),
        link=f"/care/consultations/{public_id}",
        dedupe_key=f"booking:{public_id}:doctor",
        patient=locked if locked.doctor_patient_id is not None else None,
    )
    rows: list[tuple[Table, dict[str, Any]]] = [(Notification.__table__, notification)]
    rows += [(OutboundMessage.__table__, outbox_values(**m)) for m in messages]
    audit_row = audit_values(
        "consultation.book",
        actor_id=locked.actor_id,
        obj_type="consultation",
        obj_id=public_id,
        patient_id=patient_id,
    )
    rows.append((AuditEvent.__table__, audit_row))

    limit = max_upcoming_bookings()
    upcoming, consultation_id = _write_booking(values, rows, limit, now)
    if upcoming >= limit:
        raise BookingError(
            _l(
                "You already have the most upcoming duty doctor bookings allowed (%(n)d). "
                "Cancel one of them to book another time.",
                n=limit,
            )
        )
    if consultation_id is None:
        raise BookingError(SLOT_TAKEN, slot_gone=True)
    if documents:
        db.session.execute(
            insert(consultation_document),
            [{"consultation_id": consultation_id, "document_id": d.id} for d in documents],
        )
    # The row as written, persistent in the session without reading it back.
    consultation = Consultation(id=consultation_id, **values)
    make_transient_to_detached(consultation)
    db.session.add(consultation)
    set_committed_value(consultation, "documents", documents)
    return consultation
