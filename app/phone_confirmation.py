"""Self-registration confirms the phone first, so that /register/ tells nobody who is a patient.

Step 1, start_registration(): the checked form (app/registration.check_registration) is kept
server-side as a PendingRegistration — the password only as its hash — and one SMS goes to the
number typed: a 6-digit code when the number is new; when it is already an account's, a notice
to its owner that someone tried to register with it and how to sign in. Both branches do the
same work (hash the password, write the row, queue one SMS) and the view answers them alike.

Step 2, confirm_registration(): the right code within its lifetime creates the account
(app/registration.create_registered_patient). Every try is counted first, atomically, and at
the limit the code is void; «send again» (resend_code) issues a fresh code.

Sending is throttled per number, per client address and («send again») per registration
(app/registration.count_code_sent).

The code is kept as an HMAC-SHA256 under a key derived from SECRET_KEY and the registration's
id: a plain hash of six digits would be reversed in a moment by whoever reads the table.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import current_app
from flask_babel import force_locale
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from sqlalchemy import delete, select, update

from app.accounts import hash_password
from app.emails import email_holders
from app.extensions import db
from app.notifications import DELIVERY_LOCALE, queue_message
from app.registration import (
    CheckedRegistration,
    RegistrationError,
    count_code_sent,
    create_registered_patient,
    phone_holders,
)
from models import OutboundChannel, Patient, PendingRegistration, utcnow

CODE_DIGITS = 6

VOID_MESSAGE = _l("Too many wrong codes: this code no longer works. Request a new code.")
GONE_MESSAGE = _l("The registration has expired or is already finished. Fill in the form again.")


class PendingGone(RegistrationError):
    """No registration waiting under this id (expired, finished, or never started here)."""

    def __init__(self) -> None:
        super().__init__(GONE_MESSAGE)


@dataclass(frozen=True)
class Confirmation:
    """What a typed code led to: the new patient, or the reason it did not.

    A refusal is returned, not raised, so that the view's unit of work commits the counted try.
    `final`: the registration is over (removed) and the person should sign in instead.
    """

    patient: Patient | None = None
    error: str | None = None
    final: bool = False


# --- codes ---------------------------------------------------------------------------------


def _config(name: str) -> int:
    return int(current_app.config[name])


def new_code() -> str:
    return f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"


def code_hash(pending_id: uuid.UUID, code: str) -> str:
    key = hmac.new(
        str(current_app.config["SECRET_KEY"]).encode(), b"oblako-registration-code", hashlib.sha256
    ).digest()
    return hmac.new(key, f"{pending_id}:{code}".encode(), hashlib.sha256).hexdigest()


def normalize_code(raw: str) -> str | None:
    """The code as typed, without spaces or dashes; None unless it is six digits."""
    code = "".join(ch for ch in (raw or "") if ch not in " -\u00a0")
    return code if len(code) == CODE_DIGITS and code.isascii() and code.isdigit() else None


# --- SMS texts (Russian at delivery; never a diagnosis) ------------------------------------


def code_text(code: str) -> str:
    # One SMS segment (70 Cyrillic characters); the page says how long the code lasts.
    return _("Health Cloud: code %(code)s for registration. Do not tell it to anyone.", code=code)


def taken_notice_text(sign_in_url: str) -> str:
    return _(
        "Health Cloud: someone tried to register with your number. You already have an account: "
        "sign in at %(url)s with this number. Forgot the password? Contact the project manager. "
        "If it was not you, no action is needed.",
        url=sign_in_url,
    )


def email_notice_text(sign_in_url: str) -> str:
    return _(
        "Someone has just registered at Health Cloud giving this e-mail address. It already "
        "belongs to another account, so it was not added to the new one. If it was you, sign in "
        "at %(url)s with your phone number. Otherwise no action is needed.",
        url=sign_in_url,
    )


def email_notice_subject() -> str:
    return _("Health Cloud: your e-mail address")


def _rendered(fn, *args) -> str:
    with force_locale(DELIVERY_LOCALE):
        return str(fn(*args))


# --- the steps -----------------------------------------------------------------------------


def _send(pending: PendingRegistration, *, sign_in_url: str, now: datetime) -> None:
    """A fresh code for the number, or the notice to its owner when it is already taken."""
    minutes = _config("REGISTRATION_CODE_MINUTES")
    code = new_code()  # drawn and hashed either way: the same work in both branches
    hashed = code_hash(pending.public_id, code)
    holders = phone_holders(pending.phone)
    taken = bool(holders)
    pending.code_hash = None if taken else hashed
    pending.code_expires_at = now + timedelta(minutes=minutes)
    pending.attempts = 0
    if taken:
        body = _rendered(taken_notice_text, sign_in_url)
        user_id = holders[0]
    else:
        body = _rendered(code_text, code)
        user_id = None
    queue_message(OutboundChannel.SMS, pending.phone, body, user_id=user_id)


def start_registration(
    reg: CheckedRegistration,
    password: str,
    *,
    ip: str,
    sign_in_url: str,
    now: datetime | None = None,
) -> uuid.UUID:
    """Keep the checked registration and send its SMS; returns the id the session keeps."""
    count_code_sent(phone=reg.phone, ip=ip)
    now = now or utcnow()
    pending = PendingRegistration(
        public_id=uuid.uuid4(),
        phone=reg.phone,
        data=reg.to_json(),
        password_hash=hash_password(password),
        attempts=0,
        created_at=now,
        code_expires_at=now,
        expires_at=now + timedelta(minutes=_config("REGISTRATION_PENDING_MINUTES")),
    )
    db.session.add(pending)
    _send(pending, sign_in_url=sign_in_url, now=now)
    return pending.public_id


def find_pending(pending_id: str | None, *, now: datetime | None = None) -> PendingRegistration:
    """The registration waiting under this id, or PendingGone."""
    try:
        public_id = uuid.UUID(str(pending_id))
    except ValueError:
        raise PendingGone() from None
    pending = db.session.execute(
        select(PendingRegistration).where(PendingRegistration.public_id == public_id)
    ).scalar_one_or_none()
    if pending is None or pending.expires_at <= (now or utcnow()):
        raise PendingGone()
    return pending


def resend_code(
    pending_id: str | None, *, ip: str, sign_in_url: str, now: datetime | None = None
) -> None:
    """«Send the code again»: a new code (the old one stops working) and a fresh count of tries."""
    now = now or utcnow()
    pending = find_pending(pending_id, now=now)
    count_code_sent(phone=pending.phone, ip=ip, pending_id=pending.public_id)
    _send(pending, sign_in_url=sign_in_url, now=now)


def confirm_registration(
    pending_id: str | None,
    raw_code: str,
    *,
    ip: str,
    sign_in_url: str,
    now: datetime | None = None,
) -> Confirmation:
    """Check the typed code; the right one within its lifetime creates the account.

    Raises PendingGone when nothing waits under the id. Every well-formed try is counted before
    the comparison, by an UPDATE that refuses past the limit, so parallel guesses cannot get
    more tries than allowed.
    """
    now = now or utcnow()
    pending = find_pending(pending_id, now=now)
    limit = _config("REGISTRATION_CODE_ATTEMPTS")
    code = normalize_code(raw_code)
    if code is None:
        return Confirmation(error=str(_l("Enter the 6-digit code from the SMS.")))
    if pending.attempts >= limit:
        return Confirmation(error=str(VOID_MESSAGE))
    if pending.code_expires_at <= now:
        return Confirmation(error=str(_l("The code has expired. Request a new code.")))
    counted = db.session.execute(
        update(PendingRegistration)
        .where(PendingRegistration.id == pending.id, PendingRegistration.attempts < limit)
        .values(attempts=PendingRegistration.attempts + 1)
        .execution_options(synchronize_session=False)
    ).rowcount
    db.session.refresh(pending)
    if counted != 1:
        return Confirmation(error=str(VOID_MESSAGE))
    if pending.code_hash is None or not hmac.compare_digest(
        pending.code_hash, code_hash(pending.public_id, code)
    ):
        left = limit - pending.attempts
        if left <= 0:
            return Confirmation(error=str(VOID_MESSAGE))
        return Confirmation(error=_("Wrong code. Tries left: %(n)d.", n=left))
    reg = CheckedRegistration.from_json(pending.data)
    password_hash = pending.password_hash
    db.session.delete(pending)
    try:
        patient = create_registered_patient(reg, password_hash=password_hash, ip=ip)
    except RegistrationError as exc:
        return Confirmation(error=str(exc), final=True)
    if reg.email and patient.email != reg.email:
        # The e-mail is someone else's: left out silently here; its owner is told.
        queue_message(
            OutboundChannel.EMAIL,
            reg.email,
            _rendered(email_notice_text, sign_in_url),
            subject=_rendered(email_notice_subject),
            user_id=next(iter(email_holders(reg.email)), None),
        )
    return Confirmation(patient=patient)


def purge_expired_registrations(*, now: datetime | None = None) -> int:
    """Remove abandoned registrations (their data and password hash) once expired."""
    result = db.session.execute(
        delete(PendingRegistration)
        .where(PendingRegistration.expires_at <= (now or utcnow()))
        .execution_options(synchronize_session=False)
    )
    return result.rowcount or 0
