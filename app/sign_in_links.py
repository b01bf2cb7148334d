"""One-time sign-in links: the referral invitation SMS gets the patient in with one tap.

A link is minted with a one-time password (app/otp.py), for the same account, and lives as long
as that password: it signs the account in once, until the password's expiry, and only while that
password is still the account's — a newer one (the manager's «send again») or the patient's own
password retires it. Only the SHA-256 of the link's secret is stored (128 random bits, so a fast
hash is enough). Opening and using a link pass the sign-in throttle (app/throttle.py): a link
of a throttled account or from a throttled address is refused, and an unknown link counts as a
failed sign-in of the client address.

Opening the link (GET) only checks it: an SMS app or a security scanner that fetches the address
must not spend it. The page's button (POST) signs in.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import datetime
from urllib.parse import urljoin

from flask import current_app
from flask_babel import lazy_gettext as _l
from sqlalchemy import select, update

from app.audit import audit
from app.errors import DomainError
from app.extensions import db
from app.throttle import get_throttle
from models import OblakoUser, SignInLink, utcnow

TOKEN_BYTES = 16  # 128 bits: 22 characters of the SMS
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")

INVALID = _l(
    "This sign-in link does not work. Check that the whole link from the SMS was opened, or "
    "sign in with the phone and the password from the SMS."
)
USED = _l(
    "This sign-in link has already been used. Sign in with your phone and password, or ask the "
    "project manager to send a new SMS."
)
EXPIRED = _l("This sign-in link has expired. Contact the project manager.")
REPLACED = _l("This sign-in link has been replaced by a newer one: open the link in the last SMS.")
OWN_PASSWORD = _l("You have already chosen your own password: sign in with your phone and it.")
OTHER_ACCOUNT = _l(
    "This sign-in link is for another person. Sign out first, then open the link again."
)
THROTTLED = _l("Too many sign-in attempts. Try again in 15 minutes.")


class SignInLinkError(DomainError):
    """A link that does not sign in; `status` is the page's HTTP status."""

    def __init__(self, message, status: int = 410) -> None:
        super().__init__(str(message))
        self.status = status


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_link(user_id: int, expires_at: datetime, *, now: datetime | None = None):
    """(secret, row values) of a new link for a bulk INSERT (the referral import)."""
    token = secrets.token_urlsafe(TOKEN_BYTES)
    values = {
        "user_id": user_id,
        "token_hash": hash_token(token),
        "created_at": now or utcnow(),
        "expires_at": expires_at,
    }
    return token, values


def issue_sign_in_link(user: OblakoUser, *, now: datetime | None = None) -> str:
    """A link for the user's current one-time password (issue that first); returns its secret,
    the only time it is in clear. No commit."""
    if not user.must_change_password or user.password_expires_at is None:
        raise ValueError("a sign-in link goes with a one-time password")
    token, values = new_link(user.id, user.password_expires_at, now=now)
    db.session.add(SignInLink(**values))
    return token


def link_url(sign_in_url: str, token: str) -> str:
    """The link's address on the site whose sign-in page is `sign_in_url` (a message's)."""
    # Paths from the URL map itself: the worker sends these messages outside any request,
    # where url_for has no host to build with (and no SERVER_NAME in production).
    paths = current_app.url_map.bind("localhost")
    login_path = paths.build(f"{current_app.appbuilder.sm.auth_view.endpoint}.login")
    if sign_in_url.endswith(login_path):
        root = sign_in_url.removesuffix(login_path)
    else:
        root = urljoin(sign_in_url, "/")
    # The route's address with a stand-in secret, cut off: token "" gives the prefix alone,
    # to which the importer appends each patient's secret.
    prefix = paths.build("SignInLinkView.open", {"token": "_"}).removesuffix("_")
    return f"{root.rstrip('/')}{prefix}{token}"


def _find(token: str) -> SignInLink | None:
    if not token or not _TOKEN_RE.match(token):
        return None
    return db.session.execute(
        select(SignInLink).where(SignInLink.token_hash == hash_token(token))
    ).scalar_one_or_none()


def _refusal(link: SignInLink | None, user: OblakoUser | None, now: datetime):
    """Why the link does not sign in now, or None when it does."""
    if link is None or user is None or not user.is_active:
        return SignInLinkError(INVALID, 404)
    if link.used_at is not None:
        return SignInLinkError(USED)
    if link.expires_at <= now:
        return SignInLinkError(EXPIRED)
    if not user.must_change_password:
        return SignInLinkError(OWN_PASSWORD)
    if user.password_expires_at != link.expires_at:
        return SignInLinkError(REPLACED)
    return None


def check_link(
    token: str, *, ip: str, signed_in: OblakoUser | None = None, now: datetime | None = None
) -> OblakoUser:
    """The account the link signs in, or SignInLinkError (a failure for the throttle).

    `signed_in`: the person already signed in in this browser, if any — a link of another
    account is refused rather than switching accounts under them; her own link (used or not)
    is simply her account again.
    """
    now = now or utcnow()
    throttle = get_throttle()
    link = _find(token)
    user = db.session.get(OblakoUser, link.user_id) if link is not None else None
    username = user.username if user is not None else None
    if not throttle.allowed(username, ip):
        raise SignInLinkError(THROTTLED, 429)
    if signed_in is not None and user is not None:
        if signed_in.id == user.id:
            return user  # her own link again: she is in already, nothing to check or spend
        # Not a guess (the link is real): refused without counting against her account.
        raise SignInLinkError(OTHER_ACCOUNT, 403)
    refusal = _refusal(link, user, now)
    if refusal is not None:
        if refusal.status == 404:
            # A guess: counted as a failed sign-in. A real link that is spent, expired or
            # replaced is no guess (an SMS app fetching it again must not lock her out).
            throttle.failed(username, ip)
        raise refusal
    return user


def redeem_link(
    token: str, *, ip: str, signed_in: OblakoUser | None = None, now: datetime | None = None
) -> OblakoUser:
    """Spend the link (once: of two uses at the same moment one wins) and return its account,
    whom the caller signs in. No commit."""
    now = now or utcnow()
    user = check_link(token, ip=ip, signed_in=signed_in, now=now)
    if signed_in is not None:
        return user
    spent = db.session.execute(
        update(SignInLink)
        .where(SignInLink.token_hash == hash_token(token), SignInLink.used_at.is_(None))
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount
    if spent != 1:  # spent by a use at the same moment
        raise SignInLinkError(USED)
    audit("user.sign_in_link", actor=user, obj_type="user", obj_id=user.id)
    return user
