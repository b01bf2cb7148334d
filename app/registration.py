"""Patient self-registration, own profile and own password: the rules, without the web.

Services here receive plain data and the acting user, raise RegistrationError (a DomainError with
a translatable message and the form field it belongs to) and never commit: the view's
unit_of_work() does. Nothing here reads `request`, `g` or `flash`.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from dataclasses import fields as dataclass_fields
from datetime import date

from flask import current_app
from flask_babel import lazy_gettext as _l
from limits import parse
from sqlalchemy import func, select, union
from sqlalchemy.exc import IntegrityError
from werkzeug.security import check_password_hash

from app.accounts import AccountError, create_patient, normalize_phone, record_consent
from app.audit import audit
from app.dates import birth_date_error
from app.emails import InvalidEmail, email_taken, normalize_email
from app.errors import DomainError
from app.extensions import db
from app.i18n import RUSSIAN_TIMEZONES
from app.labels import SEX_LABELS
from app.otp import EXPIRED_MESSAGE as OTP_EXPIRED_MESSAGE
from app.otp import one_time_password_expired
from app.passwords import PasswordPolicyError, check_password
from app.roles import is_patient
from app.throttle import get_throttle
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


# Letters (any script) joined by single spaces, hyphens or apostrophes: «Салтыков-Щедрин».
_NAME_RE = re.compile(r"^[^\W\d_]+(?:[ '\u2019-][^\W\d_]+)*$")
NAME_MAX = 100
REGION_MAX = 128


class RegistrationError(DomainError):
    """A refused registration or profile change; `field` names the form field to mark."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class RegistrationThrottled(RegistrationError):
    """Too many codes asked for, or too many contact changes tried: see the throttles below."""


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


# --- throttles ----------------------------------------------------------------------------
# Whether a phone or an e-mail is someone's must not be learnt in bulk. `limits` on the sign-in
# throttle's storage and namespace (app/throttle.py: Redis when configured, so every web worker
# and host shares the counts; a test's reset clears them with the sign-in counts).


def _over(rules: list[tuple[str, str]]) -> list[tuple[object, str]] | None:
    """The parsed rules, or None when one of them is already at its limit."""
    throttle = get_throttle()
    parsed = [
        (parse(current_app.config[name]), f"{throttle.namespace}:{key}") for name, key in rules
    ]
    if all(throttle.limiter.test(limit, key) for limit, key in parsed):
        return parsed
    return None


def _hit(parsed: list[tuple[object, str]]) -> None:
    limiter = get_throttle().limiter
    for limit, key in parsed:
        limiter.hit(limit, key)


def count_code_sent(*, phone: str, ip: str, pending_id: object | None = None) -> None:
    """Count one registration SMS, or refuse (counting nothing) when a limit is reached.

    Per number and per client address whether the number is new or taken, so a refusal tells
    nothing; «send again» (`pending_id`) also once per REGISTRATION_CODE_RESEND.
    """
    if (
        pending_id is not None
        and _over([("REGISTRATION_CODE_RESEND", f"regcode:again:{pending_id}")]) is None
    ):
        raise RegistrationThrottled(
            _l("A new code can be requested once a minute. Please wait a little."), "code"
        )
    rules = [
        ("REGISTRATION_CODES_PER_PHONE", f"regcode:phone:{phone}"),
        ("REGISTRATION_CODES_PER_IP", f"regcode:ip:{ip or '-'}"),
    ]
    if pending_id is not None:
        rules.append(("REGISTRATION_CODE_RESEND", f"regcode:again:{pending_id}"))
    parsed = _over(rules)
    if parsed is None:
        raise RegistrationThrottled(
            _l(
                "Too many codes have been requested for this number or from your network. "
                "Try again in an hour."
            ),
            "phone" if pending_id is None else "code",
        )
    _hit(parsed)


def count_contact_change(user_id: int) -> None:
    """A signed-in patient changing phone or e-mail learns whether the new one is taken: count
    the tries so that an account cannot be used to look numbers up in bulk."""
    parsed = _over([("PROFILE_CONTACT_CHANGES_PER_USER", f"contact:user:{user_id}")])
    if parsed is None:
        raise RegistrationThrottled(
            _l("Too many changes of the phone or e-mail. Try again in an hour."), "phone"
        )
    _hit(parsed)


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


def _normalize_phone(raw: str) -> str:
    try:
        return normalize_phone(raw)
    except AccountError as exc:
        raise RegistrationError(exc.message, "phone") from exc


def phone_holders(phone: str) -> list[int]:
    """The users holding an E.164 number: a patient's phone, or a login (the phone is the
    login, so a staff account with that login holds it as well)."""
    by_patient = select(Patient.user_id).where(Patient.phone == phone)
    by_login = select(OblakoUser.id).where(func.lower(OblakoUser.username) == phone.lower())
    return sorted(db.session.execute(union(by_patient, by_login)).scalars())


def phone_taken(phone: str, *, own_user_id: int | None = None) -> bool:
    """Whether an E.164 number is some other account's."""
    return any(user_id != own_user_id for user_id in phone_holders(phone))


def _normalize_email(raw: str) -> str | None:
    try:
        return normalize_email(raw)
    except InvalidEmail as exc:
        raise RegistrationError(exc.message, "email") from exc


def _check_phone(raw: str, *, own_user_id: int | None = None) -> str:
    # Profile only: the patient is signed in, so telling them the number is in use is fair.
    phone = _normalize_phone(raw)
    if phone_taken(phone, own_user_id=own_user_id):
        raise RegistrationError(
            _l("A patient with this phone number is already registered."), "phone"
        )
    return phone


def _check_email(raw: str, *, own_user_id: int | None = None) -> str | None:
    email = _normalize_email(raw)
    if email and email_taken(email, own_user_id=own_user_id):
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
# Two steps (app/phone_confirmation.py): the form is checked here without asking whether the
# phone or the e-mail is anybody's, so the page cannot tell; the account is created only once
# the phone has been confirmed with an SMS code.


@dataclass(frozen=True)
class CheckedRegistration:
    """The form's data, checked and normalised; the password is kept apart (hashed)."""

    surname: str
    name: str
    patronymic: str
    birth_date: date
    sex: str
    phone: str  # E.164
    email: str | None
    region: str
    timezone: str

    def to_json(self) -> dict:
        return {**asdict(self), "birth_date": self.birth_date.isoformat()}

    @classmethod
    def from_json(cls, data: dict) -> CheckedRegistration:
        fields = {f.name for f in dataclass_fields(cls)}
        values = {k: v for k, v in data.items() if k in fields}
        return cls(**{**values, "birth_date": date.fromisoformat(data["birth_date"])})


def check_registration(data: RegistrationData) -> CheckedRegistration:
    """Every check of the form that reveals nothing about existing accounts.

    In form order, so the person sees the first problem next to the field it is about.
    """
    surname = _clean_name(data.surname, "surname")
    name = _clean_name(data.name, "name")
    patronymic = _clean_name(data.patronymic, "patronymic", required=False)
    born = _check_birth_date(data.birth_date)
    if data.sex not in {s.value for s in Sex}:
        raise RegistrationError(_l("Choose a value from the list."), "sex")
    phone = _normalize_phone(data.phone)
    email = _normalize_email(data.email)
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
    return CheckedRegistration(surname, name, patronymic, born, data.sex, phone, email, region, tz)


PHONE_REGISTERED_MEANWHILE = _l(
    "An account with this phone number has just been created. Sign in with this number and "
    "your password."
)


def create_registered_patient(
    reg: CheckedRegistration, *, password_hash: str, ip: str | None = None
) -> Patient:
    """Create the account of a registration whose phone has been confirmed.

    A phone registered meanwhile (two sign-ups racing) refuses it; the database's unique
    constraints decide the race. An e-mail that is someone else's is left out: the account is
    created without it, and the page does not say so (the caller tells the e-mail's owner).
    """
    if phone_taken(reg.phone):
        raise RegistrationError(PHONE_REGISTERED_MEANWHILE, "code")
    first_email = reg.email if reg.email and not email_taken(reg.email) else None
    patient = None
    for email in dict.fromkeys((first_email, None)):
        try:
            with db.session.begin_nested():
                patient = create_patient(
                    surname=reg.surname,
                    name=reg.name,
                    patronymic=reg.patronymic,
                    birth_date=reg.birth_date,
                    sex=reg.sex,
                    phone=reg.phone,
                    email=email,
                    region=reg.region,
                    timezone=reg.timezone,
                    password="",
                    password_hash=password_hash,
                )
            break
        except (IntegrityError, AccountError) as exc:
            # The phone or the e-mail was taken between the checks and the insert.
            if phone_taken(reg.phone):
                raise RegistrationError(PHONE_REGISTERED_MEANWHILE, "code") from exc
    if patient is None:
        raise RegistrationError(PHONE_REGISTERED_MEANWHILE, "code")
    record_consent(patient.user, ConsentKind.PERSONAL_DATA, ip=ip)
    audit(
        "patient.register",
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
    if (_normalize_phone(data.phone), _normalize_email(data.email)) != (
        patient.phone,
        patient.email,
    ):
        count_contact_change(user.id)
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
            "patient.profile_update",
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
    current_password: str | None,
    new_password: str,
    confirm: str,
    consent: bool | None = None,
    ip: str | None = None,
) -> None:
    """Validate an own-password change and clear the must-change flag.

    The caller stores the new password through the security manager's reset_password, which
    hashes it and revokes every other session and API token of the user. On the first sign-in
    of an imported patient (must_change_password, no personal-data consent yet) the consent is
    required too and recorded here. The current password is asked for a change by choice, not
    on that first sign-in (the one-time password or link has just been used to sign in).
    """
    first_sign_in = bool(user.must_change_password)
    consent_needed = first_sign_in and needs_personal_data_consent(user)
    if consent_needed and not consent:
        raise RegistrationError(
            _l("To continue, give your consent to the processing of personal data."), "consent"
        )
    if first_sign_in:
        # Signed in just now with the one-time password or link (issuing either revoked every
        # older session): it is not asked again, but it must still be in force.
        if one_time_password_expired(user):
            raise RegistrationError(str(OTP_EXPIRED_MESSAGE), "new_password")
        same = bool(user.password and check_password_hash(user.password, new_password or ""))
    elif not user.password or not check_password_hash(user.password, current_password or ""):
        raise RegistrationError(_l("The current password is wrong."), "current_password")
    else:
        same = new_password == current_password
    if same:
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
    audit("user.password_change", actor=user, obj_type="user", obj_id=user.id)
