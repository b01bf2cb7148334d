"""The consultation room as the web app sees it: who may join, with what grant, and the chat.

The media server (media_server/) trusts only the join token minted here (app/media_tokens.py);
every rule about *who* may enter *which* room and *when* lives in this module:

- the patient who owns the consultation joins as `patient`;
- the consultation's doctor joins as `doctor`, and so does, for an application to a centre,
  any doctor of that centre (the same scope as app.consultations.consultation_for_staff, minus
  the Admin's read-everything: an administrator is not a participant);
- a third participant (colleague, interpreter, relative) joins as `guest` through a one-time
  link the doctor creates (MediaInvite; only the SHA-256 of the link's secret is stored).

`media` (may enter the video room now): the consultation is in a room status (scheduled or in
progress, models.ROOM_STATUSES) and now is between MEDIA_ROOM_OPENS_MINUTES before its start
and ROOM_GRACE after its end.
`chat` (may write now): a duty booking that is scheduled (the patient may ask the duty doctor
beforehand, as the service promises), or any consultation in progress; for a guest only the
latter ("during the consultation all participants chat"), and the media server lets a guest
write only once the doctor has admitted them to the call. Both chat rules are models.py's
(Consultation.chat_open, .guest_chat_open), shared with the media server.

Services here never touch request, g or flash: the acting user and the moment come in as
arguments; refusals are DomainErrors with a translatable message; nothing commits.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from flask import current_app
from flask_babel import lazy_gettext as _l
from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import joinedload

from app import turn
from app.audit import audit_consultation
from app.consultations import active_doctor
from app.errors import DomainError, NotFound
from app.extensions import db
from app.media_tokens import JoinGrant, mint_join_token
from app.permissions import DOCTOR, DUTY_DOCTOR, PATIENT
from app.roles import role_names
from models import (
    ROOM_STATUSES,
    ChatMessage,
    ChatRead,
    Consultation,
    Doctor,
    MediaInvite,
    OblakoUser,
    people_names,
    utcnow,
)

# How long after its planned end a consultation's room stays open: calls overrun, and a doctor
# who started late must not be cut off mid-sentence.
ROOM_GRACE = timedelta(minutes=60)
# The chat history rendered with a page (the media server replays anything newer on connect).
HISTORY_LIMIT = 500
GUEST_NAME_MAX = 120
# At most this many unused, unrevoked invites per consultation: a link is a key to the room.
MAX_OPEN_INVITES = 5
INVITE_SECRET_BYTES = 32  # 256 bits, URL-safe base64 in the link

GUEST_ROLES: dict[str, object] = {
    "colleague": _l("Colleague"),
    "interpreter": _l("Interpreter"),
    "relative": _l("Relative"),
}
ROLE_LABELS: dict[str, object] = {
    "patient": _l("Patient"),
    "doctor": _l("Doctor"),
    "guest": _l("Guest"),
}


class MediaError(DomainError):
    """The room or the invite refused the action (shown to the user, 400/403)."""


class InviteUnavailable(MediaError):
    """The invite link is unknown, used, revoked or expired (404 for the visitor)."""


# ---------------------------------------------------------------------------------------------
# Time windows
# ---------------------------------------------------------------------------------------------


def opens_minutes() -> int:
    return int(current_app.config.get("MEDIA_ROOM_OPENS_MINUTES", 15))


def room_opens_at(c: Consultation) -> datetime | None:
    if c.scheduled_at is None:
        return None
    return c.scheduled_at - timedelta(minutes=opens_minutes())


def room_closes_at(c: Consultation) -> datetime | None:
    """The planned end (from the actual start when it began late) plus the grace period."""
    if c.scheduled_at is None:
        return None
    start = max(c.scheduled_at, c.started_at) if c.started_at else c.scheduled_at
    return start + timedelta(minutes=c.duration_minutes) + ROOM_GRACE


def media_open(c: Consultation, now: datetime | None = None) -> bool:
    if c.status not in ROOM_STATUSES:
        return False
    opens, closes = room_opens_at(c), room_closes_at(c)
    if opens is None or closes is None:
        return False
    now = now or utcnow()
    return opens <= now < closes


def too_early(c: Consultation, now: datetime | None = None) -> bool:
    opens = room_opens_at(c)
    return c.status in ROOM_STATUSES and opens is not None and (now or utcnow()) < opens


# ---------------------------------------------------------------------------------------------
# Who may join
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Participation:
    """One person's place in one consultation's room, at one moment."""

    consultation: Consultation
    role: str  # patient | doctor | guest
    user_id: int | None
    name: str
    media: bool
    chat: bool
    invite_id: int | None = None
    timezone: str | None = None  # the participant's own zone (None: the viewer's default)
    session_generation: int | None = None  # the user's, at the time of this request

    @property
    def is_doctor(self) -> bool:
        return self.role == "doctor"

    @property
    def too_early(self) -> bool:
        return too_early(self.consultation)

    @property
    def opens_at(self) -> datetime | None:
        return room_opens_at(self.consultation)

    def grant(self) -> JoinGrant:
        c = self.consultation
        return JoinGrant(
            user_id=self.user_id,
            consultation_id=c.id,
            consultation_public_id=c.public_id,
            role=self.role,
            name=self.name,
            media=self.media,
            chat=self.chat,
            invite_id=self.invite_id,
            session_generation=self.session_generation,
        )


def _consultation(public_id: uuid.UUID) -> Consultation | None:
    return db.session.execute(
        select(Consultation)
        .options(joinedload(Consultation.patient), joinedload(Consultation.doctor))
        .where(Consultation.public_id == public_id)
    ).scalar_one_or_none()


def doctor_may_join(user, doctor: Doctor | None, c: Consultation) -> bool:
    """The consultation's own doctor, or (Doctor role) a doctor of the centre it went to."""
    if doctor is None or not doctor.active:
        return False
    roles = role_names(user)
    if not {DOCTOR, DUTY_DOCTOR} & roles:
        return False
    if c.doctor_id is not None and c.doctor_id == doctor.id:
        return True
    return (
        DOCTOR in roles
        and doctor.center_id is not None
        and c.center_id is not None
        and doctor.center_id == c.center_id
    )


def participation(user, public_id: uuid.UUID, *, now: datetime | None = None) -> Participation:
    """The user's place in the consultation's room; NotFound for anyone who has none."""
    c = _consultation(public_id)
    if c is None or user is None or not getattr(user, "is_authenticated", False):
        raise NotFound(_l("Consultation not found."))
    media, chat = media_open(c, now), c.chat_open
    # The generation the request's session was checked against (app/security.load_user): the
    # token dies with this session.
    gen = user.session_generation
    if PATIENT in role_names(user) and c.patient.user_id == user.id:
        return Participation(
            c,
            "patient",
            user.id,
            c.patient.full_name,
            media,
            chat,
            timezone=c.patient.timezone,
            session_generation=gen,
        )
    doctor = active_doctor(user)
    if doctor_may_join(user, doctor, c):
        return Participation(
            c,
            "doctor",
            user.id,
            doctor.full_name,
            media,
            chat,
            timezone=doctor.timezone,
            session_generation=gen,
        )
    raise NotFound(_l("Consultation not found."))


def token_for(p: Participation, *, url: str, now: datetime | None = None):
    """What GET /media/token answers: the signed token, where to connect, and the ICE servers
    with a TURN credential of this join (app/turn.py)."""
    ttl = int(current_app.config["MEDIA_TOKEN_TTL_SECONDS"])
    who = f"{p.consultation.public_id}-{p.role}"
    return {
        "token": mint_join_token(p.grant(), now=now),
        "url": url,
        **turn.ice_config(current_app.config, who, now=now),
        "expires_in": ttl,
        # Not part of the token's contract, a hint for the page: what the token allows.
        "media": p.media,
        "chat": p.chat,
        "role": p.role,
        "status": p.consultation.status,
    }


def media_url(config: Mapping, *, scheme: str, host: str) -> str:
    """Where the browser reaches the media server: MEDIA_PUBLIC_URL, else the page's host on
    MEDIA_PORT (the embedded default: both processes on one machine)."""
    public = str(config.get("MEDIA_PUBLIC_URL") or "").rstrip("/")
    if public:
        return public
    hostname = urlsplit(f"//{host}").hostname or "localhost"
    if ":" in hostname:  # an IPv6 literal
        hostname = f"[{hostname}]"
    return f"{scheme}://{hostname}:{int(config['MEDIA_PORT'])}"


def connect_sources(config: Mapping, *, scheme: str, host: str) -> str:
    """The CSP connect-src for pages of this host: self and the media server (http + ws)."""
    base = media_url(config, scheme=scheme, host=host)
    parts = urlsplit(base)
    origin = f"{parts.scheme}://{parts.netloc}"
    ws_scheme = "wss" if parts.scheme == "https" else "ws"
    return f"'self' {origin} {ws_scheme}://{parts.netloc}"


# ---------------------------------------------------------------------------------------------
# Chat: history, unread counts, read marks
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChatLine:
    id: int
    client_msg_id: str
    author_id: int | None  # None: an invited guest wrote it (see invite_id)
    author_name: str
    author_role: str
    body: str
    created_at: datetime
    own: bool


def _author_role(msg: ChatMessage, patient_user_id: int | None) -> str:
    if msg.author_id is None:
        return "guest"
    return "patient" if msg.author_id == patient_user_id else "doctor"


def chat_history(
    c: Consultation,
    *,
    viewer_id: int | None,
    viewer_invite_id: int | None = None,
    limit: int = HISTORY_LIMIT,
) -> list[ChatLine]:
    """The latest `limit` messages, oldest first (one query). The author's name is the account's
    name (a guest's: the name on the invite) and the role is `patient` for the consultation's
    patient, `guest` for an invited guest, else `doctor`: the same as the media server sends
    live (docs/media-contract.md), so a page never shows one person twice."""
    stmt = (
        select(ChatMessage, OblakoUser.first_name, OblakoUser.last_name, MediaInvite.guest_name)
        .outerjoin(OblakoUser, OblakoUser.id == ChatMessage.author_id)
        .outerjoin(MediaInvite, MediaInvite.id == ChatMessage.invite_id)
        .where(ChatMessage.consultation_id == c.id)
        .order_by(ChatMessage.id.desc())
        .limit(limit)
    )
    patient_user_id = c.patient.user_id
    rows = db.session.execute(stmt).all()
    # People are named as everywhere else (models.person_name), the account's name only for
    # an author who is neither a patient nor a doctor.
    names = people_names(db.session, {msg.author_id for msg, *_ in rows if msg.author_id})
    lines = [
        ChatLine(
            id=msg.id,
            client_msg_id=msg.client_msg_id,
            author_id=msg.author_id,
            author_name=(
                guest_name
                if msg.author_id is None
                else names.get(msg.author_id) or " ".join(x for x in (first, last) if x)
            )
            or "",
            author_role=_author_role(msg, patient_user_id),
            body=msg.body,
            created_at=msg.created_at,
            own=(viewer_id is not None and msg.author_id == viewer_id)
            or (viewer_invite_id is not None and msg.invite_id == viewer_invite_id),
        )
        for msg, first, last, guest_name in rows
    ]
    lines.reverse()
    return lines


def unread_counts(user_id: int, consultation_ids: Iterable[int]) -> dict[int, int]:
    """Messages from others after the user's read mark, per consultation: one grouped query."""
    ids = sorted({int(i) for i in consultation_ids})
    if not ids:
        return {}
    stmt = (
        select(ChatMessage.consultation_id, func.count(ChatMessage.id))
        .outerjoin(
            ChatRead,
            and_(
                ChatRead.consultation_id == ChatMessage.consultation_id,
                ChatRead.user_id == user_id,
            ),
        )
        .where(
            ChatMessage.consultation_id.in_(ids),
            # A guest's line has no author account: it is someone else's, so it counts.
            or_(ChatMessage.author_id.is_(None), ChatMessage.author_id != user_id),
            ChatMessage.id > func.coalesce(ChatRead.last_read_id, 0),
        )
        .group_by(ChatMessage.consultation_id)
    )
    return {int(cid): int(n) for cid, n in db.session.execute(stmt)}


def mark_read(user_id: int, c: Consultation, up_to: int, *, now: datetime | None = None) -> int:
    """Move the user's read mark forward to `up_to` (never backwards, never past the last
    message of this consultation); returns the mark."""
    last = db.session.execute(
        select(func.max(ChatMessage.id)).where(ChatMessage.consultation_id == c.id)
    ).scalar()
    target = min(int(up_to), int(last or 0))
    now = now or utcnow()
    if target <= 0:
        return 0
    updated = db.session.execute(
        update(ChatRead)
        .where(
            ChatRead.user_id == user_id,
            ChatRead.consultation_id == c.id,
            ChatRead.last_read_id < target,
        )
        .values(last_read_id=target, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    if not updated.rowcount:
        exists = db.session.execute(
            select(ChatRead.last_read_id).where(
                ChatRead.user_id == user_id, ChatRead.consultation_id == c.id
            )
        ).scalar()
        if exists is not None:
            return int(exists)
        try:
            with db.session.begin_nested():  # the media server may insert the same mark now
                db.session.add(
                    ChatRead(
                        user_id=user_id, consultation_id=c.id, last_read_id=target, updated_at=now
                    )
                )
        except IntegrityError:
            return mark_read(user_id, c, up_to, now=now)
    return target


# ---------------------------------------------------------------------------------------------
# Invites: a one-time link for a third participant
# ---------------------------------------------------------------------------------------------


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def invite_expires_at(c: Consultation) -> datetime | None:
    return room_closes_at(c)


def open_invites(c: Consultation, *, now: datetime | None = None) -> list[MediaInvite]:
    """Invites of this consultation that can still be used or are in use (not revoked, not
    expired), newest first."""
    now = now or utcnow()
    stmt = (
        select(MediaInvite)
        .where(
            MediaInvite.consultation_id == c.id,
            MediaInvite.revoked_at.is_(None),
            MediaInvite.expires_at > now,
        )
        .order_by(MediaInvite.created_at.desc(), MediaInvite.id.desc())
    )
    return list(db.session.execute(stmt).scalars())


def create_invite(
    p: Participation, *, name: str, guest_role: str, now: datetime | None = None
) -> tuple[MediaInvite, str]:
    """The doctor invites a third participant; returns the invite and the link's secret (shown
    once, never stored)."""
    c = p.consultation
    if not p.is_doctor:
        raise MediaError(_l("Only the consultation's doctor can invite participants."))
    if c.status not in ROOM_STATUSES:
        raise MediaError(_l("Participants can be invited only to a scheduled consultation."))
    now = now or utcnow()
    expires = invite_expires_at(c)
    if expires is None or expires <= now:
        raise MediaError(_l("The consultation is over: participants can no longer be invited."))
    name = " ".join((name or "").split())
    if not name:
        raise MediaError(_l("Enter the participant's name."))
    if len(name) > GUEST_NAME_MAX:
        raise MediaError(_l("The name is too long: at most %(n)d characters.", n=GUEST_NAME_MAX))
    if guest_role not in GUEST_ROLES:
        raise MediaError(
            _l("Choose who the participant is: a colleague, an interpreter or a relative.")
        )
    unused = [i for i in open_invites(c, now=now) if i.used_at is None]
    if len(unused) >= MAX_OPEN_INVITES:
        raise MediaError(
            _l(
                "There are already %(n)d unused invitations: revoke one first.",
                n=MAX_OPEN_INVITES,
            )
        )
    secret = secrets.token_urlsafe(INVITE_SECRET_BYTES)
    invite = MediaInvite(
        public_id=uuid.uuid4(),
        consultation_id=c.id,
        token_hash=hash_secret(secret),
        guest_name=name,
        guest_role=guest_role,
        created_by_id=p.user_id,
        created_at=now,
        expires_at=expires,
    )
    db.session.add(invite)
    db.session.flush()
    audit_consultation("media.invite", c, by_id=p.user_id)
    return invite, secret


def revoke_invite(
    p: Participation, invite_public_id: uuid.UUID, *, now: datetime | None = None
) -> MediaInvite:
    if not p.is_doctor:
        raise MediaError(_l("Only the consultation's doctor can invite participants."))
    invite = db.session.execute(
        select(MediaInvite).where(
            MediaInvite.public_id == invite_public_id,
            MediaInvite.consultation_id == p.consultation.id,
        )
    ).scalar_one_or_none()
    if invite is None:
        raise NotFound(_l("The invitation was not found."))
    if invite.revoked_at is None:
        invite.revoked_at = now or utcnow()
        audit_consultation("media.invite_revoked", p.consultation, by_id=p.user_id)
    return invite


def _usable(invite: MediaInvite | None, now: datetime) -> bool:
    return invite is not None and invite.revoked_at is None and invite.expires_at > now


def consume_invite(secret: str, *, now: datetime | None = None) -> MediaInvite:
    """The guest's first open of the link: marks it used (atomically — two opens at once, one
    wins) and returns it. Unknown, used, revoked and expired links are all InviteUnavailable."""
    now = now or utcnow()
    if not secret or len(secret) > 200:
        raise InviteUnavailable(_l("This invitation link is not valid or has already been used."))
    invite = db.session.execute(
        select(MediaInvite).where(MediaInvite.token_hash == hash_secret(secret))
    ).scalar_one_or_none()
    if invite is None or invite.used_at is not None:
        raise InviteUnavailable(_l("This invitation link is not valid or has already been used."))
    if not _usable(invite, now):
        raise InviteUnavailable(_l("This invitation has expired or has been revoked."))
    claimed = db.session.execute(
        update(MediaInvite)
        .where(MediaInvite.id == invite.id, MediaInvite.used_at.is_(None))
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    if claimed.rowcount != 1:
        raise InviteUnavailable(_l("This invitation link is not valid or has already been used."))
    db.session.refresh(invite)
    audit_consultation("media.invite_used", db.session.get(Consultation, invite.consultation_id))
    return invite


def guest_participation(invite_id: int | None, *, now: datetime | None = None) -> Participation:
    """The guest's place, from the invite id their session holds; refused once the invite is
    revoked or expired, or the consultation is no longer on."""
    now = now or utcnow()
    invite = db.session.get(MediaInvite, int(invite_id)) if invite_id else None
    if invite is None or invite.used_at is None:
        raise InviteUnavailable(_l("This invitation link is not valid or has already been used."))
    if not _usable(invite, now):
        raise InviteUnavailable(_l("This invitation has expired or has been revoked."))
    c = db.session.get(Consultation, invite.consultation_id)
    if c is None or c.status not in ROOM_STATUSES:
        raise InviteUnavailable(_l("The consultation is over."))
    # Guests have no account: their messages are stored under the invite (chat_message.
    # invite_id). They write during the consultation only, not before (unlike a duty booking's
    # patient), and the media server also wants them admitted to the call.
    return Participation(
        c,
        "guest",
        None,
        invite.guest_name,
        media_open(c, now),
        c.guest_chat_open,
        invite_id=invite.id,
    )
