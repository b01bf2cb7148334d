"""TURN credentials minted per join (coturn's `use-auth-secret` REST scheme).

Patients on mobile networks and behind corporate firewalls reach the other side only through a
TURN server. coturn shares one secret with the web app (TURN_SECRET = coturn's
`static-auth-secret`); the web app hands each join a user name ``"<expiry>:<who>"`` and the
credential ``base64(HMAC-SHA1(secret, user name))``, which coturn recomputes and accepts until
the expiry passes. The page never holds a lasting password, and a leaked one dies on its own.

``<who>`` names the consultation's room and the role in it (or the admin's connection check),
never a person: coturn's logs tie a relay to a consultation, not to a name or a phone.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from datetime import UTC, datetime


def credential_for(secret: str, username: str) -> str:
    """coturn's password for a REST user name: base64(HMAC-SHA1(secret, user name))."""
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def turn_configured(config: Mapping) -> bool:
    return bool(config.get("TURN_SECRET")) and bool(config.get("TURN_URLS"))


def ice_servers(config: Mapping, who: str, *, now: datetime | None = None) -> list[dict]:
    """The RTCPeerConnection iceServers for one join: the static MEDIA_ICE_SERVERS (STUN)
    and, when TURN is configured, the TURN URLs with a credential that expires after
    TURN_CREDENTIAL_TTL_SECONDS."""
    servers = [dict(entry) for entry in config.get("MEDIA_ICE_SERVERS") or []]
    if not turn_configured(config):
        return servers
    moment = now or datetime.now(UTC)
    expiry = int(moment.timestamp()) + int(config["TURN_CREDENTIAL_TTL_SECONDS"])
    username = f"{expiry}:{who.replace(':', '-')}"
    servers.append(
        {
            "urls": list(config["TURN_URLS"]),
            "username": username,
            "credential": credential_for(str(config["TURN_SECRET"]), username),
        }
    )
    return servers


def ice_config(config: Mapping, who: str, *, now: datetime | None = None) -> dict:
    """What a page needs to build its RTCPeerConnection: servers and the transport policy
    ("relay": only through TURN, hiding each side's address from the other)."""
    return {
        "ice_servers": ice_servers(config, who, now=now),
        "ice_transport_policy": config.get("MEDIA_ICE_TRANSPORT_POLICY") or "all",
    }
