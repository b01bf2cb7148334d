"""Oblako's data layer: every table of the service, in the sections of DESIGN §2.

Shared by the web app and the media server; nothing here imports `app/` or `views/`.
Conventions: explicit singular table names, `<relation>_id` foreign keys, `<event>_at` UTC
timestamps, string-stored StrEnum statuses, and a `public_id` UUID for every row that appears in
a URL, token, room or file key.
"""

from __future__ import annotations

import os
import re
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from flask_appbuilder import Model
from flask_appbuilder.security.sqla.models import User
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    ColumnElement,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    Uuid,
    and_,
    func,
    literal,
    or_,
    select,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.ext.hybrid import hybrid_property
from sqlalchemy.orm import Mapped, Session, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


def parse_public_id(value: object) -> uuid.UUID | None:
    """A public id from a URL, a form or a token; None for anything that is not a UUID (the
    caller answers 404, as for a row that is not there or not the caller's)."""
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except (TypeError, ValueError):
        return None


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every backend (SQLite keeps no offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def public_id_column(default: Callable[[], uuid.UUID] = uuid.uuid4) -> Mapped[uuid.UUID]:
    return mapped_column(Uuid, unique=True, nullable=False, default=default)


def uuid7() -> uuid.UUID:
    """A time-ordered UUID (RFC 9562 version 7: 48 bits of Unix milliseconds, 74 random).
    For rows written in a steady stream (chat messages): each one lands at the right edge
    of its unique index instead of on a random page — one page written per batch instead of
    one per row, in the write-ahead log and in the checkpoint that copies it back."""
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10))
    value = value & ~(0xF << 76) | 0x7 << 76  # version 7
    value = value & ~(0x3 << 62) | 0x2 << 62  # variant 10
    return uuid.UUID(int=value)


def created_at_column() -> Mapped[datetime]:
    return mapped_column(UTCDateTime(), nullable=False, default=utcnow)


# ---------------------------------------------------------------------------------------------
# Enumerations
# ---------------------------------------------------------------------------------------------


class Sex(StrEnum):
    FEMALE = "female"
    MALE = "male"


class PatientSource(StrEnum):
    SELF = "self"
    REFERRAL = "referral"


class IdentityStatus(StrEnum):
    UNVERIFIED = "unverified"
    VERIFIED = "verified"


class ConsentKind(StrEnum):
    PERSONAL_DATA = "personal_data"
    TELEMEDICINE = "telemedicine"
    RECORDING = "recording"


class ConsultationKind(StrEnum):
    CENTRE_REQUEST = "centre_request"
    DUTY = "duty"
    REFERRAL = "referral"


class ConsultationStatus(StrEnum):
    AWAITING_DOCUMENTS = "awaiting_documents"
    REQUESTED = "requested"
    NEEDS_DOCUMENTS = "needs_documents"
    SCHEDULED = "scheduled"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    REJECTED = "rejected"
    CANCELLED = "cancelled"
    MISSED = "missed"


# A consultation in one of these statuses is over, one way or another; the others are open
# (still going somewhere). The one list every area uses (documents, recordings, referrals, the
# one-open-application index below).
CLOSED_STATUSES = frozenset(
    {
        ConsultationStatus.COMPLETED,
        ConsultationStatus.REJECTED,
        ConsultationStatus.CANCELLED,
        ConsultationStatus.MISSED,
    }
)
OPEN_STATUSES = tuple(s for s in ConsultationStatus if s not in CLOSED_STATUSES)
# The video room exists in these (its time window is app/media.py's): the web app mints a
# media grant only then, and the media server lets nobody into the waiting room otherwise.
ROOM_STATUSES = frozenset({ConsultationStatus.SCHEDULED, ConsultationStatus.IN_PROGRESS})


def _sql_in(values: Iterable[str]) -> str:
    """A literal SQL list for a partial index's WHERE (the values are our own enum members)."""
    return ", ".join(f"'{v}'" for v in values)


# A slot is held by a consultation in one of these statuses (see the partial unique index).
SLOT_HOLDING_STATUSES = (
    ConsultationStatus.SCHEDULED,
    ConsultationStatus.IN_PROGRESS,
    ConsultationStatus.COMPLETED,
)


class ConsultationMode(StrEnum):
    VIDEO = "video"


class OutboundChannel(StrEnum):
    SMS = "sms"
    EMAIL = "email"


class OutboundStatus(StrEnum):
    QUEUED = "queued"
    SENT = "sent"
    FAILED = "failed"


class ImportStatus(StrEnum):
    VALIDATED = "validated"
    IMPORTING = "importing"
    DONE = "done"
    FAILED = "failed"


class AuditOutcome(StrEnum):
    OK = "ok"
    DENIED = "denied"
    ERROR = "error"


# ---------------------------------------------------------------------------------------------
# Users (Flask-AppBuilder's table, extended)
# ---------------------------------------------------------------------------------------------


class OblakoUser(User):
    """FAB's `ab_user` with what session revocation and one-time passwords need."""

    __tablename__ = "ab_user"
    __table_args__ = {"extend_existing": True}

    # Bumped on logout, password change and deactivation: sessions and API tokens carry the
    # generation they were issued under and stop working once it moves on.
    session_generation: Mapped[int] = mapped_column(
        Integer, nullable=False, default=0, server_default="0"
    )
    must_change_password: Mapped[bool] = mapped_column(
        Boolean, nullable=False, default=False, server_default=text("false")
    )
    password_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    timezone: Mapped[str | None] = mapped_column(String(64), nullable=True)


class SignInLink(Model):
    """A one-time sign-in link sent with a one-time password (the referral invitation SMS).

    Only the SHA-256 of the link's secret is stored. It signs its account in once, until
    `expires_at` (the password's expiry), and only while that password is still the account's
    (app/sign_in_links.py).
    """

    __tablename__ = "sign_in_link"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(
        ForeignKey("ab_user.id", ondelete="CASCADE"), nullable=False, index=True
    )
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    created_at: Mapped[datetime] = created_at_column()
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


# E-mails are matched regardless of case (referral import and preview): an index on the
# expression the queries use. FAB's table, so declared beside it rather than in its class.
Index("ix_ab_user_email_lower", func.lower(OblakoUser.__table__.c.email))


# ---------------------------------------------------------------------------------------------
# Reference data
# ---------------------------------------------------------------------------------------------


disease_center = Table(
    "disease_center",
    Model.metadata,
    Column("disease_id", Integer, ForeignKey("disease.id", ondelete="CASCADE"), primary_key=True),
    Column(
        "center_id", Integer, ForeignKey("medical_center.id", ondelete="CASCADE"), primary_key=True
    ),
)

disease_required_document = Table(
    "disease_required_document",
    Model.metadata,
    Column("disease_id", Integer, ForeignKey("disease.id", ondelete="CASCADE"), primary_key=True),
    Column(
        "document_type_id",
        Integer,
        ForeignKey("document_type.id", ondelete="CASCADE"),
        primary_key=True,
    ),
)


class MedicalCenter(Model):
    __tablename__ = "medical_center"

    id: Mapped[int] = mapped_column(primary_key=True)
    public_id: Mapped[uuid.UUID] = public_id_column()
    name: Mapped[str] = mapped_column(String(255), unique=True, nullable=False)
    profile: Mapped[str] = mapped_column(String(64), nullable=False)
    region: Mapped[str] = mapped_column(String(128), nullable=False, default="")
    description: Mapped[str] = mapped_column(Text, nullable=False, default="")
    active: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)

    diseases: Mapped[list[Disease]] = relationship(
        secondary=disease_center, back_populates="centers"
    )

    def __str__(self) -> str:
        return self.name


class DocumentType(Model):
    __tablename__ = "document_type"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True, nullable=False)
    name: Mapped[str] = mapped_column(String(128), nullable=False)
    name_en: Mapped[str] = mapped_column(String(128), nullable=False, default="")
    sort_order: Mapped[int] = mapped_column(Integer, nullable=False, default=0)

    def __str__(self) -> str:
        return self.name


class Disease(Model):
    __tablename__ = "disease"

    id: Mapped[int] = mapped_column(primary_key=True)
    icd10_code: Mapped[str] = mapped_column(String(16), unique=True, nullable=False)
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    profile: Mapped[str] = mapped_column(String(64), nullable=False)
    active: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)

    centers: Mapped[list[MedicalCenter]] = relationship(
        secondary=disease_center, back_populates="diseases"
    )
    required_document_types: Mapped[list[DocumentType]] = relationship(
        secondary=disease_required_document
    )

    def __str__(self) -> str:
        return f"{self.icd10_code} {self.name}"


# ---------------------------------------------------------------------------------------------
# People
# ---------------------------------------------------------------------------------------------


class Patient(Model):
    __tablename__ = "patient"

    id: Mapped[int] = mapped_column(primary_key=True)
    public_id: Mapped[uuid.UUID] = public_id_column()
    user_id: Mapped[int] = mapped_column(
        ForeignKey("ab_user.id", ondelete="CASCADE"), unique=True, nullable=False
    )
    surname: Mapped[str] = mapped_column(String(100), nullable=False)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    patronymic: Mapped[str] = mapped_column(String(100), nullable=False, default="")
    birth_date: Mapped[date] = mapped_column(Date, nullable=False)
    sex: Mapped[str] = mapped_column(String(16), nullable=False)
    phone: Mapped[str] = mapped_column(String(20), unique=True, nullable=False)  # E.164
    email: Mapped[str | None] = mapped_column(String(254), unique=True, nullable=True)
    snils: Mapped[str | None] = mapped_column(String(14), unique=True, nullable=True)
    region: Mapped[str] = mapped_column(String(128), nullable=False, default="")
    timezone: Mapped[str] = mapped_column(String(64), nullable=False, default="Europe/Moscow")
    source: Mapped[str] = mapped_column(String(16), nullable=False, default=PatientSource.SELF)
    identity_status: Mapped[str] = mapped_column(
        String(16), nullable=False, default=IdentityStatus.UNVERIFIED
    )
    notify_sms: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    notify_email: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    created_at: Mapped[datetime] = created_at_column()

    user: Mapped[OblakoUser] = relationship(foreign_keys=[user_id])

    __table_args__ = (Index("ix_patient_surname_name", "surname", "name"),)

    @property
    def full_name(self) -> str:
        return " ".join(p for p in (self.surname, self.name, self.patronymic) if p)

    def age_on(self, day: date) -> int:
        born = self.birth_date
        return day.year - born.year - ((day.month, day.day) < (born.month, born.day))

    def __str__(self) -> str:
        return self.full_name


class Doctor(Model):
    __tablename__ = "doctor"

    id: Mapped[int] = mapped_column(primary_key=True)
    public_id: Mapped[uuid.UUID] = public_id_column()
    user_id: Mapped[int] = mapped_column(
        ForeignKey("ab_user.id", ondelete="CASCADE"), unique=True, nullable=False
    )
    surname: Mapped[str] = mapped_column(String(100), nullable=False)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    patronymic: Mapped[str] = mapped_column(String(100), nullable=False, default="")
    specialty: Mapped[str] = mapped_column(String(128), nullable=False)
    center_id: Mapped[int | None] = mapped_column(
        ForeignKey("medical_center.id", ondelete="SET NULL"), nullable=True, index=True
    )
    is_duty: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    timezone: Mapped[str] = mapped_column(String(64), nullable=False, default="Europe/Moscow")
    active: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)

    user: Mapped[OblakoUser] = relationship(foreign_keys=[user_id])
    center: Mapped[MedicalCenter | None] = relationship()

    @property
    def full_name(self) -> str:
        return " ".join(p for p in (self.surname, self.name, self.patronymic) if p)

    def __str__(self) -> str:
        return f"{self.full_name} ({self.specialty})"


class Consent(Model):
    """Append-only consent ledger: a withdrawal sets withdrawn_at, nothing is overwritten."""

    __tablename__ = "consent"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(
        ForeignKey("ab_user.id", ondelete="CASCADE"), nullable=False, index=True
    )
    consultation_id: Mapped[int | None] = mapped_column(
        ForeignKey("consultation.id", ondelete="CASCADE"), nullable=True
    )
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    policy_version: Mapped[str] = mapped_column(String(32), nullable=False)
    accepted_at: Mapped[datetime] = created_at_column()
    withdrawn_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    ip: Mapped[str | None] = mapped_column(String(64), nullable=True)


STORAGE_KEY_RE = re.compile(r"[0-9a-f]{32}")  # a stored file's name: use fullmatch()


def stored_file_path(root: str | os.PathLike, key: str) -> Path:
    """Where a stored file (a recording under MEDIA_RECORDINGS_DIR; a document) lives under its
    root: ab/cd/abcd…, two levels of fan-out keep directories small. The media server writes
    recordings there and the web app reads them. A key that is not 32 hex digits is refused
    (ValueError) before it reaches the file system."""
    if not isinstance(key, str) or not STORAGE_KEY_RE.fullmatch(key):
        raise ValueError("invalid storage key")
    return Path(root) / key[:2] / key[2:4] / key


@dataclass(frozen=True)
class RecordingConsents:
    """Who consented to the recording of one consultation: the patient's and the assigned
    doctor's active (not withdrawn) `recording` consents for it. A call is recorded only with
    both; the web app shows each, the media server checks `both` at every start and re-check."""

    patient: Consent | None
    doctor: Consent | None
    doctor_assigned: bool

    @property
    def both(self) -> bool:
        return self.patient is not None and self.doctor is not None

    def of(self, role: str) -> Consent | None:
        return self.patient if role == "patient" else self.doctor


def recording_consents(session: Session, consultation_id: int) -> RecordingConsents:
    """The one rule of consent to recording, read in `session` (the web app's or the media
    server's). No consultation, or no doctor yet: nobody's consent is enough."""
    parties = session.execute(
        select(Patient.user_id, Doctor.user_id)
        .select_from(Consultation)
        .join(Patient, Patient.id == Consultation.patient_id)
        .outerjoin(Doctor, Doctor.id == Consultation.doctor_id)
        .where(Consultation.id == consultation_id)
    ).first()
    patient_user, doctor_user = parties if parties is not None else (None, None)

    def active(user_id: int | None) -> Consent | None:
        if user_id is None:
            return None
        return session.scalars(
            select(Consent)
            .where(
                Consent.consultation_id == consultation_id,
                Consent.user_id == user_id,
                Consent.kind == ConsentKind.RECORDING,
                Consent.withdrawn_at.is_(None),
            )
            .order_by(Consent.accepted_at.desc(), Consent.id.desc())
        ).first()

    return RecordingConsents(active(patient_user), active(doctor_user), doctor_user is not None)


# ---------------------------------------------------------------------------------------------
# Scheduling
# ---------------------------------------------------------------------------------------------


class DutyShift(Model):
    __tablename__ = "duty_shift"

    id: Mapped[int] = mapped_column(primary_key=True)
    public_id: Mapped[uuid.UUID] = public_id_column()
    doctor_id: Mapped[int] = mapped_column(
        ForeignKey("doctor.id", ondelete="CASCADE"), nullable=False, index=True
    )
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    ends_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    slot_minutes: Mapped[int] = mapped_column(Integer, nullable=False, default=30)
    topics: Mapped[str] = mapped_column(Text, nullable=False, default="")
    created_at: Mapped[datetime] = created_at_column()

    doctor: Mapped[Doctor] = relationship()
    slots: Mapped[list[Slot]] = relationship(
        back_populates="shift", cascade="all, delete-orphan", order_by="Slot.starts_at"
    )

    def __str__(self) -> str:
        return f"{self.doctor} {self.starts_at:%Y-%m-%d %H:%M}"


class Slot(Model):
    __tablename__ = "slot"

    id: Mapped[int] = mapped_column(primary_key=True)
    public_id: Mapped[uuid.UUID] = public_id_column()
    shift_id: Mapped[int] = mapped_column(
        ForeignKey("duty_shift.id", ondelete="CASCADE"), nullable=False, index=True
    )
    doctor_id: Mapped[int] = mapped_column(
        ForeignKey("doctor.id", ondelete="CASCADE"), nullable=False
    )
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    ends_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    blocked: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)

    shift: Mapped[DutyShift] = relationship(back_populates="slots")
    doctor: Mapped[Doctor] = relationship()

    __table_args__ = (
        UniqueConstraint("doctor_id", "starts_at", name="uq_slot_doctor_start"),
        Index("ix_slot_doctor_starts", "doctor_id", "starts_at"),
    )

    def __str__(self) -> str:
        return f"{self.starts_at:%Y-%m-%d %H:%M}"


# ---------------------------------------------------------------------------------------------
# Care
# ---------------------------------------------------------------------------------------------


consultation_document = Table(
    "consultation_document",
    Model.metadata,
    Column(
        "consultation_id",
        Integer,
        ForeignKey("consultation.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column(
        "document_id",
        Integer,
        ForeignKey("medical_document.id", ondelete="CASCADE"),
        primary_key=True,
    ),
)


_OPEN_APPLICATION_WHERE = (
    f"kind = '{ConsultationKind.CENTRE_REQUEST}' AND status IN ({_sql_in(OPEN_STATUSES)})"
)


# The consultation number: what a patient reads aloud on the phone and types on a keypad.
# Two digits of the year, then the year's counter, without leading zeros: 26-42 is shown, 2642
# is stored and typed. Short early in the year (an older patient says «двадцать шесть — сорок
# два»), digits only (a phone keypad has no hyphen), and unambiguous: the year is always the
# first two digits, so no two (year, counter) pairs give the same digits.


def format_consultation_number(number: str) -> str:
    """The stored digits as people read them: '2642' → '26-42'."""
    return f"{number[:2]}-{number[2:]}" if len(number) > 2 else number


_TYPED_SPLIT = re.compile(r"^\D*?(\d{2})[\s\-–—/.]+0*(\d{1,14})\D*$")
_TYPED_PLAIN = re.compile(r"^\D*?(\d{3,16})\D*$")


def typed_consultation_number(text: str | None) -> str | None:
    """What a person typed ('26-42', '№ 26-042', '2642') as the stored digits, else None."""
    text = (text or "").strip()
    if len(text) > 32:
        return None
    if match := _TYPED_SPLIT.match(text):
        return match.group(1) + match.group(2)
    if match := _TYPED_PLAIN.match(text):
        return match.group(1)
    return None


class ConsultationNumberCounter(Model):
    """The last consultation number given in each year.

    A new number is an upsert of this row that returns the new value: the database locks the
    row until the transaction ends, so two transactions never get the same number (the unique
    constraint on consultation.number is the backstop), and one that rolls back gives its
    numbers back."""

    __tablename__ = "consultation_number_counter"

    year: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    last_number: Mapped[int] = mapped_column(Integer, nullable=False)


def allocate_consultation_numbers(
    connection: Connection, count: int, when: datetime | None = None
) -> list[str]:
    """`count` new consultation numbers of the year of `when` (now), in the caller's
    transaction: one statement, whatever the count (a referral import numbers a whole chunk)."""
    year = (when or utcnow()).year % 100
    counter = ConsultationNumberCounter.__table__
    upsert = postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert
    stmt = (
        upsert(counter)
        .values(year=year, last_number=count)
        .on_conflict_do_update(
            index_elements=[counter.c.year],
            set_={"last_number": counter.c.last_number + count},
        )
        .returning(counter.c.last_number)
    )
    last = connection.execute(stmt).scalar_one()
    return [f"{year:02d}{n}" for n in range(last - count + 1, last + 1)]


_numbers_for: weakref.WeakKeyDictionary[Any, Iterator[str]] = weakref.WeakKeyDictionary()


def _new_consultation_number(context: Any) -> str | None:
    """The column default of consultation.number, so every INSERT gets one, ORM or Core.

    An executemany (the referral import's bulk insert, several consultations in one flush)
    takes the numbers of all its rows in one statement, then hands them out row by row.
    Called without a statement (FAB prefilling a search form, a hand-built SQL text) there is
    nothing to number: None, and NOT NULL refuses a row that would go in without one."""
    if context is None:
        return None
    numbers = _numbers_for.get(context)
    if numbers is None:
        count = len(context.compiled_parameters)
        numbers = _numbers_for[context] = iter(
            allocate_consultation_numbers(context.connection, count)
        )
    return next(numbers)


class Consultation(Model):
    __tablename__ = "consultation"

    id: Mapped[int] = mapped_column(primary_key=True)
    public_id: Mapped[uuid.UUID] = public_id_column()
    # The number people read and type (see format_consultation_number); given at the INSERT.
    number: Mapped[str] = mapped_column(
        String(16), nullable=False, default=_new_consultation_number
    )
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    status: Mapped[str] = mapped_column(String(32), nullable=False)
    patient_id: Mapped[int] = mapped_column(
        ForeignKey("patient.id", ondelete="CASCADE"), nullable=False, index=True
    )
    center_id: Mapped[int | None] = mapped_column(ForeignKey("medical_center.id"), nullable=True)
    doctor_id: Mapped[int | None] = mapped_column(ForeignKey("doctor.id"), nullable=True)
    disease_id: Mapped[int | None] = mapped_column(ForeignKey("disease.id"), nullable=True)
    slot_id: Mapped[int | None] = mapped_column(ForeignKey("slot.id"), nullable=True)
    referral_row_id: Mapped[int | None] = mapped_column(
        ForeignKey("referral_import_row.id", ondelete="SET NULL"), nullable=True, index=True
    )
    diagnosis_text: Mapped[str] = mapped_column(Text, nullable=False, default="")
    complaints: Mapped[str] = mapped_column(Text, nullable=False, default="")
    question: Mapped[str] = mapped_column(Text, nullable=False, default="")
    staff_message: Mapped[str] = mapped_column(Text, nullable=False, default="")
    mode: Mapped[str] = mapped_column(String(16), nullable=False, default=ConsultationMode.VIDEO)
    scheduled_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    duration_minutes: Mapped[int] = mapped_column(Integer, nullable=False, default=30)
    due_by: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[datetime] = created_at_column()
    submitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    reviewed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    scheduled_set_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    rejected_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    reject_reason: Mapped[str] = mapped_column(Text, nullable=False, default="")
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    cancelled_by_id: Mapped[int | None] = mapped_column(
        ForeignKey("ab_user.id", ondelete="SET NULL"), nullable=True
    )
    cancel_reason: Mapped[str] = mapped_column(Text, nullable=False, default="")
    missed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    reminder_24h_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    reminder_1h_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # The hidden one-time id of the «Новая заявка» form that created it: the same form sent
    # twice (a double click, a resend after a timeout) finds this row instead of a second one.
    form_token: Mapped[str | None] = mapped_column(String(36), nullable=True)
    # Optimistic concurrency: every ORM update is `… WHERE version = <the version read>` and
    # bumps it, so two transitions decided on the same state (the patient cancels while the
    # doctor schedules) cannot both land; the second one fails (app.db.unit_of_work).
    version: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("1"))

    patient: Mapped[Patient] = relationship()
    center: Mapped[MedicalCenter | None] = relationship()
    doctor: Mapped[Doctor | None] = relationship()
    disease: Mapped[Disease | None] = relationship()
    slot: Mapped[Slot | None] = relationship()
    documents: Mapped[list[MedicalDocument]] = relationship(secondary=consultation_document)

    # The rules about a consultation that the web app and the media server share, each with
    # its SQL form beside it (the media server's chat insert decides in the statement itself).

    @hybrid_property
    def is_closed(self) -> bool:
        """Over, one way or another (CLOSED_STATUSES)."""
        return self.status in CLOSED_STATUSES

    @is_closed.inplace.expression
    @classmethod
    def _is_closed_sql(cls) -> Any:
        return cls.status.in_([s.value for s in CLOSED_STATUSES])

    @hybrid_property
    def chat_open(self) -> bool:
        """The patient and the doctors may write: a duty booking from `scheduled` (the patient
        may ask the duty doctor before the call), every kind while `in_progress`."""
        return self.status == ConsultationStatus.IN_PROGRESS or (
            self.kind == ConsultationKind.DUTY and self.status == ConsultationStatus.SCHEDULED
        )

    @chat_open.inplace.expression
    @classmethod
    def _chat_open_sql(cls) -> Any:
        return or_(
            cls.status == ConsultationStatus.IN_PROGRESS.value,
            and_(
                cls.kind == ConsultationKind.DUTY.value,
                cls.status == ConsultationStatus.SCHEDULED.value,
            ),
        )

    @hybrid_property
    def guest_chat_open(self) -> bool:
        """An invited guest may write: during the consultation only, never before it."""
        return self.status == ConsultationStatus.IN_PROGRESS

    @guest_chat_open.inplace.expression
    @classmethod
    def _guest_chat_open_sql(cls) -> Any:
        return cls.status == ConsultationStatus.IN_PROGRESS.value

    __table_args__ = (
        # The database, not Python, guarantees one active booking per slot.
        Index(
            "uq_consultation_active_slot",
            "slot_id",
            unique=True,
            sqlite_where=text(
                "slot_id IS NOT NULL AND status IN ('scheduled','in_progress','completed')"
            ),
            postgresql_where=text(
                "slot_id IS NOT NULL AND status IN ('scheduled','in_progress','completed')"
            ),
        ),
        # One open application per patient, centre and disease, whatever the timing of the
        # posts (NULL disease — a typed diagnosis — is not matched: NULLs are distinct).
        Index(
            "uq_consultation_open_application",
            "patient_id",
            "center_id",
            "disease_id",
            unique=True,
            sqlite_where=text(_OPEN_APPLICATION_WHERE),
            postgresql_where=text(_OPEN_APPLICATION_WHERE),
        ),
        UniqueConstraint("patient_id", "form_token", name="uq_consultation_patient_form_token"),
        UniqueConstraint("number", name="uq_consultation_number"),
        Index("ix_consultation_center_status", "center_id", "status", "submitted_at"),
        Index("ix_consultation_doctor_scheduled", "doctor_id", "scheduled_at"),
        # Staff row scope: "patients who applied to my centre or booked me" (app/access.py).
        Index("ix_consultation_center_patient", "center_id", "patient_id"),
        Index("ix_consultation_doctor_patient", "doctor_id", "patient_id"),
        # The centre doctors' queue, oldest first: an index scan that stops after one page
        # (app.consultations.doctor_queue keeps its status list literal to match this one).
        Index(
            "ix_consultation_queue",
            "center_id",
            "submitted_at",
            "id",
            sqlite_where=text("status IN ('requested', 'needs_documents')"),
            postgresql_where=text("status IN ('requested', 'needs_documents')"),
        ),
    )

    __mapper_args__ = {"version_id_col": version}

    @hybrid_property
    def display_number(self) -> str:
        """'26-42': the number as every page, message, PDF and report shows it."""
        return format_consultation_number(self.number)

    @display_number.inplace.expression
    @classmethod
    def _display_number_sql(cls) -> ColumnElement[str]:
        return (
            func.substr(cls.number, 1, 2, type_=String)
            + "-"
            + func.substr(cls.number, 3, type_=String)
        )

    @hybrid_property
    def label(self) -> str:
        """'№26-42': how pages, messages and reports name the consultation (str() too)."""
        return f"№{self.display_number}"

    @label.inplace.expression
    @classmethod
    def _label_sql(cls) -> ColumnElement[str]:
        return literal("№", String) + cls.display_number

    def __str__(self) -> str:
        return self.label


class MedicalDocument(Model):
    __tablename__ = "medical_document"

    id: Mapped[int] = mapped_column(primary_key=True)
    public_id: Mapped[uuid.UUID] = public_id_column()
    patient_id: Mapped[int] = mapped_column(
        ForeignKey("patient.id", ondelete="CASCADE"), nullable=False
    )
    document_type_id: Mapped[int] = mapped_column(ForeignKey("document_type.id"), nullable=False)
    storage_key: Mapped[str] = mapped_column(String(128), unique=True, nullable=False)
    original_name: Mapped[str] = mapped_column(String(255), nullable=False)
    content_type: Mapped[str] = mapped_column(String(64), nullable=False)
    size_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False)
    sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    document_date: Mapped[date | None] = mapped_column(Date, nullable=True)
    note: Mapped[str] = mapped_column(Text, nullable=False, default="")
    uploaded_by_id: Mapped[int | None] = mapped_column(
        ForeignKey("ab_user.id", ondelete="SET NULL"), nullable=True
    )
    uploaded_at: Mapped[datetime] = created_at_column()

    patient: Mapped[Patient] = relationship()
    document_type: Mapped[DocumentType] = relationship()

    __table_args__ = (Index("ix_medical_document_patient_uploaded", "patient_id", "uploaded_at"),)

    def __str__(self) -> str:
        return self.original_name


class Conclusion(Model):
    """A doctor's conclusion. Issued versions are never edited: a correction is a new version."""

    __tablename__ = "conclusion"

    id: Mapped[int] = mapped_column(primary_key=True)
    public_id: Mapped[uuid.UUID] = public_id_column()
    consultation_id: Mapped[int] = mapped_column(
        ForeignKey("consultation.id", ondelete="CASCADE"), nullable=False
    )
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    supersedes_id: Mapped[int | None] = mapped_column(
        ForeignKey("conclusion.id", ondelete="SET NULL"), nullable=True
    )
    author_id: Mapped[int] = mapped_column(ForeignKey("doctor.id"), nullable=False)
    complaints_history: Mapped[str] = mapped_column(Text, nullable=False, default="")
    findings: Mapped[str] = mapped_column(Text, nullable=False, default="")
    diagnosis: Mapped[str] = mapped_column(Text, nullable=False, default="")
    icd10_code: Mapped[str] = mapped_column(String(16), nullable=False, default="")
    recommendations: Mapped[str] = mapped_column(Text, nullable=False, default="")
    in_person_visit_needed: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    next_steps: Mapped[str] = mapped_column(Text, nullable=False, default="")
    issued_at: Mapped[datetime] = created_at_column()
    pdf_storage_key: Mapped[str | None] = mapped_column(String(128), nullable=True)

    consultation: Mapped[Consultation] = relationship()
    author: Mapped[Doctor] = relationship()

    __table_args__ = (UniqueConstraint("consultation_id", "version", name="uq_conclusion_version"),)


class ChatMessage(Model):
    __tablename__ = "chat_message"

    id: Mapped[int] = mapped_column(primary_key=True)
    public_id: Mapped[uuid.UUID] = public_id_column(default=uuid7)
    consultation_id: Mapped[int] = mapped_column(
        ForeignKey("consultation.id", ondelete="CASCADE"), nullable=False
    )
    # The author is an account, or (an invited guest has none) the invite the guest came by:
    # exactly one of the two, so a message is never stored under someone else's name.
    author_id: Mapped[int | None] = mapped_column(ForeignKey("ab_user.id"), nullable=True)
    invite_id: Mapped[int | None] = mapped_column(
        ForeignKey("media_invite.id", name="fk_chat_message_invite_id"), nullable=True
    )
    body: Mapped[str] = mapped_column(Text, nullable=False)
    client_msg_id: Mapped[str] = mapped_column(String(64), nullable=False)
    created_at: Mapped[datetime] = created_at_column()

    __table_args__ = (
        UniqueConstraint("author_id", "client_msg_id", name="uq_chat_message_client_id"),
        # Partial: only guests' messages have an invite, the members' (nearly all) are not
        # written into this index at all (one page fewer per message in the log).
        Index(
            "uq_chat_message_invite_client_id",
            "invite_id",
            "client_msg_id",
            unique=True,
            sqlite_where=text("invite_id IS NOT NULL"),
            postgresql_where=text("invite_id IS NOT NULL"),
        ),
        CheckConstraint(
            "(author_id IS NULL) <> (invite_id IS NULL)", name="ck_chat_message_one_author"
        ),
        Index("ix_chat_message_consultation", "consultation_id", "id"),
    )


class Recording(Model):
    __tablename__ = "recording"

    id: Mapped[int] = mapped_column(primary_key=True)
    public_id: Mapped[uuid.UUID] = public_id_column()
    consultation_id: Mapped[int] = mapped_column(
        ForeignKey("consultation.id", ondelete="CASCADE"), nullable=False, index=True
    )
    storage_key: Mapped[str] = mapped_column(String(128), unique=True, nullable=False)
    content_type: Mapped[str] = mapped_column(String(64), nullable=False)
    size_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    sha256: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    duration_seconds: Mapped[float | None] = mapped_column(nullable=True)
    started_at: Mapped[datetime] = created_at_column()
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class ChatRead(Model):
    """How far one user has read one consultation's chat (the cabinet's unread counts)."""

    __tablename__ = "chat_read"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(
        ForeignKey("ab_user.id", ondelete="CASCADE"), nullable=False
    )
    consultation_id: Mapped[int] = mapped_column(
        ForeignKey("consultation.id", ondelete="CASCADE"), nullable=False, index=True
    )
    last_read_id: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    updated_at: Mapped[datetime] = created_at_column()

    __table_args__ = (
        UniqueConstraint("user_id", "consultation_id", name="uq_chat_read_user_consultation"),
    )


class MediaInvite(Model):
    """A one-time link the doctor gives a third participant (colleague, interpreter, relative).

    Only the SHA-256 of the link's secret is stored; the link works once and until expires_at.
    """

    __tablename__ = "media_invite"

    id: Mapped[int] = mapped_column(primary_key=True)
    public_id: Mapped[uuid.UUID] = public_id_column()
    consultation_id: Mapped[int] = mapped_column(
        ForeignKey("consultation.id", ondelete="CASCADE"), nullable=False, index=True
    )
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    guest_name: Mapped[str] = mapped_column(String(120), nullable=False)
    guest_role: Mapped[str] = mapped_column(
        String(32), nullable=False
    )  # colleague/interpreter/relative
    created_by_id: Mapped[int] = mapped_column(ForeignKey("ab_user.id"), nullable=False)
    created_at: Mapped[datetime] = created_at_column()
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


# ---------------------------------------------------------------------------------------------
# Operations
# ---------------------------------------------------------------------------------------------


class Notification(Model):
    __tablename__ = "notification"

    id: Mapped[int] = mapped_column(primary_key=True)
    public_id: Mapped[uuid.UUID] = public_id_column()
    user_id: Mapped[int] = mapped_column(
        ForeignKey("ab_user.id", ondelete="CASCADE"), nullable=False
    )
    kind: Mapped[str] = mapped_column(String(64), nullable=False)
    text: Mapped[str] = mapped_column(Text, nullable=False)
    link: Mapped[str] = mapped_column(String(512), nullable=False, default="")
    created_at: Mapped[datetime] = created_at_column()
    read_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    __table_args__ = (Index("ix_notification_user_created", "user_id", "created_at"),)


class OutboundMessage(Model):
    """The outbox: every SMS and e-mail is a row first, delivered by the worker."""

    __tablename__ = "outbound_message"

    id: Mapped[int] = mapped_column(primary_key=True)
    public_id: Mapped[uuid.UUID] = public_id_column()
    channel: Mapped[str] = mapped_column(String(8), nullable=False)
    recipient: Mapped[str] = mapped_column(String(254), nullable=False)
    subject: Mapped[str] = mapped_column(String(255), nullable=False, default="")
    body: Mapped[str] = mapped_column(Text, nullable=False)
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("ab_user.id", ondelete="SET NULL"), nullable=True
    )
    dedupe_key: Mapped[str | None] = mapped_column(String(128), unique=True, nullable=True)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default=OutboundStatus.QUEUED)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    last_error: Mapped[str] = mapped_column(Text, nullable=False, default="")
    created_at: Mapped[datetime] = created_at_column()
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # Not before this time: the retry back-off, and the lease of a worker sending it now.
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # Which adapter delivered it: "outbox" (kept here for staff), "http" (SMS provider), "smtp".
    delivered_via: Mapped[str] = mapped_column(String(16), nullable=False, default="")

    __table_args__ = (Index("ix_outbound_message_status", "status", "created_at"),)


class PendingRegistration(Model):
    """A self-registration waiting for its phone to be confirmed with an SMS code.

    Holds the form's data (the password only as its hash) server-side until the code is typed;
    the session carries only `public_id`. The code is kept as a keyed hash
    (app/phone_confirmation.py); `code_hash` is empty when no code was sent (the number is
    taken: its owner got a notice instead), so every code is wrong. Removed on success and,
    once expired, by the purge task.
    """

    __tablename__ = "pending_registration"

    id: Mapped[int] = mapped_column(primary_key=True)
    public_id: Mapped[uuid.UUID] = public_id_column()
    phone: Mapped[str] = mapped_column(String(20), nullable=False, index=True)  # E.164
    data: Mapped[dict] = mapped_column(JSON, nullable=False, default=dict)
    password_hash: Mapped[str] = mapped_column(String(255), nullable=False)
    code_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    code_expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    # Wrong codes typed since the last one was sent; at the limit the code is void.
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    created_at: Mapped[datetime] = created_at_column()
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, index=True)


class ReferralImport(Model):
    __tablename__ = "referral_import"

    id: Mapped[int] = mapped_column(primary_key=True)
    public_id: Mapped[uuid.UUID] = public_id_column()
    file_sha256: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
    original_name: Mapped[str] = mapped_column(String(255), nullable=False)
    uploaded_by_id: Mapped[int | None] = mapped_column(
        ForeignKey("ab_user.id", ondelete="SET NULL"), nullable=True
    )
    status: Mapped[str] = mapped_column(String(16), nullable=False, default=ImportStatus.VALIDATED)
    total_rows: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    valid_rows: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    imported_rows: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    error_rows: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    created_at: Mapped[datetime] = created_at_column()
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # Last sign of life of the job importing it (confirmed, a chunk committed, resumed): an
    # import `importing` whose heartbeat is old has lost its worker (app/referrals/recovery.py).
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class ReferralImportRow(Model):
    __tablename__ = "referral_import_row"

    id: Mapped[int] = mapped_column(primary_key=True)
    import_id: Mapped[int] = mapped_column(
        ForeignKey("referral_import.id", ondelete="CASCADE"), nullable=False
    )
    row_number: Mapped[int] = mapped_column(Integer, nullable=False)
    data: Mapped[dict] = mapped_column(JSON, nullable=False, default=dict)
    errors: Mapped[list] = mapped_column(JSON, nullable=False, default=list)
    outcome: Mapped[str] = mapped_column(String(16), nullable=False, default="pending")
    patient_id: Mapped[int | None] = mapped_column(
        ForeignKey("patient.id", ondelete="SET NULL"), nullable=True
    )

    __table_args__ = (UniqueConstraint("import_id", "row_number", name="uq_import_row_number"),)


class AuditEvent(Model):
    """Append-only audit trail. No medical content: ids, actions and outcomes only."""

    __tablename__ = "audit_event"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = created_at_column()
    actor_id: Mapped[int | None] = mapped_column(
        ForeignKey("ab_user.id", ondelete="SET NULL"), nullable=True
    )
    action: Mapped[str] = mapped_column(String(64), nullable=False)
    object_type: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    object_id: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    patient_id: Mapped[int | None] = mapped_column(
        ForeignKey("patient.id", ondelete="SET NULL"), nullable=True
    )
    ip: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    outcome: Mapped[str] = mapped_column(String(16), nullable=False, default=AuditOutcome.OK)
    # Structured context of the action, never medical content: e.g. a report export's filters
    # and row count (app/reports/exports.py).
    detail: Mapped[dict | None] = mapped_column(JSON, nullable=True)

    __table_args__ = (
        Index("ix_audit_event_at", "at"),
        Index("ix_audit_event_patient", "patient_id"),
    )
