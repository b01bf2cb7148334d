"""A real media server for tests: `media_server` (session) and `media_server_factory`.

The server is media_server.server.MediaServer on a free port, in a background thread with its own
event loop, against the same database as the `app` fixture (SQLite file or PostgreSQL). Tokens
come from the web app's own minting code (app.media_tokens) under app.app_context().

Origins: python clients send `ORIGIN`; the browser test's live server (http://127.0.0.1:<port>
or http://localhost:<port>) is accepted too, because the session server runs with
`allow_local_origins=True` — a test-only switch of create_server, never reachable from config.

Also `MediaClient`: a socketio.AsyncClient that records every event, for asyncio tests driven by
`run()` (the suite has no asyncio plugin; each test runs its coroutine on a fresh loop).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import socketio
from flask import Flask

ORIGIN = "http://oblako.test"
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def media_config(app: Flask, **overrides: Any) -> dict[str, Any]:
    cfg = dict(app.config)
    cfg.update(
        {
            "MEDIA_ALLOWED_ORIGINS": [ORIGIN],
            "MEDIA_REDIS_URL": "",
            "MEDIA_ICE_SERVERS": [],
            "MEDIA_DB_WORKERS": 4,
        }
    )
    cfg.update(overrides)
    return cfg


class ServerThread:
    """create_server's aiohttp app served from a thread with its own event loop."""

    def __init__(self, cfg: dict[str, Any], **server_kw: Any) -> None:
        self.cfg = cfg
        self.server_kw = server_kw
        self.port = 0
        self.server: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._runner: Any = None
        self._thread = threading.Thread(target=self._run, name="media-server", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServerThread:
        self._thread.start()
        if not self._ready.wait(20):
            raise RuntimeError("media server did not start")
        if self._error:
            raise self._error
        return self

    def _run(self) -> None:
        from aiohttp import web

        from media_server.server import MediaServer

        loop = self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            self.server = MediaServer(self.cfg, **self.server_kw)
            runner = web.AppRunner(self.server.app, handle_signals=False)
            loop.run_until_complete(runner.setup())
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
            loop.run_until_complete(web.SockSite(runner, sock).start())
        except BaseException as exc:  # surfaced by start()
            self._error = exc
            self._ready.set()
            return
        self._runner = runner
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            # engine.io leaves per-socket ping tasks sleeping: cancel them before closing.
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

    def call(self, coro_fn: Callable[[], Coroutine[Any, Any, Any]], timeout: float = 10) -> Any:
        """Run a coroutine on the server's loop (inspect room state from a test)."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro_fn(), self._loop).result(timeout)

    def stop(self) -> None:
        if self._loop and self._loop.is_running():
            try:
                self.call(self._runner.cleanup, timeout=15)
            finally:
                self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(15)


@dataclass
class MediaServerHandle:
    """What a test needs: where the server is, and join tokens minted by the web app's code."""

    app: Flask
    thread: ServerThread
    origin: str = ORIGIN

    @property
    def url(self) -> str:
        return self.thread.url

    @property
    def server(self) -> Any:  # media_server.server.MediaServer
        return self.thread.server

    def token(
        self,
        consultation_id: int,
        user_id: int | None,
        role: str,
        *,
        name: str = "",
        media: bool = True,
        chat: bool = True,
        invite_id: int | None = None,
        public_id: uuid.UUID | None = None,
        now: Any = None,
    ) -> str:
        return mint_token(
            self.app,
            consultation_id,
            user_id,
            role,
            name=name,
            media=media,
            chat=chat,
            invite_id=invite_id,
            public_id=public_id,
            now=now,
        )


def mint_token(
    app: Flask,
    consultation_id: int,
    user_id: int | None,
    role: str,
    *,
    name: str = "",
    media: bool = True,
    chat: bool = True,
    invite_id: int | None = None,
    public_id: uuid.UUID | None = None,
    now: Any = None,
) -> str:
    from app.extensions import db
    from app.media_tokens import JoinGrant, mint_join_token
    from models import Consultation, OblakoUser

    with app.app_context():
        if public_id is None:
            public_id = db.session.get(Consultation, consultation_id).public_id
        # The user's current session generation, as the web app's token endpoint puts it in.
        user = db.session.get(OblakoUser, user_id) if user_id is not None else None
        grant = JoinGrant(
            user_id=user_id,
            consultation_id=consultation_id,
            consultation_public_id=public_id,
            role=role,
            name=name or role,
            media=media,
            chat=chat,
            invite_id=invite_id,
            session_generation=user.session_generation if user is not None else None,
        )
        return mint_join_token(grant, now=now)


@pytest.fixture(scope="session")
def media_server(app: Flask) -> Iterator[MediaServerHandle]:
    """One real media server for the session (in-memory room state, no Redis)."""
    thread = ServerThread(media_config(app), allow_local_origins=True).start()
    yield MediaServerHandle(app, thread)
    thread.stop()


@pytest.fixture
def media_server_factory(app: Flask) -> Iterator[Callable[..., MediaServerHandle]]:
    """Start servers with other settings (limits, Redis) for one test; stopped after it."""
    started: list[ServerThread] = []

    def factory(**overrides: Any) -> MediaServerHandle:
        thread = ServerThread(media_config(app, **overrides)).start()
        started.append(thread)
        return MediaServerHandle(app, thread)

    yield factory
    for thread in started:
        thread.stop()


# ---------------------------------------------------------------------------------------------
# `python -m media_server` as a subprocess (several processes, restarts)
# ---------------------------------------------------------------------------------------------


@dataclass
class MediaProcess:
    app: Flask
    port: int
    env: dict[str, str]
    proc: subprocess.Popen | None = None
    log_path: Path | None = None
    origin: str = ORIGIN
    _logs: list[Any] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> MediaProcess:  # 11–19 s seen at load 12–15
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        if self.log_path:
            self._logs.append(log)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "media_server"],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        import urllib.request

        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"media server exited with {self.proc.returncode}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as resp:  # noqa: S310
                    if resp.status == 200:
                        return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("media server did not become healthy")

    def kill(self) -> None:
        """Crash it (SIGKILL): no cleanup, as when a machine goes away."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for log in self._logs:
            log.close()
        self._logs.clear()

    def token(self, consultation_id: int, user_id: int | None, role: str, **kw: Any) -> str:
        return mint_token(self.app, consultation_id, user_id, role, **kw)


@pytest.fixture
def media_process_factory(app: Flask, tmp_path: Path) -> Iterator[Callable[..., MediaProcess]]:
    """`python -m media_server` subprocesses on the test database; stopped after the test."""
    started: list[MediaProcess] = []

    def factory(
        *, port: int | None = None, redis_url: str = "", origins: str = ORIGIN
    ) -> MediaProcess:
        port = port or free_port()
        env = {
            **os.environ,
            "SECRET_KEY": str(app.config["SECRET_KEY"]),
            "MEDIA_TOKEN_SECRET": str(app.config.get("MEDIA_TOKEN_SECRET") or ""),
            "DATABASE_URL": str(app.config["SQLALCHEMY_DATABASE_URI"]),
            "MEDIA_HOST": "127.0.0.1",
            "MEDIA_PORT": str(port),
            "MEDIA_ALLOWED_ORIGINS": origins,  # a browser test: its live server's origin
            "MEDIA_REDIS_URL": redis_url,
            "OBLAKO_INSTANCE_DIR": str(tmp_path / "instance"),
            "PYTHONUNBUFFERED": "1",
        }
        mp = MediaProcess(app, port, env, log_path=tmp_path / f"media-{port}.log")
        started.append(mp)
        return mp.start()

    yield factory
    for mp in started:
        mp.stop()


# ---------------------------------------------------------------------------------------------
# Clients
# ---------------------------------------------------------------------------------------------


def run(coro: Coroutine[Any, Any, Any], timeout: float = 60) -> Any:
    """Run one test coroutine on a fresh loop in its own thread, with an overall time limit.

    A thread, because Playwright's sync API (session-scoped in tests/e2e) keeps an event loop
    running in the main thread for the rest of the session, where asyncio.run() refuses to start.
    """
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = asyncio.run(asyncio.wait_for(coro, timeout))
        except BaseException as exc:  # re-raised in the test's thread
            outcome["error"] = exc

    worker = threading.Thread(target=target, name="media-test-client", daemon=True)
    worker.start()
    worker.join(timeout + 30)
    if worker.is_alive():
        raise TimeoutError(f"test coroutine did not finish within {timeout + 30} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


class MediaClient:
    """A socket.io client that records what the server sends, by event name."""

    def __init__(
        self,
        url: str,
        token_fn: Callable[[], str],
        *,
        origin: str = ORIGIN,
        reconnection: bool = True,
    ) -> None:
        self.url = url
        self.token_fn = token_fn
        self.origin = origin
        self.last_seen = 0
        self.events: dict[str, list[Any]] = {}
        self._changed = asyncio.Event()
        self.sio = socketio.AsyncClient(
            reconnection=reconnection, reconnection_delay=0.2, reconnection_delay_max=1
        )
        self.sio.on("*", self._record)
        self.refused: Any = None
        self.sio.on("connect_error", self._connect_error)

    async def _record(self, event: str, *args: Any) -> None:
        data = args[0] if args else None
        self.events.setdefault(event, []).append(data)
        if event == "chat.message":
            self.last_seen = max(self.last_seen, data["id"])
        elif event == "chat.history" and data["messages"]:
            self.last_seen = max(self.last_seen, data["messages"][-1]["id"])
        self._changed.set()

    async def _connect_error(self, data: Any) -> None:
        self.refused = data
        self._changed.set()

    async def _auth(self) -> dict[str, Any]:
        # Like the page: a fresh token and the highest chat id seen, on every (re)connect.
        return {"token": self.token_fn(), "last_seen": self.last_seen}

    async def connect(self, *, wait_joined: bool = True) -> MediaClient:
        count = len(self.events.get("joined", []))
        await self.sio.connect(
            self.url,
            headers={"Origin": self.origin} if self.origin else {},
            auth=self._auth,
            transports=["websocket"],
            wait_timeout=10,
        )
        if wait_joined:
            await self.wait_for(lambda: len(self.events.get("joined", [])) > count)
            await self.wait_for(lambda: len(self.events.get("chat.history", [])) > count)
        return self

    async def call(self, event: str, data: Any = None, timeout: float = 10) -> Any:
        if data is None:
            return await self.sio.call(event, timeout=timeout)
        return await self.sio.call(event, data, timeout=timeout)

    def got(self, event: str) -> list[Any]:
        return self.events.get(event, [])

    @property
    def sid(self) -> str:
        return self.got("joined")[-1]["sid"]

    def participants(self) -> list[dict[str, Any]]:
        """Who is in the room as the page sees it: the highest-numbered list heard, since lists
        from other processes can arrive late (media_server/rooms.py)."""
        lists = self.got("joined")[-1:] + self.got("room.state")
        return max(lists, key=lambda s: s["version"])["participants"] if lists else []

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not predicate():
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                counts = {name: len(got) for name, got in self.events.items()}
                raise TimeoutError(
                    f"condition not met; events: {counts}; participants: {self.participants()}"
                )
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.2))
            except TimeoutError:
                pass

    async def quiet(self, seconds: float = 0.3) -> None:
        """Give the server time to deliver anything it (wrongly) would."""
        await asyncio.sleep(seconds)

    async def close(self) -> None:
        await self.sio.disconnect()


async def refused_code(url: str, auth: Any, *, origin: str | None = ORIGIN) -> str:
    """Try to connect; return how the server refused: the contract's code (the connect_error
    message), or "http_refused" when engine.io turned the handshake away before socket.io."""
    sio = socketio.AsyncClient(reconnection=False)
    seen: list[Any] = []
    sio.on("connect_error", lambda data=None: seen.append(data))
    try:
        await sio.connect(
            url,
            headers={"Origin": origin} if origin else {},
            auth=auth,
            transports=["websocket"],
            wait_timeout=5,
        )
    except socketio.exceptions.ConnectionError:
        data = seen[-1] if seen else None
        if isinstance(data, dict) and "message" in data:
            return str(data["message"])
        return "http_refused"
    await sio.disconnect()
    raise AssertionError("the server accepted the connection")
