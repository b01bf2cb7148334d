"""Benches over HTTP: the app served by gunicorn, a plain Flask app beside it served the same
way, and a small HTTP client with a session cookie. Not a bench itself.

- `Served("module:factory()", env)`: gunicorn on a free loopback port running an app factory
  of a bench module (this one's below, bench_booking_race's plain app), started and stopped by
  the bench; both sides of a comparison run under the same gunicorn settings (`GUNICORN_PAGES`
  for one client at a time, `GUNICORN_RACE` for many).
- `service_app()`: the real app (create_app with common.bench_config) on the bench database.
- `plain_app()`: the baseline of the list pages. For each page it replays the statements the
  service sent for that page (caught in-process by common.capture_page, parameters included)
  on one pooled connection, then renders every row they return into the service's own layout
  (the page's HTML outside its content block, cut from the service's answer). It checks the
  same session cookie (same SECRET_KEY): no sign-in, no session, no page.
- `HttpClient`: http.client with a cookie jar of one cookie (the session), sign-in through the
  real form (its CSRF token read from the form when the app asks for one).
"""

from __future__ import annotations

import http.client
import os
import pickle
import re
import socket
import statistics
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import (
    BENCH_PASSWORD,
    ROOT,
    CapturedPage,
    QueryCounter,
    bench_config,
    capture_page,
    login,
    short_count,
)
from fair import Comparison, compare

BENCH_DIR = Path(__file__).resolve().parent
GUNICORN = str(Path(sys.executable).with_name("gunicorn"))
# One sync worker: the list pages are measured one request at a time (latency).
GUNICORN_PAGES = ("--workers", "1", "--worker-class", "sync")
# The race: as many requests in flight as a small production server takes.
GUNICORN_RACE = ("--workers", "2", "--worker-class", "gthread", "--threads", "16")

ENV_URL = "BENCH_DATABASE_URL"
ENV_STORAGE = "BENCH_STORAGE_DIR"
ENV_REPLAY = "BENCH_REPLAY"
ENV_CONFIG = "BENCH_CONFIG"  # a repr() of extra config keys (literals only)

_CSRF_RE = re.compile(
    r'name="csrf_token"[^>]*value="([^"]+)"|value="([^"]+)"[^>]*name="csrf_token"'
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Served:
    """`with Served("served:service_app()", env) as base_url:` — gunicorn serving an app
    factory of a bench module until the block ends (SIGTERM to the master, SIGKILL after 10 s)."""

    def __init__(
        self, factory: str, env: dict[str, str], args: tuple[str, ...] = GUNICORN_PAGES
    ) -> None:
        self.factory, self.env, self.args = factory, env, args
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> str:
        cmd = [
            GUNICORN, "--bind", f"127.0.0.1:{self.port}", *self.args, "--chdir", str(BENCH_DIR),
            "--log-level", "warning", "--timeout", "300", self.factory,
        ]  # fmt: skip
        self.proc = subprocess.Popen(cmd, env={**os.environ, **self.env}, cwd=ROOT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn {self.factory} exited with {self.proc.returncode}")
            with suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2):
                return self.base_url
            time.sleep(0.1)
        self.__exit__()
        raise RuntimeError(f"gunicorn {self.factory} did not listen within 120 s")

    def __exit__(self, *exc: object) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


def served_env(database_url: str, storage_dir: str, **extra: Any) -> dict[str, str]:
    """What the factories below read: the bench database, its storage, extra config keys."""
    return {ENV_URL: database_url, ENV_STORAGE: storage_dir, ENV_CONFIG: repr(extra)}


def _config(**overrides: Any) -> dict[str, Any]:
    import ast

    extra = ast.literal_eval(os.environ.get(ENV_CONFIG) or "{}")
    # SERVER_NAME would make Flask answer 404 to the loopback address and port.
    return bench_config(
        os.environ[ENV_URL], os.environ[ENV_STORAGE], SERVER_NAME=None, **extra, **overrides
    )


# ---------------------------------------------------------------------------------------------
# The factories gunicorn runs
# ---------------------------------------------------------------------------------------------


def service_app() -> Any:
    import logging

    from app import create_app

    logging.getLogger("flask_appbuilder").setLevel(logging.ERROR)
    return create_app(_config())


@dataclass
class Replay:
    """A page for the plain app: the service's statements and its layout around the content."""

    statements: list[str]
    parameters: list[Any]
    layout: str  # Jinja source: the page's HTML with `{% block content %}` in place of content


CONTENT_BLOCK = "{% block content %}{% endblock %}"
CONTENT_START = '<div class="row">'  # oblako/baselayout: main > row > flash + content


def layout_of(body: str) -> str:
    """The service page's HTML outside its content block, as a Jinja layout (oblako/baselayout:
    the content is the last thing inside `<main …><div class="row">` after the header, closed
    by the `</div>` before `</main>`)."""
    start = body.index(CONTENT_START, body.index("</header>")) + len(CONTENT_START)
    end = body.rindex("</div>", 0, body.index("</main>"))
    head, tail = body[:start], body[end:]
    return "{% raw %}" + head + "{% endraw %}" + CONTENT_BLOCK + "{% raw %}" + tail + "{% endraw %}"


def write_replays(path: Path, pages: dict[str, CapturedPage]) -> None:
    replays = {
        key: Replay(page.statements, page.parameters, layout_of(page.body))
        for key, page in pages.items()
    }
    path.write_bytes(pickle.dumps(replays))


# The page's content in the plain view: every row of every statement, in tables.
PLAIN_CONTENT = """
<h2>{{ title }}</h2>
{% for rows in results %}<table class="table table-bordered">
{% for row in rows %}<tr>{% for value in row %}<td>{{ value }}</td>{% endfor %}</tr>
{% endfor %}</table>
{% endfor %}"""


def plain_engine(url: str) -> Any:
    """An engine as the service's (config.py): pre-ping, SQLite's connection settings."""
    from sqlalchemy import create_engine

    from config import sqlite_connect_args

    options: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("sqlite"):
        options["connect_args"] = sqlite_connect_args()
    return create_engine(url, **options)


def plain_app() -> Any:
    """The simplest Flask app that does the page's work: the same SQL, the same rows, the same
    layout. No FAB, no ORM: one pooled connection, the statements as the driver got them."""
    from flask import Flask, abort, session

    config = _config()
    replays: dict[str, Replay] = pickle.loads(  # noqa: S301 - the bench's own file
        Path(os.environ[ENV_REPLAY]).read_bytes()
    )
    app = Flask(__name__)
    app.secret_key = os.environ["SECRET_KEY"]  # the service's (common.py sets it for both)
    # Compiled once, as Flask's template cache would have them after the first request.
    templates = {
        key: app.jinja_env.from_string(r.layout.replace(CONTENT_BLOCK, PLAIN_CONTENT))
        for key, r in replays.items()
    }
    engine = plain_engine(config["SQLALCHEMY_DATABASE_URI"])

    @app.get("/page/<key>")
    def page(key: str) -> str:
        if not session.get("_user_id"):
            abort(403)
        replay = replays.get(key) or abort(404)
        results = []
        with engine.connect() as conn:
            for statement, parameters in zip(replay.statements, replay.parameters, strict=True):
                result = conn.exec_driver_sql(statement, parameters)
                results.append(result.fetchall() if result.returns_rows else [])
            conn.commit()
        return templates[key].render(title=key, results=results)

    return app


# ---------------------------------------------------------------------------------------------
# The client
# ---------------------------------------------------------------------------------------------


@dataclass
class Response:
    status: int
    body: str
    location: str = ""


class HttpClient:
    """One user's browser, reduced: the session cookie and plain HTTP/1.1 requests."""

    def __init__(self, base_url: str, cookie: str = "") -> None:
        parsed = urllib.parse.urlsplit(base_url)
        self.host, self.port = parsed.hostname or "127.0.0.1", parsed.port or 80
        self.cookie = cookie  # "session=..."

    def request(self, method: str, path: str, form: dict[str, Any] | None = None) -> Response:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=300)
        headers = {"Cookie": self.cookie} if self.cookie else {}
        body = None
        if form is not None:
            body = urllib.parse.urlencode(form, doseq=True)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        try:
            conn.request(method, path, body=body, headers=headers)
            raw = conn.getresponse()
            text = raw.read().decode("utf-8", "replace")
            for name, value in raw.getheaders():
                if name.lower() == "set-cookie" and value.startswith("session="):
                    self.cookie = value.split(";", 1)[0]
            return Response(raw.status, text, raw.getheader("Location") or "")
        finally:
            conn.close()

    def get(self, path: str) -> Response:
        return self.request("GET", path)

    def post(self, path: str, form: dict[str, Any]) -> Response:
        return self.request("POST", path, form)

    def sign_in(self, username: str, password: str = BENCH_PASSWORD) -> None:
        """The real sign-in form (with its CSRF token when the app asks for one)."""
        form: dict[str, Any] = {"username": username, "password": password}
        if token := csrf_token(self.get("/login/").body):
            form["csrf_token"] = token
        response = self.post("/login/", form)
        if response.status not in (302, 303) or not self.cookie:
            raise RuntimeError(f"sign-in as {username!r} failed: HTTP {response.status}")


def csrf_token(body: str) -> str:
    m = _CSRF_RE.search(body)
    return (m.group(1) or m.group(2)) if m else ""


def median_latency_ms(client: HttpClient, path: str, requests: int) -> float:
    """Median wall-clock ms of `requests` sequential GETs (each must answer 200)."""
    timings = []
    for _ in range(requests):
        start = time.perf_counter()
        response = client.get(path)
        timings.append((time.perf_counter() - start) * 1000)
        if response.status != 200:
            raise RuntimeError(f"GET {path} answered {response.status}")
    return statistics.median(timings)


# ---------------------------------------------------------------------------------------------
# The list pages: the service against the plain view, page by page
# ---------------------------------------------------------------------------------------------

PAGE_TARGET = 0.5  # the plain view's latency ÷ the service's (issue 16)
QUERY_TARGET = 8  # statements per page, and the same at both sizes


@dataclass
class PageProbe:
    key: str  # the plain app's name for the page
    label: str
    path: str
    username: str
    check: Callable[[str], None]  # raises when the body is not the page expected


def compare_pages(
    app: Any,
    counter: QueryCounter,
    probes: list[PageProbe],
    *,
    service_url: str,
    env: dict[str, str],
    workdir: Path,
    rounds: int,
    requests: int,
) -> tuple[dict[str, CapturedPage], list[Comparison]]:
    """Each page caught in-process (statements, parameters, body: checked), then measured over
    HTTP against the plain view replaying those statements (bench/fair.py's alternated rounds;
    a round's figure is the median latency of `requests` sequential GETs)."""
    test_clients: dict[str, Any] = {}
    captured: dict[str, CapturedPage] = {}
    for probe in probes:
        if probe.username not in test_clients:
            test_clients[probe.username] = app.test_client()
            login(test_clients[probe.username], probe.username)
        captured[probe.key] = capture_page(
            test_clients[probe.username], counter, probe.path, label=probe.label, check=probe.check
        )
    replay = workdir / "replay.pickle"
    write_replays(replay, captured)
    cookies: dict[str, str] = {}
    for username in test_clients:
        http_client = HttpClient(service_url)
        http_client.sign_in(username)
        cookies[username] = http_client.cookie
    comparisons = []
    with Served("served:plain_app()", {**env, ENV_REPLAY: str(replay)}) as plain_url:
        for probe in probes:
            ours = HttpClient(service_url, cookies[probe.username])
            plain = HttpClient(plain_url, cookies[probe.username])
            plain_path = f"/page/{probe.key}"
            response = ours.get(probe.path)
            if response.status != 200:
                raise RuntimeError(f"{probe.label}: GET {probe.path} answered {response.status}")
            probe.check(response.body)  # over HTTP too: the right page for the right user
            if (
                plain.get(plain_path).status != 200
                or HttpClient(plain_url).get(plain_path).status != 403
            ):
                raise RuntimeError(f"{probe.label}: the plain view does not check the session")
            comparisons.append(
                compare(
                    f"{probe.label}: latency, service vs plain view",
                    lambda c=ours, p=probe.path: median_latency_ms(c, p, requests),
                    lambda c=plain, p=plain_path: median_latency_ms(c, p, requests),
                    unit="ms",
                    target=PAGE_TARGET,
                    higher_is_better=False,
                    rounds=rounds,
                )
            )
            print(f"    {comparisons[-1].report()}", flush=True)
    return captured, comparisons


def check_statements(
    sizes: tuple[int, int], small: dict[str, CapturedPage], large: dict[str, CapturedPage]
) -> list[str]:
    """Print statements per page at both sizes; the problems (over budget, or growing)."""
    problems = []
    s, l_ = (short_count(n) for n in sizes)
    print(f"\nStatements per page (target ≤ {QUERY_TARGET} and the same at {s} and {l_}: checked)")
    for key, a in small.items():
        b = large[key]
        bad = []
        if max(a.queries, b.queries) > QUERY_TARGET:
            bad.append(f"{max(a.queries, b.queries)} > {QUERY_TARGET}")
        if a.queries != b.queries:
            bad.append(f"grows with the rows ({a.queries} → {b.queries})")
        print(f"  {a.label:<40} {a.queries:>3} {b.queries:>3}  {'; '.join(bad) or 'ok'}")
        if bad:
            problems.append(f"{a.label}: {'; '.join(bad)}")
            for i, sql in enumerate(b.statements, 1):
                print(f"    {i:>2}. {' '.join(sql.split())[:160]}")
    return problems


if __name__ == "__main__":
    print("bench/served.py: gunicorn serving and an HTTP client, nothing to measure")
