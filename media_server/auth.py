"""Verify the web app's join tokens (app/media_tokens.py mints them)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import jwt

from config import media_token_key

AUDIENCE = "oblako-media"
ISSUER = "oblako-web"
ROLES = frozenset({"patient", "doctor", "guest"})
GENERATION_CLAIM = "gen"  # app/media_tokens.py: the user's session generation at minting
LEEWAY_SECONDS = 5  # clock skew between the web and media processes


class TokenRejected(Exception):
    """The token is missing, expired, forged or malformed; `code` goes back to the client."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


@dataclass(frozen=True)
class Claims:
    subject: str  # user id, or "guest:<invite id>"
    user_id: int | None
    consultation_id: int
    consultation_public_id: uuid.UUID
    role: str
    name: str
    media: bool
    chat: bool
    invite_id: int | None
    expires_at: int
    generation: int | None = None  # the user's session generation; None for a guest
    request_id: str = ""  # the web request that minted the token (logs.py), for the log

    @property
    def room(self) -> str:
        return f"c:{self.consultation_public_id}"


def verify_join_token(token: object, cfg: dict) -> Claims:
    if not isinstance(token, str) or not token or len(token) > 4096:
        raise TokenRejected("token_missing")
    try:
        data = jwt.decode(
            token,
            media_token_key(cfg),
            algorithms=["HS256"],
            audience=AUDIENCE,
            issuer=ISSUER,
            leeway=LEEWAY_SECONDS,
            options={"require": ["exp", "iat", "sub", "aud", "iss"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise TokenRejected("token_expired") from exc
    except jwt.PyJWTError as exc:
        raise TokenRejected("token_invalid") from exc
    try:
        role = str(data["role"])
        if role not in ROLES:
            raise ValueError(role)
        subject = str(data["sub"])
        user_id = None if subject.startswith("guest:") else int(subject)
        return Claims(
            subject=subject,
            user_id=user_id,
            consultation_id=int(data["cid"]),
            consultation_public_id=uuid.UUID(str(data["cpub"])),
            role=role,
            name=str(data.get("name") or "")[:120],
            media=bool(data.get("media")),
            chat=bool(data.get("chat")),
            invite_id=int(data["inv"]) if data.get("inv") is not None else None,
            expires_at=int(data["exp"]),
            # A user's token without one could not be revoked with the session: refused.
            generation=None if user_id is None else int(data[GENERATION_CLAIM]),
            request_id=str(data.get("rid") or "")[:64],
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise TokenRejected("token_invalid") from exc
