"""One-time passwords for accounts someone else created (the referral import, credential resend).

The password is 12 characters from a 55-symbol alphabet (about 69 bits, app.passwords), so it
needs no slow hash: it is stored as a salted PBKDF2-SHA256 with a single iteration, a format
Werkzeug's check_password_hash (and so Flask-AppBuilder's sign-in) verifies. A 10,000-row import
pays microseconds per row instead of scrypt's ~0.1 s (DESIGN §5).

Issuing sets must_change_password and an expiry (ONE_TIME_PASSWORD_DAYS, 7 by default), and
revokes the user's sessions and API tokens; issuing again replaces the previous password.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from flask import current_app, has_app_context
from flask_babel import lazy_gettext as _l
from werkzeug.security import check_password_hash, generate_password_hash

from app.errors import DomainError
from app.passwords import generate_one_time_password
from models import OblakoUser, utcnow

# "pbkdf2:sha256:1$<salt>$<hex>": Werkzeug's own format, one iteration, 16-character salt.
OTP_HASH_METHOD = "pbkdf2:sha256:1"
OTP_SALT_LENGTH = 16
DEFAULT_DAYS = 7

EXPIRED_MESSAGE = _l("The password has expired. Contact the project manager.")


class OneTimePasswordExpired(DomainError):
    """The one-time password is right but its time is over."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or str(EXPIRED_MESSAGE))


def _days() -> int:
    if has_app_context():
        return int(current_app.config.get("ONE_TIME_PASSWORD_DAYS", DEFAULT_DAYS))
    return DEFAULT_DAYS


def hash_one_time_password(password: str) -> str:
    return generate_password_hash(password, method=OTP_HASH_METHOD, salt_length=OTP_SALT_LENGTH)


def new_one_time_password(*, now: datetime | None = None) -> tuple[str, str, datetime]:
    """(password, hash, expires_at) for an account not written yet: the caller sets them on the
    new user with must_change_password, so that no second UPDATE follows the INSERT."""
    password = generate_one_time_password()
    expires_at = (now or utcnow()) + timedelta(days=_days())
    return password, hash_one_time_password(password), expires_at


def issue_one_time_password(user: OblakoUser, *, now: datetime | None = None) -> str:
    """Give the user a fresh one-time password and return it (the only time it is in clear).

    The caller commits (and sends the SMS). The previous password, one-time or not, stops
    working, and so do the user's sessions and API tokens.
    """
    password = generate_one_time_password()
    user.password = hash_one_time_password(password)
    user.must_change_password = True
    user.password_expires_at = (now or utcnow()) + timedelta(days=_days())
    user.session_generation = (user.session_generation or 0) + 1
    return password


def one_time_password_expired(user: OblakoUser, *, now: datetime | None = None) -> bool:
    """True for a user still on an issued password whose expiry has passed."""
    expires = user.password_expires_at
    return bool(user.must_change_password and expires is not None and expires <= (now or utcnow()))


def check_one_time_password(
    user: OblakoUser, password: str, *, now: datetime | None = None
) -> bool:
    """Whether the password is the user's; a right but expired one raises OneTimePasswordExpired.

    The expiry is told only to someone who knows the password, so it reveals nothing about
    which accounts exist.
    """
    if not user.password or not password or not check_password_hash(user.password, password):
        return False
    if one_time_password_expired(user, now=now):
        raise OneTimePasswordExpired()
    return True
