"""People: user accounts for patients and staff, and the records behind them."""

from __future__ import annotations

import os
import re
from datetime import date

import phonenumbers
from flask import current_app
from flask_appbuilder.security.sqla.models import Role
from flask_babel import lazy_gettext as _l
from sqlalchemy import func, select
from werkzeug.security import generate_password_hash

from app.dates import birth_date_error
from app.emails import email_taken
from app.errors import DomainError
from app.extensions import db
from app.passwords import check_password
from app.permissions import DOCTOR, DUTY_DOCTOR, MANAGER, PATIENT
from models import (
    Consent,
    ConsentKind,
    Doctor,
    OblakoUser,
    Patient,
    PatientSource,
    utcnow,
)


class AccountError(DomainError):
    pass


# What a person signs in with, worded once: the sign-in form's labels and the invitation SMS
# (app/referrals/invitations.py) say the same, so that the SMS reads like the form.
LOGIN_LABEL = _l("Phone (login)")
PASSWORD_LABEL = _l("Password")

# Something typed in the login field that is a phone number as people write it
# (8 913 555-01-01, +7 (913) 555 01 01): digits, spaces, brackets, dashes, an optional plus.
_PHONE_LIKE = re.compile(r"^\+?[\d\s()\-]{10,24}$")


def normalize_phone(raw: str, region: str = "RU") -> str:
    """Return the phone in E.164 or raise AccountError with a translated message."""
    try:
        number = phonenumbers.parse((raw or "").strip(), region)
    except phonenumbers.NumberParseException as exc:
        raise AccountError(_l("Enter a valid phone number, for example +7 912 345-67-89.")) from exc
    if not phonenumbers.is_valid_number(number):
        raise AccountError(_l("Enter a valid phone number, for example +7 912 345-67-89."))
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def sign_in_name(raw: str | None) -> str:
    """The account name a sign-in looks up: a patient's login is the phone in E.164, so a phone
    written any usual way is normalised; anything else (a staff login) is kept as typed."""
    value = (raw or "").strip()
    if _PHONE_LIKE.match(value):
        try:
            return normalize_phone(value)
        except AccountError:
            return value
    return value


def hash_password(password: str) -> str:
    return generate_password_hash(
        password,
        method=current_app.config["FAB_PASSWORD_HASH_METHOD"],
        salt_length=current_app.config["FAB_PASSWORD_HASH_SALT_LENGTH"],
    )


def get_role(name: str) -> Role:
    role = db.session.execute(select(Role).where(Role.name == name)).scalar_one_or_none()
    if role is None:
        role = Role(name=name)
        db.session.add(role)
        db.session.flush()
    return role


def username_taken(username: str) -> bool:
    stmt = (
        select(func.count())
        .select_from(OblakoUser)
        .where(func.lower(OblakoUser.username) == username.lower())
    )
    return bool(db.session.execute(stmt).scalar())


def create_user(
    *,
    username: str,
    password: str,
    role_names: list[str],
    first_name: str,
    last_name: str,
    email: str | None,
    timezone: str | None = None,
    check_policy: bool = True,
    personal: tuple[str, ...] = (),
    password_hash: str | None = None,
) -> OblakoUser:
    """`password_hash`: the password was checked and hashed earlier (a confirmed registration
    kept it only as its hash); `password` is then ignored."""
    if check_policy and password_hash is None:
        check_password(password, personal=personal)
    if username_taken(username):
        raise AccountError(_l("This login is already taken."))
    user = OblakoUser(
        username=username,
        first_name=first_name,
        last_name=last_name,
        # ab_user.email is unique and required; staff and patients without e-mail get a
        # non-routable placeholder unique to the login.
        email=email or f"{username}@users.invalid",
        active=True,
        password=password_hash or hash_password(password),
        roles=[get_role(r) for r in role_names],
        timezone=timezone,
        session_generation=0,
    )
    db.session.add(user)
    db.session.flush()
    return user


def record_consent(user: OblakoUser, kind: ConsentKind, *, ip: str | None = None) -> Consent:
    consent = Consent(
        user_id=user.id,
        kind=kind,
        policy_version=current_app.config["CONSENT_POLICY_VERSION"],
        accepted_at=utcnow(),
        ip=ip,
    )
    db.session.add(consent)
    return consent


def phone_in_use(phone: str) -> bool:
    return bool(db.session.execute(select(func.count()).where(Patient.phone == phone)).scalar())


def create_patient(
    *,
    surname: str,
    name: str,
    patronymic: str,
    birth_date: date,
    sex: str,
    phone: str,
    email: str | None,
    region: str,
    timezone: str,
    password: str,
    source: PatientSource = PatientSource.SELF,
    check_policy: bool = True,
    password_hash: str | None = None,
) -> Patient:
    """Create a patient's account; the phone (E.164) is the login."""
    phone = normalize_phone(phone)
    email = (email or "").strip().lower() or None
    if phone_in_use(phone):
        raise AccountError(_l("A patient with this phone number is already registered."))
    if email and email_taken(email):
        raise AccountError(_l("A patient with this e-mail is already registered."))
    if problem := birth_date_error(birth_date):
        raise AccountError(problem)
    user = create_user(
        username=phone,
        password=password,
        role_names=[PATIENT],
        first_name=name,
        last_name=surname,
        email=email,
        timezone=timezone,
        check_policy=check_policy,
        personal=(surname, name, phone.lstrip("+"), (email or "").split("@")[0]),
        password_hash=password_hash,
    )
    patient = Patient(
        user_id=user.id,
        user=user,
        surname=surname.strip(),
        name=name.strip(),
        patronymic=(patronymic or "").strip(),
        birth_date=birth_date,
        sex=sex,
        phone=phone,
        email=email,
        region=region,
        timezone=timezone,
        source=source,
    )
    db.session.add(patient)
    db.session.flush()
    return patient


def create_doctor(
    *,
    username: str,
    password: str,
    surname: str,
    name: str,
    patronymic: str,
    specialty: str,
    email: str | None,
    center_id: int | None,
    is_duty: bool,
    timezone: str = "Europe/Moscow",
) -> Doctor:
    user = create_user(
        username=username,
        password=password,
        role_names=[DUTY_DOCTOR if is_duty else DOCTOR],
        first_name=name,
        last_name=surname,
        email=email,
        timezone=timezone,
    )
    doctor = Doctor(
        user_id=user.id,
        user=user,
        surname=surname,
        name=name,
        patronymic=patronymic,
        specialty=specialty,
        center_id=center_id,
        is_duty=is_duty,
        timezone=timezone,
    )
    db.session.add(doctor)
    db.session.flush()
    return doctor


def create_manager(
    *, username: str, password: str, first_name: str, last_name: str, email: str | None
) -> OblakoUser:
    return create_user(
        username=username,
        password=password,
        role_names=[MANAGER],
        first_name=first_name,
        last_name=last_name,
        email=email,
    )


def patient_for_user(user) -> Patient | None:
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    return db.session.execute(
        select(Patient).where(Patient.user_id == user.id)
    ).scalar_one_or_none()


def doctor_for_user(user) -> Doctor | None:
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    return db.session.execute(select(Doctor).where(Doctor.user_id == user.id)).scalar_one_or_none()


def public_sign_in_url(site_root: str | None = None) -> str:
    """The sign-in address a message carries: PUBLIC_SIGN_IN_URL, else this site's sign-in page
    (`site_root`, the address the request came to), else, outside a request (a worker), the
    address `make run` serves on."""
    configured = current_app.config.get("PUBLIC_SIGN_IN_URL")
    if configured:
        return configured
    if not site_root:
        host, port = os.environ.get("HOST", "127.0.0.1"), os.environ.get("PORT", "5000")
        site_root = f"http://{host}:{port}"
    return site_root.rstrip("/") + current_app.appbuilder.get_url_for_login
