"""Telling people what happened: a cabinet notification, plus SMS / e-mail through the outbox.

Every transition of a consultation calls notify() for each person concerned. The text is
rendered in Russian (the service's language; the recipient reads it later, outside any request
of theirs) and the SMS / e-mail are rows of the outbox table, delivered by the outbox worker
(app/outbox.py) — never sent from the request that caused them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask_babel import force_locale
from sqlalchemy import select

from app.extensions import db
from models import (
    Doctor,
    Notification,
    OblakoUser,
    OutboundChannel,
    OutboundMessage,
    OutboundStatus,
    Patient,
)

# notify(patient=...) default: look the recipient's Patient row up (opt-ins, phone, e-mail).
LOOKUP = object()
SMS_MAX_CHARS = 335  # five GSM-7 segments or five UCS-2 segments at most; Cyrillic is UCS-2
DELIVERY_LOCALE = "ru"


def _render(text: str | Callable[[], str]) -> str:
    with force_locale(DELIVERY_LOCALE):
        return str(text() if callable(text) else text)


def notify(
    user: OblakoUser,
    kind: str,
    text: str | Callable[[], str],
    *,
    link: str = "",
    sms: bool = True,
    email: bool = True,
    dedupe_key: str | None = None,
    new_dedupe_key: bool = False,
    patient: Patient | object | None = LOOKUP,
) -> Notification:
    """Notify a user in the cabinet and, where they opted in, by SMS and e-mail.

    `text` may be a lazy string or a callable returning one, so it is rendered in the delivery
    locale. `dedupe_key` makes the outbox rows idempotent (reminders, re-imports): a second
    call with the same key queues nothing new. `new_dedupe_key`: the key names something created
    in this very transaction (a new public_id), so nothing can have queued it yet and the
    look-up is skipped; the unique index on the key still refuses a duplicate.

    `patient`: the user's Patient row when the caller already has it (None: the user is not a
    patient), so that it is not selected again; by default it is looked up.
    """
    if patient is LOOKUP:
        patient = db.session.execute(
            select(Patient).where(Patient.user_id == user.id)
        ).scalar_one_or_none()
    values, messages = notification_values(
        user.id,
        user.email,
        kind,
        text,
        link=link,
        sms=sms,
        email=email,
        dedupe_key=dedupe_key,
        patient=patient,
    )
    notification = Notification(**values)
    db.session.add(notification)
    for message in messages:
        queue_message(**message, new_dedupe_key=new_dedupe_key)
    return notification


def notification_values(
    user_id: int,
    user_email: str | None,
    kind: str,
    text: str | Callable[[], str],
    *,
    link: str = "",
    sms: bool = True,
    email: bool = True,
    dedupe_key: str | None = None,
    patient: Any = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """What notify() writes, as values: the notification's columns and the queue_message()
    arguments of each outbox message (see outbox_values()). One definition of who gets what.

    `patient`: the user's Patient row or anything with its notify_sms, notify_email, phone and
    email (None: the user is not a patient).
    """
    body = _render(text)
    values = {"user_id": user_id, "kind": kind, "text": body, "link": link}
    wants_sms = sms and (patient.notify_sms if patient else False)
    wants_email = email and (patient.notify_email if patient else True)
    phone = patient.phone if patient else None
    address = (patient.email if patient else None) or _real_email(user_email)
    messages: list[dict[str, Any]] = []
    if wants_sms and phone:
        messages.append(
            {
                "channel": OutboundChannel.SMS,
                "recipient": phone,
                "body": _sms_text(body),
                "user_id": user_id,
                "dedupe_key": f"{dedupe_key}:sms" if dedupe_key else None,
            }
        )
    if wants_email and address:
        messages.append(
            {
                "channel": OutboundChannel.EMAIL,
                "recipient": address,
                "body": body,
                "subject": _render(_subject),
                "user_id": user_id,
                "dedupe_key": f"{dedupe_key}:email" if dedupe_key else None,
            }
        )
    return values, messages


def _subject() -> str:
    from flask_babel import gettext

    return gettext("Health Cloud: notification")


def _real_email(address: str | None) -> str | None:
    # Accounts without an e-mail carry a placeholder on the reserved .invalid domain.
    if not address or address.endswith(".invalid"):
        return None
    return address


def _sms_text(body: str) -> str:
    return body if len(body) <= SMS_MAX_CHARS else body[: SMS_MAX_CHARS - 1] + "…"


def outbox_values(
    channel: OutboundChannel,
    recipient: str,
    body: str,
    *,
    subject: str = "",
    user_id: int | None = None,
    dedupe_key: str | None = None,
) -> dict[str, Any]:
    """The columns of one queued outbox message: the one definition queue_message() and bulk
    inserts (the referral import) share."""
    return {
        "channel": channel,
        "recipient": recipient,
        "subject": subject,
        "body": body,
        "user_id": user_id,
        "dedupe_key": dedupe_key,
        "status": OutboundStatus.QUEUED,
    }


def queue_message(
    channel: OutboundChannel,
    recipient: str,
    body: str,
    *,
    subject: str = "",
    user_id: int | None = None,
    dedupe_key: str | None = None,
    new_dedupe_key: bool = False,
) -> OutboundMessage | None:
    """Add a message to the outbox; with a dedupe_key already queued, add nothing.

    `new_dedupe_key`: the caller knows the key cannot be queued yet (see notify()).
    """
    if dedupe_key is not None and not new_dedupe_key:
        existing = db.session.execute(
            select(OutboundMessage.id).where(OutboundMessage.dedupe_key == dedupe_key)
        ).first()
        if existing is not None:
            return None
    message = OutboundMessage(
        **outbox_values(
            channel, recipient, body, subject=subject, user_id=user_id, dedupe_key=dedupe_key
        )
    )
    db.session.add(message)
    return message


def doctor_user(doctor: Doctor | None) -> OblakoUser | None:
    return doctor.user if doctor is not None else None
