"""The web app as a separately started process, for tests about what several hosts share.

`web_process_factory` (a fixture, registered in conftest's pytest_plugins) starts
`python -m tests.web_process`: a fresh interpreter that builds the app with create_app() on the
test database and the test Redis (the `app` fixture's settings, passed through the environment)
and serves it over HTTP with Werkzeug's threaded server on a port of its own choosing, which it
prints on its first line. Nothing is shared with the test process but the database, Redis and
the secret — as between two web hosts behind one load balancer.

`HttpClient`: a tiny browser over urllib (cookies, no redirects followed) for such a process.
"""

from __future__ import annotations

import http.cookiejar
import json
import os
import re
import selectors
import signal
import ssl
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

ROOT = Path(__file__).resolve().parent.parent
OVERRIDES_ENV = "OBLAKO_TEST_WEB_OVERRIDES"
# The `app` fixture's settings a web process takes over (SERVER_NAME is left out: the
# process answers on 127.0.0.1:<its port>).
SHARED_SETTINGS = (
    "SECRET_KEY",
    "SQLALCHEMY_DATABASE_URI",
    "STORAGE_DIR",
    "RATELIMIT_STORAGE_URI",
    "REDIS_URL",
    "FAB_PASSWORD_HASH_METHOD",
    "LOGIN_FAILURES_PER_ACCOUNT",
    "LOGIN_FAILURES_PER_IP",
    "STATIC_BUILD_DIR",  # content-addressed: shared, not rebuilt per process
)


@dataclass
class WebProcess:
    proc: subprocess.Popen
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout:
            self.proc.stdout.close()


def start_web_process(app: Flask, log_path: Path, timeout: float = 120) -> WebProcess:
    overrides = {k: app.config[k] for k in SHARED_SETTINGS if k in app.config}
    env = {
        **os.environ,
        OVERRIDES_ENV: json.dumps(overrides),
        "SECRET_KEY": str(app.config["SECRET_KEY"]),  # build_config() reads it before overrides
        "OBLAKO_INSTANCE_DIR": str(log_path.parent / "instance"),
        "OBLAKO_ENV": "test",
        "PYTHONUNBUFFERED": "1",
    }
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.web_process"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=log,
        )
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            proc.kill()
            proc.wait(5)
            raise RuntimeError(f"web process did not start; see {log_path}")
    line = proc.stdout.readline().decode()
    match = re.fullmatch(r"PORT (\d+)\s*", line)
    if not match:
        proc.kill()
        proc.wait(5)
        raise RuntimeError(f"web process failed to start ({line!r}); see {log_path}")
    return WebProcess(proc, int(match.group(1)))


@pytest.fixture
def web_process_factory(app: Flask, tmp_path: Path) -> Iterator[Callable[[], WebProcess]]:
    """Start web app processes on the test database and Redis; stopped after the test."""
    started: list[WebProcess] = []

    def factory() -> WebProcess:
        web = start_web_process(app, tmp_path / f"web-{len(started)}.log")
        started.append(web)
        return web

    yield factory
    for web in started:
        web.stop()


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    text: str


class HttpClient:
    """Cookies kept, redirects not followed: the test reads the status and Location itself."""

    def __init__(self, base_url: str, tls: ssl.SSLContext | None = None) -> None:
        self.base_url = base_url
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()),
            _NoRedirects(),
            urllib.request.HTTPSHandler(context=tls),
        )

    def request(
        self, path: str, data: dict[str, str] | None = None, headers: dict[str, str] | None = None
    ) -> Answer:
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        req = urllib.request.Request(self.base_url + path, data=body, headers=headers or {})  # noqa: S310
        if body is not None:  # as a browser's form: over HTTPS Flask-WTF checks the referrer
            req.add_header("Referer", self.base_url + path)
        try:
            with self.opener.open(req, timeout=60) as resp:
                return Answer(resp.status, dict(resp.headers), resp.read().decode())
        except urllib.error.HTTPError as exc:  # 3xx (not followed), 4xx, 5xx
            with exc:
                return Answer(exc.code, dict(exc.headers), exc.read().decode())

    def get(self, path: str) -> Answer:
        return self.request(path)

    def post(self, path: str, data: dict[str, str]) -> Answer:
        return self.request(path, data)

    def csrf_token(self, path: str = "/login/") -> str:
        html = self.get(path).text
        match = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html) or re.search(
            r'value="([^"]+)"[^>]*name="csrf_token"', html
        )
        assert match, f"no csrf token on {path}"
        return match.group(1)


def _serve() -> None:
    from werkzeug.serving import make_server

    from app import create_app

    app = create_app(json.loads(os.environ[OVERRIDES_ENV]))
    server = make_server("127.0.0.1", 0, app, threaded=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"PORT {server.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    _serve()
