"""The relay's socket.io events (relay.*, record.*): register_peer_events() wraps a RelayHub
for the server core, with the payload checks and who may do what (admitted sockets; only the
doctor records)."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy.orm import Session

from media_server.peers.hub import DEFAULT_MAX_PUBLISHERS, PeerError, RelayHub

log = logging.getLogger("media_server.peers")

SDP_MAX = 100_000
SID_MAX = 64


class IdentityLike(Protocol):
    room: str
    consultation_id: int
    user_id: int | None
    role: str
    admitted: bool


@dataclass(frozen=True)
class PeerIdentity:
    room: str
    consultation_id: int
    user_id: int | None
    role: str
    admitted: bool


def _sdp(data: Any) -> str:
    sdp = data.get("sdp") if isinstance(data, dict) else None
    if not isinstance(sdp, str) or not sdp or len(sdp) > SDP_MAX:
        raise PeerError("bad_request")
    return sdp


def _source(data: Any) -> str:
    source = data.get("source") if isinstance(data, dict) else None
    if not isinstance(source, str) or not source or len(source) > SID_MAX:
        raise PeerError("bad_request")
    return source


def register_peer_events(
    sio,
    *,
    lookup: Callable[[str], IdentityLike | Awaitable[IdentityLike | None] | None],
    session_factory: Callable[[], Session] | None,
    cfg: dict,
    guard: Callable[[str], Awaitable[bool]] | None = None,
) -> RelayHub:
    """Register the relay.* and record.* handlers on `sio`; returns the hub for the core's
    forget(sid) / end_room(room) / close() calls.

    lookup(sid) (sync or async) says who a socket is; guard(sid), when given, runs first and
    drops the event (no ack) when it returns False: the core's flood gate and kick state.
    """

    async def notify(room: str, event: str, payload: dict) -> None:
        await sio.emit(event, payload, room=room)

    hub = RelayHub(
        ice_servers=cfg.get("MEDIA_ICE_SERVERS") or [],
        max_publishers=int(cfg.get("MEDIA_RELAY_MAX_PUBLISHERS") or DEFAULT_MAX_PUBLISHERS),
        recordings_dir=str(cfg.get("MEDIA_RECORDINGS_DIR") or ""),
        session_factory=session_factory,
        notify=notify,
    )

    async def identity(sid: str) -> IdentityLike | None:
        who = lookup(sid)
        if inspect.isawaitable(who):
            who = await who
        return who

    async def admitted(sid: str) -> IdentityLike:
        who = await identity(sid)
        if who is None:
            raise PeerError("not_found")
        if not who.admitted:
            raise PeerError("forbidden")
        return who

    def handler(fn: Callable[[str, Any], Awaitable[dict]]):
        async def wrapped(sid: str, data: Any = None) -> dict | None:
            if guard is not None and not await guard(sid):
                return None
            if data is not None and not isinstance(data, dict):
                return {"ok": False, "error": "bad_request"}
            try:
                result = await fn(sid, data or {})
            except PeerError as exc:
                return {"ok": False, "error": exc.code}
            except Exception:
                log.exception("peer event failed")
                return {"ok": False, "error": "server_error"}
            return {"ok": True, **result}

        return wrapped

    async def still_there(sid: str, room: str) -> bool:
        """After a negotiation: the socket may have disconnected or hung up meanwhile, and
        forget(sid) ran before the connection was stored, so it is the caller's to close."""
        who = await identity(sid)
        return who is not None and who.admitted and who.room == room

    async def publish(sid: str, data: dict) -> dict:
        who = await admitted(sid)
        answer = await hub.publish(sid, who.room, _sdp(data), role=who.role)
        if not await still_there(sid, who.room):
            await hub.unpublish(sid)
            raise PeerError("not_found")
        return {"sdp": answer, "type": "answer"}

    async def subscribe(sid: str, data: dict) -> dict:
        who = await admitted(sid)
        source, sdp = _source(data), _sdp(data)
        source_who = await identity(source)
        if source_who is None or source_who.room != who.room or not source_who.admitted:
            raise PeerError("not_found")
        answer = await hub.subscribe(sid, who.room, source, sdp)
        if not await still_there(sid, who.room):
            await hub.unsubscribe(sid, source)
            raise PeerError("not_found")
        return {"sdp": answer, "type": "answer"}

    async def unsubscribe(sid: str, data: dict) -> dict:
        await admitted(sid)
        await hub.unsubscribe(sid, _source(data))
        return {}

    async def unpublish(sid: str, data: dict) -> dict:
        await admitted(sid)
        await hub.unpublish(sid)
        return {}

    async def state(sid: str, data: dict) -> dict:
        who = await admitted(sid)
        return {"sources": hub.sources(who.room), "recording": hub.is_recording(who.room)}

    async def record_start(sid: str, data: dict) -> dict:
        who = await admitted(sid)
        if who.role != "doctor":
            raise PeerError("forbidden")
        await hub.start_recording(who.room, who.consultation_id, by_sid=sid)
        return {}

    async def record_stop(sid: str, data: dict) -> dict:
        who = await admitted(sid)
        if who.role != "doctor":
            raise PeerError("forbidden")
        saved = await hub.stop_recording(who.room)
        return {"recording_id": str(saved[-1].public_id) if saved else None}

    for event, fn in (
        ("relay.publish", publish),
        ("relay.subscribe", subscribe),
        ("relay.unsubscribe", unsubscribe),
        ("relay.unpublish", unpublish),
        ("relay.state", state),
        ("record.start", record_start),
        ("record.stop", record_stop),
    ):
        sio.on(event, handler(fn))
    return hub
