"""Staff administration: staff accounts, duty shifts and the row scope of the staff screens.

Services here follow DESIGN §3: the acting user comes in explicitly, rules raise a DomainError
with a translatable message, nothing commits (the view's unit of work or FAB's datamodel does).
"""

from __future__ import annotations

from flask_babel import lazy_gettext as _l
from sqlalchemy import inspect, select
from sqlalchemy.orm import InstrumentedAttribute

from app.accounts import AccountError, create_user, get_role, username_taken
from app.dates import schedule_error
from app.emails import email_taken, normalize_email
from app.errors import DomainError
from app.extensions import db
from app.permissions import DOCTOR, DUTY_DOCTOR
from app.scheduling import ScheduleError, generate_slots, validate_shift
from app.security import revoke_sessions
from models import Consultation, Doctor, DutyShift, OblakoUser, Slot, utcnow

STAFF_DOCTOR_ROLES = (DOCTOR, DUTY_DOCTOR)


class StaffError(DomainError):
    pass


# ---------------------------------------------------------------------------------------------
# Staff accounts
# ---------------------------------------------------------------------------------------------


def _doctor_role_name(doctor: Doctor) -> str:
    return DUTY_DOCTOR if doctor.is_duty else DOCTOR


def check_login_free(username: str) -> None:
    if not username.strip():
        raise AccountError(_l("Enter a login."))
    if username_taken(username.strip()):
        raise AccountError(_l("This login is already taken."))


def check_email_free(email: str | None) -> str | None:
    """The staff member's e-mail as stored (None when empty): a valid address nobody holds."""
    email = normalize_email(email)  # InvalidEmail, a DomainError, when it is not an address
    if email and email_taken(email):
        raise AccountError(_l("This e-mail is already in use."))
    return email


def create_staff_account(
    doctor: Doctor, *, username: str, password: str, email: str | None
) -> OblakoUser:
    """Give a new doctor record its sign-in account (password policy applies)."""
    username = username.strip()
    with db.session.no_autoflush:  # the doctor row is not complete until its user exists
        check_login_free(username)
        email = check_email_free(email)
        user = create_user(
            username=username,
            password=password,
            role_names=[_doctor_role_name(doctor)],
            first_name=doctor.name,
            last_name=doctor.surname,
            email=email,
            timezone=doctor.timezone,
            personal=(doctor.surname, doctor.name, username, (email or "").split("@")[0]),
        )
    doctor.user = user
    doctor.user_id = user.id
    doctor.active = True
    return user


def sync_staff_account(doctor: Doctor) -> None:
    """Carry an edited doctor record over to its account: role, names, zone, active flag.

    Deactivation also revokes every session and token the doctor holds (DESIGN §4), so a
    deactivated doctor is signed out everywhere at the next request.
    """
    user = doctor.user
    keep = [r for r in user.roles if r.name not in STAFF_DOCTOR_ROLES]
    wanted = get_role(_doctor_role_name(doctor))
    if {r.name for r in user.roles} != {r.name for r in [*keep, wanted]}:
        user.roles = [*keep, wanted]
    user.first_name, user.last_name = doctor.name, doctor.surname
    user.timezone = doctor.timezone
    if user.active and not doctor.active:
        revoke_sessions(user)
    user.active = doctor.active


# ---------------------------------------------------------------------------------------------
# Duty shifts
# ---------------------------------------------------------------------------------------------

# Changing any of these re-cuts the shift into slots.
_SLOT_SHAPING = ("starts_at", "ends_at", "slot_minutes", "doctor")


def shift_is_booked(shift: DutyShift) -> bool:
    """True when any slot of the shift is referenced by a consultation (active or past)."""
    if shift.id is None:
        return False
    stmt = (
        select(Consultation.id)
        .join(Slot, Consultation.slot_id == Slot.id)
        .where(Slot.shift_id == shift.id)
        .limit(1)
    )
    return db.session.execute(stmt).first() is not None


def _duty_doctor(shift: DutyShift) -> Doctor:
    doctor = shift.doctor or (
        db.session.get(Doctor, shift.doctor_id) if shift.doctor_id is not None else None
    )
    if doctor is None or not doctor.is_duty or not doctor.active:
        raise ScheduleError(_l("Choose an active duty doctor."))
    return doctor


def _check_overlap(shift: DutyShift, doctor: Doctor) -> None:
    stmt = select(DutyShift.id).where(
        DutyShift.doctor_id == doctor.id,
        DutyShift.starts_at < shift.ends_at,
        DutyShift.ends_at > shift.starts_at,
    )
    if shift.id is not None:
        stmt = stmt.where(DutyShift.id != shift.id)
    if db.session.execute(stmt.limit(1)).first() is not None:
        raise ScheduleError(_l("This doctor already has a shift at this time."))


def _check_window(shift: DutyShift) -> None:
    if problem := schedule_error(shift.starts_at, shift.ends_at, utcnow()):
        raise ScheduleError(problem)


def create_shift(shift: DutyShift) -> list[Slot]:
    """Validate a new shift and cut it into slots (added to the session with the shift)."""
    with db.session.no_autoflush:
        validate_shift(shift)
        _check_window(shift)
        doctor = _duty_doctor(shift)
        _check_overlap(shift, doctor)
    shift.doctor, shift.doctor_id = doctor, doctor.id  # generate_slots copies doctor_id
    db.session.add(shift)
    # Slot(shift=...) only fills the backref; SQLAlchemy 2 does not cascade from it.
    slots = generate_slots(shift)
    db.session.add_all(slots)
    return slots


def update_shift(shift: DutyShift) -> None:
    """Apply an edited shift: new times re-cut the slots, unless a slot is already booked."""
    state = inspect(shift)
    if not any(state.attrs[name].history.has_changes() for name in _SLOT_SHAPING):
        return  # only the topics changed: slots and their bookings stay as they are
    with db.session.no_autoflush:
        validate_shift(shift)
        _check_window(shift)
        if shift_is_booked(shift):
            raise ScheduleError(
                _l("Slots of this shift are already booked: its times can no longer be changed.")
            )
        doctor = _duty_doctor(shift)
        _check_overlap(shift, doctor)
    shift.doctor, shift.doctor_id = doctor, doctor.id
    shift.slots.clear()
    # The old slots must be deleted before the new ones take their (doctor, start) keys.
    db.session.flush()
    db.session.add_all(generate_slots(shift))


def ensure_shift_deletable(shift: DutyShift) -> None:
    if shift_is_booked(shift):
        raise ScheduleError(
            _l("Slots of this shift are already booked: the shift cannot be deleted.")
        )


# ---------------------------------------------------------------------------------------------
# Reference data
# ---------------------------------------------------------------------------------------------


def ensure_unreferenced(column: InstrumentedAttribute, value: int, message: str) -> None:
    """Refuse to delete a row that history still points to (deactivate it instead)."""
    if db.session.execute(select(column).where(column == value).limit(1)).first() is not None:
        raise StaffError(message)
