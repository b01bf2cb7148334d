"""Join tokens for the media server (DESIGN §1): short-lived, signed, one consultation each.

The web app mints a token only after its own access checks (app/media.py decides who may join);
media_server/auth.py verifies it and puts the socket into the room named here, never one the
client asks for. HS256 JWT with a key derived from SECRET_KEY (config.media_token_key).
A user's token carries the session generation it was minted under (`gen`, as the API's JWTs
do): the media server refuses it, and closes its socket, once logout, a password change or
deactivation has moved the user's generation on (media_server/sessions.py).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt
from flask import current_app

import logs
from config import media_token_key

AUDIENCE = "oblako-media"
ISSUER = "oblako-web"
ROLES = ("patient", "doctor", "guest")
GENERATION_CLAIM = "gen"  # the same name as the API's JWTs (app/security.py)
REQUEST_ID_CLAIM = "rid"  # the request that minted it: the media server logs it (logs.py)


@dataclass(frozen=True)
class JoinGrant:
    """What the holder may do in one consultation's room."""

    user_id: int | None  # None for an invited guest without an account
    consultation_id: int
    consultation_public_id: uuid.UUID
    role: str  # patient | doctor | guest
    name: str  # shown to the other participants
    media: bool  # may enter the video room now (15 minutes before the start, until it ends)
    chat: bool  # may write in the chat now
    invite_id: int | None = None
    session_generation: int | None = None  # the user's; None only for a guest


def mint_join_token(grant: JoinGrant, *, now: datetime | None = None) -> str:
    if grant.role not in ROLES:
        raise ValueError(f"unknown role {grant.role!r}")
    if grant.user_id is not None and grant.session_generation is None:
        raise ValueError("a user's join token must carry the session generation")
    now = now or datetime.now(UTC)
    ttl = int(current_app.config["MEDIA_TOKEN_TTL_SECONDS"])
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": str(grant.user_id) if grant.user_id is not None else f"guest:{grant.invite_id}",
        "cid": grant.consultation_id,
        "cpub": str(grant.consultation_public_id),
        "role": grant.role,
        "name": grant.name[:120],
        "media": bool(grant.media),
        "chat": bool(grant.chat),
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(seconds=ttl)).timestamp()),
        "jti": uuid.uuid4().hex,
    }
    if grant.invite_id is not None:
        claims["inv"] = grant.invite_id
    if grant.user_id is not None:
        claims[GENERATION_CLAIM] = int(grant.session_generation)
    if request_id := logs.request_id_var.get():
        claims[REQUEST_ID_CLAIM] = request_id
    return jwt.encode(claims, media_token_key(current_app.config), algorithm="HS256")
