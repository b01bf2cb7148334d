"""E-mail addresses: the one check of an address, and the one answer to "is it already used".

- normalize_email(): email-validator (syntax only, no DNS look-up), then lower case; empty
  input is None. Registration, the profile, staff-created accounts and the referral import all
  call it, so an address one path accepts is accepted by every other.
- email_holders() / email_taken() / emails_in_use(): an address is used when a patient record
  or any account (staff included) holds it, whatever its case. One query shape for one address
  and for an import's thousands (IN lists of CHUNK); the accounts' side is the expression that
  ix_ab_user_email_lower indexes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from email_validator import EmailNotValidError, validate_email
from flask_babel import lazy_gettext as _l
from sqlalchemy import CompoundSelect, func, select, union

from app.errors import DomainError
from app.extensions import db
from models import OblakoUser, Patient

CHUNK = 500  # addresses per IN list: well under every database's parameter limit

INVALID_EMAIL = _l("Enter a valid e-mail address.")


class InvalidEmail(DomainError):
    """The text is not an e-mail address; str() is shown to the user."""


def normalize_email(raw: str | None) -> str | None:
    """The address as stored (normalised, lower case), None when empty; InvalidEmail if bad."""
    raw = (raw or "").strip()
    if not raw:
        return None
    try:
        return validate_email(raw, check_deliverability=False).normalized.lower()
    except EmailNotValidError as exc:
        raise InvalidEmail(INVALID_EMAIL) from exc


def email_holders_query(emails: Sequence[str]) -> CompoundSelect:
    """(user id, lower-case e-mail) of every patient or account holding one of `emails`
    (given lower case)."""
    in_patients = select(Patient.user_id, func.lower(Patient.email)).where(
        func.lower(Patient.email).in_(emails)
    )
    in_users = select(OblakoUser.id, func.lower(OblakoUser.email)).where(
        func.lower(OblakoUser.email).in_(emails)
    )
    return union(in_patients, in_users)


def email_holders(email: str) -> list[int]:
    """The users holding a (normalised, lower-case) e-mail, as a patient or as an account."""
    rows = db.session.execute(email_holders_query([email.lower()])).all()
    return sorted({user_id for user_id, _address in rows})


def email_taken(email: str, *, own_user_id: int | None = None) -> bool:
    """Whether a (normalised) e-mail is held by anyone but `own_user_id`."""
    return any(user_id != own_user_id for user_id in email_holders(email))


def emails_in_use(emails: Iterable[str]) -> set[str]:
    """Which of these e-mails are held by anyone (lower case): a few IN queries, not one each."""
    wanted = sorted({e.lower() for e in emails if e})
    found: set[str] = set()
    for start in range(0, len(wanted), CHUNK):
        rows = db.session.execute(email_holders_query(wanted[start : start + CHUNK])).all()
        found.update(address for _user_id, address in rows)
    return found
