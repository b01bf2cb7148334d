"""Password policy, applied on every path that sets a password."""

from __future__ import annotations

import re
import secrets

from flask import current_app
from flask_appbuilder.exceptions import PasswordComplexityValidationError
from flask_babel import lazy_gettext as _l

from app.errors import DomainError

# A short list of the passwords people pick first; the length and class rules catch the rest.
_COMMON = {
    "password",
    "password1",
    "qwerty123",
    "12345678",
    "123456789",
    "1234567890",
    "qwertyui",
    "11111111",
    "00000000",
    "iloveyou",
    "admin123",
    "parol123",
    "пароль123",
    "йцукенгш",
}

# One-time passwords are read off an SMS and typed on a phone, often by older people: small
# letters and digits only (no Shift), and no character one mistakes for another — 0/o/O,
# 1/l/i/I, and of 2/z, 5/s, 6/b, 9/g/q, u/v the letter. 25 symbols, about 4.6 bits each.
OTP_LOOK_ALIKES = frozenset("0oO1lIi" + "zZsSbBgqGQuU")
_OTP_ALPHABET = "acdefhjkmnprtvwxy" + "23456789"


class PasswordPolicyError(DomainError):
    pass


def check_password(password: str, *, personal: tuple[str, ...] = ()) -> None:
    """Raise PasswordPolicyError with a translated message when the password is too weak."""
    min_length = current_app.config.get("PASSWORD_MIN_LENGTH", 8)
    if len(password) < min_length:
        raise PasswordPolicyError(
            _l("The password must be at least %(n)d characters long.", n=min_length)
        )
    if len(password) > 128:
        raise PasswordPolicyError(_l("The password must be at most 128 characters long."))
    if not re.search(r"[^\W\d_]", password) or not re.search(r"\d", password):
        raise PasswordPolicyError(_l("The password must contain both letters and digits."))
    lowered = password.lower()
    if lowered in _COMMON or len(set(lowered)) < 4:
        raise PasswordPolicyError(_l("This password is too easy to guess."))
    for item in personal:
        item = (item or "").lower().strip()
        if len(item) >= 4 and item in lowered:
            raise PasswordPolicyError(
                _l("The password must not contain your name, phone or e-mail.")
            )


def fab_password_validator(password: str) -> None:
    """The same policy for Flask-AppBuilder's own user screens."""
    try:
        check_password(password)
    except PasswordPolicyError as exc:
        raise PasswordComplexityValidationError(str(exc)) from exc


def generate_one_time_password(length: int = 14) -> str:
    """14 characters from a 25-symbol alphabet: about 65 bits of entropy (the draws without a
    letter or without a digit, redrawn so that it meets the policy's classes, are a tiny
    fraction of them)."""
    while True:
        password = "".join(secrets.choice(_OTP_ALPHABET) for _ in range(length))
        if re.search(r"\d", password) and re.search(r"[a-z]", password):
            return password
