"""Patient self-registration, own profile and own password: the rules, without the web.

Services here receive plain data and the acting user, raise RegistrationError (a DomainError with
a translatable message and the form field it belongs to) and never commit: the view's
unit_of_work() does. Nothing here reads `request`, `g` or `flash`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

from email_validator import EmailNotValidError, validate_email
from flask_babel import lazy_gettext as _l
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from werkzeug.security import check_password_hash

from app.accounts import AccountError, create_patient, normalize_phone, record_consent
from app.audit import audit
from app.dates import birth_date_error
from app.errors import DomainError
from app.extensions import db
from app.i18n import RUSSIAN_TIMEZONES
from app.passwords import PasswordPolicyError, check_password
from app.roles import is_patient
from models import Consent, ConsentKind, OblakoUser, Patient, Sex

# Labels for the time-zone select: the city people know and the offset they can check.
TIMEZONE_LABELS = {
    "Europe/Kaliningrad": _l("Kaliningrad (UTC+2)"),
    "Europe/Moscow": _l("Moscow (UTC+3)"),
    "Europe/Samara": _l("Samara (UTC+4)"),
    "Asia/Yekaterinburg": _l("Yekaterinburg (UTC+5)"),
    "Asia/Omsk": _l("Omsk (UTC+6)"),
    "Asia/Novosibirsk": _l("Novosibirsk (UTC+7)"),
    "Asia/Krasnoyarsk": _l("Krasnoyarsk (UTC+7)"),
    "Asia/Irkutsk": _l("Irkutsk (UTC+8)"),
    "Asia/Yakutsk": _l("Yakutsk (UTC+9)"),
    "Asia/Vladivostok": _l("Vladivostok (UTC+10)"),
    "Asia/Magadan": _l("Magadan (UTC+11)"),
    "Asia/Kamchatka": _l("Kamchatka (UTC+12)"),
}

SEX_LABELS = {Sex.FEMALE: _l("Female"), Sex.MALE: _l("Male")}

# Letters (any script) joined by single spaces, hyphens or apostrophes: «Салтыков-Щедрин».
_NAME_RE = re.compile(r"^[^\W\d_]+(?:[ '\u2019-][^\W\d_]+)*$")
NAME_MAX = 100
REGION_MAX = 128


class RegistrationError(DomainError):
    """A refused registration or profile change; `field` names the form field to mark."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def timezone_choices() -> list[tuple[str, str]]:
    return [(tz, str(TIMEZONE_LABELS.get(tz, tz))) for tz in RUSSIAN_TIMEZONES]


def sex_choices() -> list[tuple[str, str]]:
    return [(s.value, str(label)) for s, label in SEX_LABELS.items()]


@dataclass(frozen=True)
class RegistrationData:
    surname: str
    name: str
    patronymic: str
    birth_date: date | None
    sex: str
    phone: str
    email: str
    region: str
    timezone: str
    password: str
    password_confirm: str
    consent_personal_data: bool


# --- shared checks -------------------------------------------------------------------------


def _clean_name(value: str, field: str, *, required: bool = True) -> str:
    value = " ".join((value or "").split())
    if not value:
        if required:
            raise RegistrationError(_l("This field is required."), field)
        return ""
    if len(value) > NAME_MAX or not _NAME_RE.match(value):
        raise RegistrationError(_l("Use letters only (a hyphen or a space is allowed)."), field)
    return value


def _check_timezone(tz: str) -> str:
    # Only the Russian zones are offered; anything else is a tampered form.
    if tz not in RUSSIAN_TIMEZONES:
        raise RegistrationError(_l("Choose a time zone from the list."), "timezone")
    return tz


def _check_region(region: str) -> str:
    region = " ".join((region or "").split())
    if not region:
        raise RegistrationError(_l("This field is required."), "region")
    if len(region) > REGION_MAX:
        raise RegistrationError(_l("The region name is too long."), "region")
    return region


def _check_phone(raw: str, *, own_user_id: int | None = None) -> str:
    try:
        phone = normalize_phone(raw)
    except AccountError as exc:
        raise RegistrationError(exc.message, "phone") from exc
    taken_by_patient = select(func.count()).select_from(Patient).where(Patient.phone == phone)
    # The phone is the login, so a staff account with that login blocks it as well.
    taken_by_user = (
        select(func.count())
        .select_from(OblakoUser)
        .where(func.lower(OblakoUser.username) == phone.lower())
    )
    if own_user_id is not None:
        taken_by_patient = taken_by_patient.where(Patient.user_id != own_user_id)
        taken_by_user = taken_by_user.where(OblakoUser.id != own_user_id)
    if db.session.execute(taken_by_patient).scalar() or db.session.execute(taken_by_user).scalar():
        raise RegistrationError(
            _l("A patient with this phone number is already registered."), "phone"
        )
    return phone


def _check_email(raw: str, *, own_user_id: int | None = None) -> str | None:
    raw = (raw or "").strip()
    if not raw:
        return None
    try:
        email = validate_email(raw, check_deliverability=False).normalized.lower()
    except EmailNotValidError as exc:
        raise RegistrationError(_l("Enter a valid e-mail address."), "email") from exc
    in_patients = (
        select(func.count()).select_from(Patient).where(func.lower(Patient.email) == email)
    )
    in_users = (
        select(func.count()).select_from(OblakoUser).where(func.lower(OblakoUser.email) == email)
    )
    if own_user_id is not None:
        in_patients = in_patients.where(Patient.user_id != own_user_id)
        in_users = in_users.where(OblakoUser.id != own_user_id)
    if db.session.execute(in_patients).scalar() or db.session.execute(in_users).scalar():
        raise RegistrationError(_l("A patient with this e-mail is already registered."), "email")
    return email


def _check_birth_date(born: date | None) -> date:
    if problem := birth_date_error(born):
        raise RegistrationError(problem, "birth_date")
    return born


def _check_new_password(password: str, confirm: str, personal: tuple[str, ...]) -> None:
    try:
        check_password(password or "", personal=personal)
    except PasswordPolicyError as exc:
        raise RegistrationError(exc.message, "password") from exc
    if password != confirm:
        raise RegistrationError(_l("The passwords do not match."), "password_confirm")


# --- registration --------------------------------------------------------------------------


def register_patient(data: RegistrationData, *, ip: str | None = None) -> Patient:
    """Create a self-registered patient with a recorded personal-data consent.

    Field checks come first and in form order, so the person sees the first problem next to
    the field it is about; the database constraints still decide a race between two sign-ups.
    """
    surname = _clean_name(data.surname, "surname")
    name = _clean_name(data.name, "name")
    patronymic = _clean_name(data.patronymic, "patronymic", required=False)
    born = _check_birth_date(data.birth_date)
    if data.sex not in {s.value for s in Sex}:
        raise RegistrationError(_l("Choose a value from the list."), "sex")
    phone = _check_phone(data.phone)
    email = _check_email(data.email)
    region = _check_region(data.region)
    tz = _check_timezone(data.timezone)
    _check_new_password(
        data.password,
        data.password_confirm,
        (surname, name, phone.lstrip("+"), (email or "").split("@")[0]),
    )
    if not data.consent_personal_data:
        raise RegistrationError(
            _l("Registration requires your consent to the processing of personal data."),
            "consent",
        )
    try:
        # No savepoint needed: any error here aborts the whole registration, and the view's
        # unit of work rolls the transaction back.
        patient = create_patient(
            surname=surname,
            name=name,
            patronymic=patronymic,
            birth_date=born,
            sex=data.sex,
            phone=phone,
            email=email,
            region=region,
            timezone=tz,
            password=data.password,
        )
    except IntegrityError as exc:
        # Someone registered the same phone or e-mail between our check and the insert.
        raise RegistrationError(
            _l("A patient with this phone number or e-mail is already registered."), "phone"
        ) from exc
    except AccountError as exc:
        raise RegistrationError(exc.message) from exc
    record_consent(patient.user, ConsentKind.PERSONAL_DATA, ip=ip)
    audit(
        "patient_registered",
        actor=patient.user,
        obj_type="patient",
        obj_id=patient.public_id,
        patient_id=patient.id,
    )
    return patient


# --- profile -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProfileData:
    phone: str
    email: str
    region: str
    timezone: str
    notify_sms: bool
    notify_email: bool


def update_profile(patient: Patient, data: ProfileData, *, actor: OblakoUser) -> list[str]:
    """Change the patient's own contact data; returns the names of the fields that changed.

    The phone is the login: a new phone renames the account. The user's time zone follows the
    patient's, because dates are shown in the viewer's zone (app/i18n.py).
    """
    if actor.id != patient.user_id:
        raise RegistrationError(_l("You can change only your own profile."))
    user = patient.user
    phone = _check_phone(data.phone, own_user_id=user.id)
    email = _check_email(data.email, own_user_id=user.id)
    region = _check_region(data.region)
    tz = _check_timezone(data.timezone)

    changed: list[str] = []
    if phone != patient.phone:
        placeholder = user.email == f"{user.username}@users.invalid"
        patient.phone = phone
        user.username = phone
        if placeholder:
            user.email = f"{phone}@users.invalid"
        changed.append("phone")
    if email != patient.email:
        patient.email = email
        # ab_user.email is required and unique: fall back to the login-based placeholder.
        user.email = email or f"{user.username}@users.invalid"
        changed.append("email")
    if region != patient.region:
        patient.region = region
        changed.append("region")
    if tz != patient.timezone or user.timezone != tz:
        patient.timezone = tz
        user.timezone = tz
        changed.append("timezone")
    for flag in ("notify_sms", "notify_email"):
        if bool(getattr(data, flag)) != getattr(patient, flag):
            setattr(patient, flag, bool(getattr(data, flag)))
            changed.append(flag)
    if changed:
        try:
            db.session.flush()
        except IntegrityError as exc:
            raise RegistrationError(
                _l("A patient with this phone number or e-mail is already registered."), "phone"
            ) from exc
        # Field names only: the audit trail never holds the contact data itself.
        audit(
            "profile_updated",
            actor=actor,
            obj_type="patient",
            obj_id=",".join(changed)[:64],
            patient_id=patient.id,
        )
    return changed


# --- password ------------------------------------------------------------------------------


def needs_personal_data_consent(user: OblakoUser) -> bool:
    """A patient with no standing personal-data consent in the ledger (an imported account)."""
    if not is_patient(user):
        return False
    active = db.session.execute(
        select(func.count())
        .select_from(Consent)
        .where(
            Consent.user_id == user.id,
            Consent.kind == ConsentKind.PERSONAL_DATA,
            Consent.withdrawn_at.is_(None),
        )
    ).scalar()
    return not active


def check_password_change(
    user: OblakoUser,
    *,
    current_password: str,
    new_password: str,
    confirm: str,
    consent: bool | None = None,
    ip: str | None = None,
) -> None:
    """Validate an own-password change and clear the must-change flag.

    The caller stores the new password through the security manager's reset_password, which
    hashes it and revokes every other session and API token of the user. On the first sign-in
    of an imported patient (must_change_password, no personal-data consent yet) the consent is
    required too and recorded here.
    """
    consent_needed = user.must_change_password and needs_personal_data_consent(user)
    if consent_needed and not consent:
        raise RegistrationError(
            _l("To continue, give your consent to the processing of personal data."), "consent"
        )
    if not user.password or not check_password_hash(user.password, current_password or ""):
        raise RegistrationError(_l("The current password is wrong."), "current_password")
    if new_password == current_password:
        raise RegistrationError(
            _l("The new password must differ from the current one."), "new_password"
        )
    personal = (
        user.last_name or "",
        user.first_name or "",
        (user.username or "").lstrip("+"),
        (user.email or "").split("@")[0],
    )
    try:
        _check_new_password(new_password, confirm, personal)
    except RegistrationError as exc:
        exc.field = "new_password" if exc.field == "password" else "confirm_password"
        raise
    user.must_change_password = False
    user.password_expires_at = None
    if consent_needed:
        record_consent(user, ConsentKind.PERSONAL_DATA, ip=ip)
    audit("password_changed", actor=user, obj_type="user", obj_id=user.id)
