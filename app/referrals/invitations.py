"""What the referral pathway tells a patient: the invitation SMS with a one-time sign-in link and
password (never a diagnosis), the notice of a new referral to a patient who already has an
account, and the manager's "send the credentials again"."""

from __future__ import annotations

import uuid

from flask_babel import force_locale
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from sqlalchemy import func, select

from app.accounts import LOGIN_LABEL, PASSWORD_LABEL, public_sign_in_url
from app.audit import audit
from app.consultations import PATIENT_LINK
from app.extensions import db
from app.notifications import notify, queue_message
from app.referrals.common import ReferralError, chunks
from app.sign_in_links import issue_sign_in_link, link_url
from models import OblakoUser, OutboundChannel, OutboundMessage, Patient, PatientSource, utcnow


def invitation_format() -> str:
    """The invitation SMS in Russian, its %(link)s, %(url)s, %(login)s and %(password)s still to
    fill: service, the one-time sign-in link, the sign-in page with the login and password for
    typing (labelled as the sign-in form labels them: app.accounts) — never a diagnosis. A bulk
    import translates it once (switching the locale costs more than the rest of a row's SMS)
    and fills it per row."""
    with force_locale("ru"):
        text = _(
            "Health Cloud: you are invited to an online consultation.\n"
            "Sign in with one tap: %(link)s\n"
            "Or at %(url)s\n"
            "%(login_label)s: %(login)s\n"
            "%(password_label)s: %(password)s\n"
            "The link and the password are valid for 7 days."
        )
        labels = {"%(login_label)s": str(LOGIN_LABEL), "%(password_label)s": str(PASSWORD_LABEL)}
    for placeholder, label in labels.items():
        text = text.replace(placeholder, label)
    return text


def invitation_text(*, link: str, sign_in_url: str, login: str, password: str) -> str:
    return invitation_format() % {
        "link": link,
        "url": sign_in_url,
        "login": login,
        "password": password,
    }


def invite_dedupe_key(patient: Patient, file_sha256: str) -> str:
    return f"referral-invite:{patient.public_id}:{file_sha256}"


def referral_notice_text(*, sign_in_url: str) -> str:
    """What a patient who already has an account is told of a new referral: no credentials
    (they have them), never a diagnosis (the text goes out by SMS too)."""
    return _(
        "Health Cloud: you have a new referral for an online consultation. Sign in at %(url)s "
        "with your login and password and upload your medical documents.",
        url=sign_in_url,
    )


def notify_linked(
    user: OblakoUser, patient: Patient, consultation_public_id: uuid.UUID, sign_in_url: str
) -> None:
    """A registered patient linked to a row that opened a new referral consultation: a cabinet
    notification and, where they opted in, an SMS / e-mail through the outbox (notify())."""
    notify(
        user,
        "referral_received",
        lambda: referral_notice_text(sign_in_url=sign_in_url),
        link=PATIENT_LINK.format(consultation_public_id),
        # One message per new consultation: its public_id is new in this transaction.
        dedupe_key=f"referral-new:{consultation_public_id}",
        new_dedupe_key=True,
        patient=patient,
    )


def invited_by(patient_ids_keys: dict[str, int]) -> set[int]:
    """Of the patients keyed by their invitation's dedupe key, those invited by this file:
    the import created them (they are not "already registered"). One IN query per 500."""
    found: set[int] = set()
    for chunk in chunks(sorted(patient_ids_keys)):
        for key in db.session.execute(
            select(OutboundMessage.dedupe_key).where(OutboundMessage.dedupe_key.in_(chunk))
        ).scalars():
            found.add(patient_ids_keys[key])
    return found


def issue_password(user: OblakoUser) -> str:
    from app.otp import issue_one_time_password  # the sign-in part's module (fast hash, 7 days)

    return issue_one_time_password(user)


def resend_credentials(patient: Patient, *, by, sign_in_url: str | None = None) -> None:
    """A new one-time password (the old one stops working) and a new SMS. No commit."""
    if patient.source != PatientSource.REFERRAL:
        raise ReferralError(_l("Credentials are only sent to patients invited by a referral."))
    password = issue_password(patient.user)
    patient.user.session_generation = (patient.user.session_generation or 0) + 1
    # The link goes with this password: the previous SMS's link and password stop working.
    token = issue_sign_in_link(patient.user)
    sign_in_url = sign_in_url or public_sign_in_url()
    sent_before = db.session.execute(
        select(func.count())
        .select_from(OutboundMessage)
        .where(OutboundMessage.dedupe_key.like(f"referral-resend:{patient.public_id}:%"))
    ).scalar_one()
    queue_message(
        OutboundChannel.SMS,
        patient.phone,
        invitation_text(
            link=link_url(sign_in_url, token),
            sign_in_url=sign_in_url,
            login=patient.phone,
            password=password,
        ),
        user_id=patient.user_id,
        dedupe_key=f"referral-resend:{patient.public_id}:{sent_before + 1}:"
        f"{int(utcnow().timestamp())}",
    )
    audit(
        "patient.credentials_resend",
        actor=by,
        obj_type="patient",
        obj_id=patient.public_id,
        patient_id=patient.id,
    )
