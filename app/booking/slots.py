"""The duty doctors' free slots and whether one can be booked.

What the booking page lists (free_slots_by_doctor: the next BOOKING_WINDOW_DAYS days, grouped
by doctor and by the patient's local day) and the one rule of a bookable slot
(slot_refusal: doctor active and on duty, in the window, not blocked; "taken" is the partial
unique index's answer, see app/booking/book.py).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import NamedTuple

from flask_babel import lazy_gettext as _l
from sqlalchemy import bindparam, literal_column, select
from sqlalchemy.orm import contains_eager

from app.consultations import ConsultationError
from app.dates import zone
from app.errors import NotFound
from app.extensions import db
from models import (
    SLOT_HOLDING_STATUSES,
    Consultation,
    Doctor,
    DutyShift,
    DutyTopic,
    Slot,
    parse_public_id,
    utcnow,
)

BOOKING_WINDOW_DAYS = 14
SLOT_TAKEN = _l("This time has just been taken. Choose another one.")


# The topics as the patient picks them (the procedure's wording), in the page's order.
TOPIC_LABELS: dict[DutyTopic, object] = {
    DutyTopic.CARDIOVASCULAR: _l("Heart and blood vessels"),
    DutyTopic.GYNAECOLOGICAL: _l("Women's health (gynaecology)"),
    DutyTopic.LIFESTYLE: _l("Healthy lifestyle"),
}


def clean_topic(value: str | None) -> DutyTopic | None:
    """A topic from a link or a form; None for anything that is not one."""
    try:
        return DutyTopic(value or "")
    except ValueError:
        return None


def shift_topics(codes: str | None) -> frozenset[DutyTopic]:
    """The topics a shift takes bookings for (its space-separated codes; none: all)."""
    topics = frozenset(t for c in (codes or "").split() if (t := clean_topic(c)) is not None)
    return topics or frozenset(DutyTopic)


def serves_topic(codes: str | None, topic: DutyTopic) -> bool:
    return topic in shift_topics(codes)


def topic_codes(topics) -> str:
    """The stored form of a set of topics, in the page's order ("" would mean all)."""
    chosen = {clean_topic(str(t)) for t in topics or ()}
    return " ".join(t.value for t in TOPIC_LABELS if t in chosen)


class BookingError(ConsultationError):
    """The booking was refused; `slot_gone` when the slot itself can no longer be booked."""

    def __init__(self, message: str, *, slot_gone: bool = False) -> None:
        super().__init__(message)
        self.slot_gone = slot_gone


class SlotNotFound(NotFound):
    pass


# "The status holds the slot" as literal constants, not an expanding IN parameter: PostgreSQL's
# planner then sees the partial unique index's own predicate. The values are the enum's.
_STATUS_HOLDS_SLOT = Consultation.status.in_(
    [literal_column(f"'{s}'") for s in SLOT_HOLDING_STATUSES]
)


def slot_is_held():
    """SQL condition: an active consultation holds the slot (the index's own predicate)."""
    return (
        select(Consultation.id).where(Consultation.slot_id == Slot.id, _STATUS_HOLDS_SLOT).exists()
    )


# ---------------------------------------------------------------------------------------------
# Is this slot bookable?
# ---------------------------------------------------------------------------------------------


def slot_refusal(slot: Slot, now: datetime) -> BookingError | None:
    """Why the slot cannot be booked, whoever holds it (None: it can, if nobody does)."""
    doctor = slot.doctor
    if not (doctor.active and doctor.is_duty):
        return BookingError(_l("This doctor is not taking bookings now."), slot_gone=True)
    if slot.starts_at <= now:
        return BookingError(_l("This time has already passed. Choose another one."), slot_gone=True)
    if slot.starts_at >= now + timedelta(days=BOOKING_WINDOW_DAYS):
        return BookingError(
            _l("Booking is open for the next %(n)d days only.", n=BOOKING_WINDOW_DAYS),
            slot_gone=True,
        )
    if slot.blocked:
        return BookingError(_l("This time is not available for booking."), slot_gone=True)
    return None


def slot_statement(slot_pid: uuid.UUID):
    """The slot with its doctor and the doctor's user (told of the booking), one SELECT."""
    return (
        select(Slot)
        .join(Slot.doctor)
        .options(contains_eager(Slot.doctor).joinedload(Doctor.user))
        .where(Slot.public_id == slot_pid)
    )


def bookable_slot(slot_public_id: str | uuid.UUID, *, now: datetime | None = None) -> Slot:
    """The slot for the booking form, or BookingError / SlotNotFound saying why not.

    One unlocked SELECT. Its refusals are final (they describe committed rows); a slot that
    looks free is still booked the locked way (book_slot), which alone decides.
    """
    slot_pid = parse_public_id(slot_public_id)
    row = None
    if slot_pid is not None:
        stmt = slot_statement(slot_pid).add_columns(slot_is_held().label("held"))
        row = db.session.execute(stmt).unique().first()
    if row is None:
        raise SlotNotFound(_l("This time slot does not exist."))
    slot, held = row
    refusal = slot_refusal(slot, now or utcnow())
    if refusal is not None:
        raise refusal
    if held:
        raise BookingError(SLOT_TAKEN, slot_gone=True)
    return slot


# ---------------------------------------------------------------------------------------------
# The booking page: free slots by doctor and day
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
    """What the booking page shows of a duty doctor."""

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
    """A bookable slot as the page and a booker need it: plain columns."""

    public_id: uuid.UUID
    starts_at: datetime
    ends_at: datetime
    doctor_id: int
    surname: str
    name: str
    patronymic: str
    specialty: str
    topics: str | None
    topic_codes: str | None


_FREE_SLOTS = (
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
        DutyShift.topic_codes,
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


def free_slots(*, now: datetime | None = None, days: int = BOOKING_WINDOW_DAYS) -> list[FreeSlot]:
    """Bookable slots of active duty doctors: one query (anti-join) of the columns the page
    shows. Every booker re-reads it after a refusal, so it builds no ORM objects."""
    now = now or utcnow()
    rows = db.session.execute(_FREE_SLOTS, {"now": now, "until": now + timedelta(days=days)})
    return [FreeSlot._make(row) for row in rows.all()]


def slot_choice(slot: Slot | FreeSlot, timezone: str | None) -> SlotChoice:
    tz = zone(timezone)
    return SlotChoice(slot.public_id, slot.starts_at.astimezone(tz), slot.ends_at.astimezone(tz))


def free_slots_by_doctor(timezone: str | None, *, now: datetime | None = None) -> list[DoctorSlots]:
    """Free slots grouped by doctor and by the patient's local day, times in that zone."""
    grouped: list[DoctorSlots] = []
    for slot in free_slots(now=now):
        if not grouped or grouped[-1].doctor.id != slot.doctor_id:
            grouped.append(DoctorSlots(doctor=_card(slot)))
        entry = grouped[-1]
        topics = (slot.topics or "").strip()
        if topics and topics not in entry.topics:
            entry.topics.append(topics)
        choice = slot_choice(slot, timezone)
        if not entry.days or entry.days[-1].day != choice.starts_at.date():
            entry.days.append(DaySlots(day=choice.starts_at.date()))
        entry.days[-1].slots.append(choice)
    return grouped


# ---------------------------------------------------------------------------------------------
# The booking page by topic: a topic, then a day, then a time
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TimeChoice:
    """One free time of one duty doctor, in the patient's zone."""

    public_id: uuid.UUID
    starts_at: datetime
    ends_at: datetime
    doctor: DoctorCard
    about: str  # what the shift's doctor says about it (free text), may be ""


@dataclass
class DayChoices:
    day: date  # the patient's local date
    times: list[TimeChoice] = field(default_factory=list)


def _card(slot: FreeSlot) -> DoctorCard:
    return DoctorCard(
        slot.doctor_id, slot.surname, slot.name, slot.patronymic or "", slot.specialty or ""
    )


def free_times_by_day(
    timezone: str | None, topic: DutyTopic, *, now: datetime | None = None
) -> list[DayChoices]:
    """The free times for `topic`, grouped by the patient's local day, earliest first; at one
    time, every doctor free then. One query (free_slots)."""
    times = [
        TimeChoice(
            choice.public_id,
            choice.starts_at,
            choice.ends_at,
            _card(slot),
            (slot.topics or "").strip(),
        )
        for slot in free_slots(now=now)
        if serves_topic(slot.topic_codes, topic)
        for choice in (slot_choice(slot, timezone),)
    ]
    times.sort(key=lambda t: (t.starts_at, t.doctor.surname, t.doctor.id))
    days: list[DayChoices] = []
    for t in times:
        if not days or days[-1].day != t.starts_at.date():
            days.append(DayChoices(day=t.starts_at.date()))
        days[-1].times.append(t)
    return days


def free_counts_by_topic(*, now: datetime | None = None) -> dict[DutyTopic, int]:
    """How many free times each topic has (the topic step says when one has none)."""
    counts = dict.fromkeys(TOPIC_LABELS, 0)
    for slot in free_slots(now=now):
        for topic in shift_topics(slot.topic_codes):
            counts[topic] += 1
    return counts
