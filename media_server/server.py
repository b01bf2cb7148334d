"""The socket.io server: join, chat, waiting room and WebRTC signalling (docs/media-contract.md).

`create_server(cfg)` builds a python-socketio AsyncServer attached to an aiohttp application;
`python -m media_server` serves it, tests run it in a thread (tests/media_fixtures.py).
Everything sent to clients is a code, never prose: the web app translates.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import socketio
from aiohttp import web
from socketio.exceptions import ConnectionRefusedError as Refused
from sqlalchemy import Connection, create_engine
from sqlalchemy.orm import sessionmaker
from sqlalchemy.pool import NullPool

from config import sqlite_connect_args
from media_server import ops as media_ops
from media_server.admissions import DbAdmissions
from media_server.auth import Claims, TokenRejected, verify_join_token
from media_server.chat_state import consultation_state, name_authors
from media_server.guest_chat import guest_history, merge_history, send_guest
from media_server.jsoncodec import OrjsonCodec
from media_server.limits import (
    BadRequest,
    FloodGate,
    TokenBucket,
    int_field,
    storable,
    text_field,
)
from media_server.peers import PeerIdentity, RelayHub, register_peer_events
from media_server.rooms import (
    ADMITTED,
    PRESENT,
    PROC_HEARTBEAT_SECONDS,
    READMIT_SECONDS,
    WAITING,
    MemoryRooms,
    RedisRooms,
    Rooms,
    public,
    redis_channel,
)
from media_server.sessions import SESSION_ENDED, session_live, watch_sessions
from media_server.store import (
    HISTORY_LIMIT,
    ChatStore,
    ChatWriter,
    ConsultationInfo,
    SendItem,
    join_state,
)
from models import ROOM_STATUSES

log = logging.getLogger("media_server")

MAX_HTTP_BUFFER = 256 * 1024  # engine.io drops a connection that sends a bigger packet
MAX_BODY = 2000
MAX_CLIENT_MSG_ID = 64
MAX_SDP = 100 * 1024
MAX_CANDIDATE = 4 * 1024
MAX_PARTICIPANTS = 12  # sockets per room: doctor, patient, guests, a few extra tabs
# "restart": the answering side lost its connection and asks the offering side (the doctor's
# page) for a new one; the offering side notices only if its own ICE fails too. "relay": the
# doctor's page gave up on browser-to-browser, both sides go through the aiortc relay.
SIGNAL_KINDS = frozenset({"offer", "answer", "candidate", "bye", "restart", "relay"})
_LOCAL_ORIGIN = re.compile(r"^http://(127\.0\.0\.1|localhost)(:\d{1,5})?$")

Ack = dict[str, Any]


def _fail(code: str) -> Ack:
    return {"ok": False, "error": code}


@dataclass
class Conn:
    """What this process knows about one of its sockets."""

    sid: str
    claims: Claims
    info: ConsultationInfo
    author_name: str
    chat_bucket: TokenBucket
    flood: FloodGate
    room: str = ""  # claims.room, formatted once (it is read on every event)
    kicked: bool = False

    def __post_init__(self) -> None:
        self.room = self.claims.room


class MediaServer:
    """Holds the socket.io server, the shared room state and the chat store of one process."""

    def __init__(
        self,
        cfg: dict[str, Any],
        *,
        allow_local_origins: bool = False,
        extra_origins: tuple[str, ...] = (),
    ) -> None:
        self.cfg = cfg
        self.origins = frozenset(
            o.rstrip("/") for o in [*cfg.get("MEDIA_ALLOWED_ORIGINS", []), *extra_origins]
        )
        if "*" in self.origins:
            raise ValueError("MEDIA_ALLOWED_ORIGINS must list origins, never '*'")
        # Tests only: the browser test's live server listens on a port chosen at run time.
        self.allow_local_origins = allow_local_origins
        # MEDIA_DB_WORKERS: the PostgreSQL connections the store keeps (its pool's size).
        self.store = ChatStore(
            cfg["SQLALCHEMY_DATABASE_URI"], pool_size=int(cfg.get("MEDIA_DB_WORKERS", 8))
        )
        redis_url = cfg.get("MEDIA_REDIS_URL") or ""
        manager = None
        if redis_url:
            manager = socketio.AsyncRedisManager(redis_url, channel=redis_channel(redis_url))
            self.rooms: Rooms = RedisRooms(redis_url)
        else:
            # Re-admission marks in the database: they outlive a restart of this process.
            self.rooms = MemoryRooms(DbAdmissions(self.store, READMIT_SECONDS))
        self.writer = ChatWriter(self.store)
        # The recorder's rare writes (a Recording row as a recording ends, a consent check as
        # one starts) use a sync ORM session in a thread (peers/hub.py): no pool kept for them.
        url = cfg["SQLALCHEMY_DATABASE_URI"]
        self._recordings_engine = create_engine(
            url,
            poolclass=NullPool,
            connect_args=sqlite_connect_args() if url.startswith("sqlite") else {},
        )
        self.chat_burst = float(cfg.get("MEDIA_CHAT_BURST", 5))
        self.chat_rate = float(cfg.get("MEDIA_CHAT_PER_SECOND", 1.0))
        self.flood_events = int(cfg.get("MEDIA_FLOOD_EVENTS", 50))
        self.flood_window = float(cfg.get("MEDIA_FLOOD_WINDOW_SECONDS", 5.0))
        self.conns: dict[str, Conn] = {}
        self._room_locks: dict[str, asyncio.Lock] = {}
        self.sio = socketio.AsyncServer(
            async_mode="aiohttp",
            cors_allowed_origins=self.origin_allowed,
            max_http_buffer_size=MAX_HTTP_BUFFER,
            client_manager=manager,
            json=OrjsonCodec,
            logger=False,
            engineio_logger=False,
        )
        self.app = web.Application()
        self.app[MEDIA_KEY] = self
        self.sio.attach(self.app)
        self.app.router.add_get("/healthz", self._healthz)
        rooms = lambda: (c.room for c in self.conns.values())  # noqa: E731
        self.app.router.add_get("/metrics", media_ops.handler(cfg, rooms))
        self.app.on_startup.append(self._on_startup)
        self.app.on_shutdown.append(self._on_shutdown)
        self.app.on_cleanup.append(self._on_cleanup)
        self._heartbeat_task: asyncio.Task | None = None
        self._sessions_task: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()
        self._register()
        # aiortc relay + recorder (media_server/peers/, the peers area): its relay.* and
        # record.* events go through the same flood gate, and see who is admitted through us.
        self.peers: RelayHub = register_peer_events(
            self.sio,
            lookup=self._peer_identity,
            session_factory=sessionmaker(self._recordings_engine),
            cfg=cfg,
            guard=self._peer_guard,
        )

    # --- lifecycle -------------------------------------------------------------------------

    async def _on_startup(self, app: web.Application) -> None:
        await self.rooms.heartbeat()
        self._heartbeat_task = asyncio.create_task(self._heartbeat())
        sessions = watch_sessions(self.store, self.conns, self._kick)
        self._sessions_task = asyncio.create_task(sessions)

    async def _on_shutdown(self, app: web.Application) -> None:
        # Close every socket cleanly (clients see a server disconnect and reconnect).
        await self.sio.shutdown()

    async def _on_cleanup(self, app: web.Application) -> None:
        for task in (self._heartbeat_task, self._sessions_task):
            if task:
                task.cancel()
        await self.peers.close()
        await self.rooms.close()
        await self.store.aclose()
        self._recordings_engine.dispose()

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(PROC_HEARTBEAT_SECONDS)
            try:
                await self.rooms.heartbeat()
            except Exception:  # Redis blip: the next beat retries; the TTL covers 3 misses
                log.exception("room state heartbeat failed")

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "connections": len(self.conns)})

    def origin_allowed(self, origin: str | None, environ: dict | None = None) -> bool:
        if not origin:
            return False
        origin = origin.rstrip("/")
        if origin in self.origins:
            return True
        return self.allow_local_origins and bool(_LOCAL_ORIGIN.match(origin))

    # --- wiring ----------------------------------------------------------------------------

    def _register(self) -> None:
        self.sio.on("connect", self.on_connect)
        self.sio.on("disconnect", self.on_disconnect)
        self.sio.on("*", self.on_unknown)
        events: dict[str, Callable[[Conn, dict[str, Any]], Awaitable[Ack]]] = {
            "chat.send": self.chat_send,
            "chat.read": self.chat_read,
            "room.enter": self.room_enter,
            "room.admit": self.room_admit,
            "room.leave": self.room_leave,
            "room.end": self.room_end,
            "consultation.refresh": self.consultation_refresh,
            "signal": self.signal,
        }
        for name, handler in events.items():
            self.sio.on(name, self._guarded(handler))

    def _guarded(
        self, handler: Callable[[Conn, dict[str, Any]], Awaitable[Ack]]
    ) -> Callable[..., Awaitable[Ack | None]]:
        async def wrapper(sid: str, *args: Any) -> Ack | None:
            conn = self.conns.get(sid)
            if conn is None or conn.kicked:
                return None
            if not conn.flood.allow():
                await self._kick(conn)
                return None
            # No payload is the same as {}; anything else must be exactly one object.
            data: Any = args[0] if len(args) == 1 else ({} if not args else None)
            if not isinstance(data, dict):
                return _fail("bad_request")
            try:
                return await handler(conn, data)
            except BadRequest:
                return _fail("bad_request")
            except Exception:  # database or Redis trouble: a code for the page, a log for us
                log.exception("event %s failed", handler.__name__)
                return _fail("server_error")

        return wrapper

    async def _peer_identity(self, sid: str) -> PeerIdentity | None:
        conn = self.conns.get(sid)
        if conn is None:
            return None
        p = await self.rooms.get(conn.room, sid)
        return PeerIdentity(
            room=conn.room,
            consultation_id=conn.claims.consultation_id,
            user_id=conn.claims.user_id,
            role=conn.claims.role,
            admitted=bool(p and p["state"] == ADMITTED),
        )

    async def _peer_guard(self, sid: str) -> bool:
        conn = self.conns.get(sid)
        if conn is None or conn.kicked:
            return False
        if not conn.flood.allow():
            await self._kick(conn)
            return False
        return True

    async def on_unknown(self, event: str, sid: str, *args: Any) -> Ack | None:
        conn = self.conns.get(sid)
        if conn is None or conn.kicked:
            return None
        if not conn.flood.allow():
            await self._kick(conn)
            return None
        return _fail("bad_request")

    async def _kick(self, conn: Conn, code: str = "rate_limited") -> None:
        """A flooding client, or one whose session has ended: tell it why (a code), then cut it
        off; the room carries on."""
        conn.kicked = True
        log.warning("%s: disconnecting sid=%s user=%s", code, conn.sid, conn.claims.subject)
        await self.sio.emit("error", {"error": code}, to=conn.sid)
        # Let the error packet leave before the close packet (both go through one queue).
        await asyncio.sleep(0.05)
        await self.sio.disconnect(conn.sid)

    # --- connect / disconnect --------------------------------------------------------------

    async def on_connect(self, sid: str, environ: dict, auth: Any = None) -> None:
        try:
            await self._connect(sid, environ, auth)
        except Refused:
            raise
        except Exception:
            log.exception("connect failed")
            self.conns.pop(sid, None)
            raise Refused("server_error") from None

    async def _connect(self, sid: str, environ: dict, auth: Any) -> None:
        # engine.io already refuses a foreign Origin at the HTTP level; a missing one (only
        # non-browser clients omit it) is refused here, so the allow-list is never bypassed.
        if not self.origin_allowed(environ.get("HTTP_ORIGIN")):
            raise Refused("origin_forbidden")
        auth = auth if isinstance(auth, dict) else {}
        try:
            claims = verify_join_token(auth.get("token"), self.cfg)
        except TokenRejected as exc:
            raise Refused(exc.code) from None
        last_seen = auth.get("last_seen")
        if isinstance(last_seen, bool) or not isinstance(last_seen, int) or last_seen < 0:
            last_seen = 0
        # One connection: the session check, the consultation, the author's name, the history.
        joined = await self.store.run(self._join, claims, last_seen)
        # cid and cpub are signed together; a mismatch means a token minted wrongly or for a
        # consultation that no longer exists: never guess which room was meant.
        if joined is None or joined[0].public_id != claims.consultation_public_id:
            raise Refused("token_invalid")
        info, author_name, history = joined
        room = claims.room
        if len(await self.rooms.list(room)) >= MAX_PARTICIPANTS:
            raise Refused("room_full")
        conn = Conn(
            sid=sid,
            claims=claims,
            info=info,
            author_name=author_name or claims.name,
            chat_bucket=TokenBucket(self.chat_burst, self.chat_rate),
            flood=FloodGate(self.flood_events, self.flood_window),
        )
        self.conns[sid] = conn
        await self.sio.enter_room(sid, room)
        me = {
            "sid": sid,
            "user_id": claims.user_id,
            "role": claims.role,
            "name": claims.name,
            "state": PRESENT,
            "sub": claims.subject,
        }
        await self.rooms.add(room, me)
        media_ops.log_connect(claims, environ)
        # python-socketio sends the CONNECT packet after this handler returns: what the
        # contract says comes "after connect" is sent from a task that runs after it.
        task = asyncio.get_running_loop().create_task(self._welcome(conn, history))
        self._tasks.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    def _join(
        conn: Connection, claims: Claims, last_seen: int
    ) -> tuple[ConsultationInfo, str, list[dict[str, Any]]] | None:
        """store.join_state, plus the invited guests' messages in the history (they have no account,
        so the store's history, joined on the author's account, does not see them).
        A user's token is refused once its session has ended (logout, password, deactivation)."""
        uid = claims.user_id
        if uid is not None and not session_live(conn, uid, claims.generation):
            raise Refused(SESSION_ENDED)
        joined = join_state(conn, claims.consultation_id, claims.user_id, last_seen)
        if joined is None:
            return None
        info, name, history = joined
        # The person named as on every page (models.person_name), not by the account's name.
        name = name_authors(conn, history, uid) or name
        guests = guest_history(conn, info, last_seen, HISTORY_LIMIT)
        return info, name, merge_history(history, guests, HISTORY_LIMIT)

    async def _welcome(self, conn: Conn, history: list[dict[str, Any]]) -> None:
        await asyncio.sleep(0)
        state = await self._room_state(conn.room)
        claims = conn.claims
        await self.sio.emit(
            "joined",
            {
                "sid": conn.sid,
                "role": claims.role,
                "name": claims.name,
                "user_id": claims.user_id,
                **state,
                "ice_servers": self.cfg.get("MEDIA_ICE_SERVERS", []),
                "relay_video_kbps": int(self.cfg.get("MEDIA_RELAY_VIDEO_KBPS") or 0),
            },
            to=conn.sid,
        )
        await self.sio.emit("chat.history", {"messages": history}, to=conn.sid)
        await self.sio.emit("room.state", state, to=conn.room)

    async def on_disconnect(self, sid: str, reason: Any = None) -> None:
        conn = self.conns.pop(sid, None)
        if conn is None:
            return
        gone = await self.rooms.remove(conn.room, sid)
        await self.peers.forget(sid)
        if gone and gone.get("state") == ADMITTED:
            # A drop, not a goodbye: the same user coming back soon is admitted again.
            await self.rooms.mark_admitted(conn.room, gone["sub"])
        if not any(c.room == conn.room for c in self.conns.values()):
            self._room_locks.pop(conn.room, None)
        await self._broadcast_state(conn.room)

    async def _room_state(self, room: str) -> dict[str, Any]:
        """`room.state`: who is in the room, numbered so that pages drop an older one (rooms.py)."""
        version, members = await self.rooms.snapshot(room)
        return {"version": version, "participants": [public(p) for p in members]}

    async def _broadcast_state(self, room: str) -> None:
        await self.sio.emit("room.state", await self._room_state(room), to=room)

    # --- chat ------------------------------------------------------------------------------

    async def chat_send(self, conn: Conn, data: dict[str, Any]) -> Ack:
        client_msg_id = text_field(data, "client_msg_id", max_len=MAX_CLIENT_MSG_ID)
        body = data.get("body")
        if not isinstance(body, str) or not storable(body) or not body.strip():
            raise BadRequest("body")
        if len(body) > MAX_BODY:
            return _fail("too_long")
        # The database decides whether the chat is open (in the insert's transaction), not the
        # token's `chat`, a snapshot taken before the doctor may have started (chat_state.py).
        claims = conn.claims
        if claims.user_id is None:
            if claims.invite_id is None:
                return _fail("forbidden")
            # A guest writes only once the doctor has let them into the call.
            me = await self.rooms.get(conn.room, conn.sid)
            if me is None or me["state"] != ADMITTED:
                return _fail("not_admitted")
        if not conn.chat_bucket.take():
            return _fail("rate_limited")
        # One send at a time per room in this process: ids are assigned and broadcast in the
        # same order, so every participant sees the room's messages in id order.
        lock = self._room_locks.get(conn.room)
        if lock is None:
            lock = self._room_locks[conn.room] = asyncio.Lock()
        async with lock:
            try:
                if claims.user_id is None:
                    result = await self.store.run(
                        send_guest,
                        conn.info,
                        invite_id=claims.invite_id,
                        client_msg_id=client_msg_id,
                        body=body,
                    )
                else:
                    result = await self.writer.send(
                        SendItem(
                            info=conn.info,
                            author_id=claims.user_id,
                            author_name=conn.author_name,
                            client_msg_id=client_msg_id,
                            body=body,
                        )
                    )
            except Exception:
                log.exception("chat.send failed")
                return _fail("server_error")
            if result.outcome == "stored":
                await self.sio.emit("chat.message", result.message, to=conn.room)
        if result.outcome in ("stored", "duplicate"):
            return {"ok": True, "message": result.message}
        if result.outcome == "closed":
            return _fail("chat_closed")
        return _fail("bad_request")

    async def chat_read(self, conn: Conn, data: dict[str, Any]) -> Ack:
        up_to = int_field(data, "up_to")
        if conn.claims.user_id is None:
            return _fail("forbidden")
        mark = await self.store.mark_read(
            user_id=conn.claims.user_id, consultation_id=conn.info.id, up_to=up_to
        )
        return {"ok": True, "up_to": mark}

    # --- waiting room ----------------------------------------------------------------------

    async def room_enter(self, conn: Conn, data: dict[str, Any]) -> Ack:
        claims = conn.claims
        if not claims.media:
            return _fail("room_closed")
        info = await self.store.consultation(conn.info.id)
        if info is None or info.status not in ROOM_STATUSES:  # the web app's rule too
            return _fail("room_closed")
        if claims.role == "doctor" or await self.rooms.recently_admitted(conn.room, claims.subject):
            state = ADMITTED
        else:
            state = WAITING
        if await self.rooms.set_state(conn.room, conn.sid, state) is None:
            return _fail("not_found")
        if state == ADMITTED:
            await self.rooms.mark_admitted(conn.room, claims.subject)
            if claims.role != "doctor":
                await self.sio.emit("room.admitted", {}, to=conn.sid)
        await self._broadcast_state(conn.room)
        return {"ok": True, "state": state}

    async def room_admit(self, conn: Conn, data: dict[str, Any]) -> Ack:
        target = text_field(data, "sid", max_len=64)
        if conn.claims.role != "doctor":
            return _fail("forbidden")
        p = await self.rooms.set_state(conn.room, target, ADMITTED, expect=WAITING)
        if p is None:
            return _fail("not_found")
        await self.rooms.mark_admitted(conn.room, p["sub"])
        await self.sio.emit("room.admitted", {}, to=target)
        await self._broadcast_state(conn.room)
        return {"ok": True}

    async def room_leave(self, conn: Conn, data: dict[str, Any]) -> Ack:
        if await self.rooms.set_state(conn.room, conn.sid, PRESENT) is None:
            return _fail("not_found")
        await self.peers.forget(conn.sid)
        # Hanging up on purpose is not a network drop: coming back means waiting again.
        await self.rooms.forget_admitted(conn.room, conn.claims.subject)
        await self._broadcast_state(conn.room)
        return {"ok": True}

    async def room_end(self, conn: Conn, data: dict[str, Any]) -> Ack:
        if conn.claims.role != "doctor":
            return _fail("forbidden")
        await self.rooms.end(conn.room)
        await self.peers.end_room(conn.room)
        await self.sio.emit("room.ended", {}, to=conn.room)
        await self._broadcast_state(conn.room)
        return {"ok": True}

    async def consultation_refresh(self, conn: Conn, data: dict[str, Any]) -> Ack:
        """The doctor's page changed the consultation (started it): everyone in the room reads
        the new state, taken from the database, never from the page."""
        if conn.claims.role != "doctor":
            return _fail("forbidden")
        state = await self.store.run(consultation_state, conn.info.id)
        if state is None:
            return _fail("not_found")
        await self.sio.emit("consultation.state", state, to=conn.room)
        return {"ok": True, **state}

    # --- signalling ------------------------------------------------------------------------

    async def signal(self, conn: Conn, data: dict[str, Any]) -> Ack:
        to = text_field(data, "to", max_len=64)
        kind = data.get("kind")
        if kind not in SIGNAL_KINDS:
            raise BadRequest("kind")
        out: dict[str, Any] = {
            "from": conn.sid,
            "kind": kind,
            "pc": text_field(data, "pc", max_len=64),
        }
        if "sdp" in data:
            out["sdp"] = text_field(data, "sdp", max_len=MAX_SDP)
        if data.get("candidate") is not None:
            candidate = data["candidate"]
            if not isinstance(candidate, dict) or len(json.dumps(candidate)) > MAX_CANDIDATE:
                raise BadRequest("candidate")
            out["candidate"] = candidate
        # Decided on the shared state: the target may be connected to another process, and
        # sids of other rooms are simply not found here.
        me = await self.rooms.get(conn.room, conn.sid)
        if me is None or me["state"] != ADMITTED:
            return _fail("forbidden")
        target = await self.rooms.get(conn.room, to)
        if target is None or target["state"] != ADMITTED or to == conn.sid:
            return _fail("not_found")
        await self.sio.emit("signal", out, to=to)
        return {"ok": True}


MEDIA_KEY = web.AppKey("media", MediaServer)  # aiohttp app → its MediaServer


def create_server(
    cfg: dict[str, Any],
    *,
    allow_local_origins: bool = False,
    extra_origins: tuple[str, ...] = (),
) -> tuple[socketio.AsyncServer, web.Application]:
    """The media server for one process. `allow_local_origins` (tests only) also accepts
    http://127.0.0.1:<any port> and http://localhost:<any port>."""
    server = MediaServer(cfg, allow_local_origins=allow_local_origins, extra_origins=extra_origins)
    return server.sio, server.app
