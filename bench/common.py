"""Shared helpers for the bench scripts: a fresh migrated database, bulk loading, query counting
and request timing. Not a bench itself (running it prints a note and exits).

Why a fresh database per run: figures must not depend on whatever a developer's instance/ holds,
and a PostgreSQL bench must never touch the service's own database. DATABASE_URL picks the
server (a PostgreSQL URL → a new database `bench_<pid>` beside it, dropped at the end); without
it, a SQLite file in a temporary folder.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python bench/x.py` puts bench/ first, not the project root
    sys.path.insert(0, str(ROOT))

# Never write instance/secret_key from a bench, and run with the test profile's relaxed checks.
os.environ.setdefault("SECRET_KEY", "bench-secret-key-not-for-production")
os.environ.setdefault("OBLAKO_ENV", "test")

from flask import Flask  # noqa: E402
from flask.testing import FlaskClient  # noqa: E402
from sqlalchemy import Connection, Engine, create_engine, event, insert, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

BENCH_PASSWORD = "Bench2026secret"


# ---------------------------------------------------------------------------------------------
# Database and app
# ---------------------------------------------------------------------------------------------


def _admin_engine(url_str: str) -> Engine:
    url = make_url(url_str).set(database="postgres")
    return create_engine(url, isolation_level="AUTOCOMMIT")


@contextmanager
def fresh_database_url() -> Iterator[str]:
    """A brand-new empty database for this run; dropped (or deleted) afterwards."""
    base = os.environ.get("DATABASE_URL", "")
    if base.startswith(("postgres://", "postgresql")):
        url = make_url(base.replace("postgres://", "postgresql://", 1))
        url = url.set(drivername="postgresql+psycopg", database=f"bench_{os.getpid()}")
        url_str = url.render_as_string(hide_password=False)
        admin = _admin_engine(url_str)
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{url.database}"'))
        try:
            yield url_str
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)'))
            admin.dispose()
    else:
        with tempfile.TemporaryDirectory(prefix="oblako-bench-") as tmp:
            yield f"sqlite:///{Path(tmp) / 'bench.db'}"


def bench_config(database_url: str, storage_dir: str, **overrides: Any) -> dict[str, Any]:
    """The bench app's configuration: in-process (create_bench_app) and served by gunicorn
    (bench/served.py) alike."""
    return {
        # TESTING: an exception in a view propagates instead of turning into a quiet 500.
        "TESTING": True,
        "SQLALCHEMY_DATABASE_URI": database_url,
        "STORAGE_DIR": storage_dir,
        "RATELIMIT_STORAGE_URI": "memory://",
        "REDIS_URL": "",
        # Only the sign-in form of each bench user is posted; CSRF is not what we measure
        # (the booking race turns it back on: it posts the real booking form).
        "WTF_CSRF_ENABLED": False,
        # One hash for every bench user (computed once), cheap to verify at sign-in.
        "FAB_PASSWORD_HASH_METHOD": "pbkdf2:sha256:1000",
        "SERVER_NAME": "localhost",
        **overrides,
    }


def create_bench_app(database_url: str, storage_dir: str) -> Flask:
    """The real app (same views, same security) on the bench database, migrated to head."""
    import logging

    from flask_migrate import upgrade

    from app import create_app

    def quiet() -> None:
        # Figures first: FAB's notes about the views' columns are noise here. Again after
        # upgrade(): migrations/env.py re-reads alembic.ini's logging setup.
        for name in ("alembic", "flask_appbuilder"):
            logging.getLogger(name).setLevel(logging.ERROR)

    quiet()
    app = create_app(bench_config(database_url, storage_dir))
    with app.app_context():
        logging.disable(logging.INFO)  # env.py's fileConfig would print Alembic's INFO lines
        try:
            upgrade()  # the real migrations: the schema and indexes production has
        finally:
            logging.disable(logging.NOTSET)
    quiet()
    return app


# ---------------------------------------------------------------------------------------------
# Bulk loading
# ---------------------------------------------------------------------------------------------


def bulk_insert(
    conn: Connection,
    table_name: str,
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    chunk: int = 20_000,
) -> int:
    """Insert rows (tuples in `columns` order) as fast as the backend allows. Returns the count.

    PostgreSQL: COPY ... FROM STDIN through psycopg 3 (an order of magnitude faster than
    INSERT for hundreds of thousands of rows). Elsewhere: SQLAlchemy Core executemany in chunks,
    so the UTC and UUID column types still convert values the way the ORM would.
    """
    from models import Model

    table = Model.metadata.tables[table_name]
    count = 0
    if conn.dialect.name == "postgresql":
        raw = conn.connection.dbapi_connection
        cols = ", ".join(f'"{c}"' for c in columns)
        with raw.cursor() as cur, cur.copy(f'COPY "{table_name}" ({cols}) FROM STDIN') as copy:
            for row in rows:
                copy.write_row(row)
                count += 1
        return count
    stmt = insert(table)
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(dict(zip(columns, row, strict=True)))
        if len(batch) >= chunk:
            conn.execute(stmt, batch)
            count += len(batch)
            batch = []
    if batch:
        conn.execute(stmt, batch)
        count += len(batch)
    return count


def reset_sequences(conn: Connection, table_names: Iterable[str]) -> None:
    """Explicit ids bypass PostgreSQL's sequences: move them past the loaded rows."""
    if conn.dialect.name != "postgresql":
        return
    for name in table_names:
        conn.execute(
            text(
                f"SELECT setval(pg_get_serial_sequence('\"{name}\"', 'id'), "
                f'COALESCE((SELECT max(id) FROM "{name}"), 1))'
            )
        )


def analyze(conn: Connection) -> None:
    """Fresh planner statistics, as autovacuum would have them on a live server after a while."""
    conn.execute(text("ANALYZE"))


# ---------------------------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------------------------


class QueryCounter:
    """Counts statements sent to the database (before_cursor_execute) while active, and the
    time spent in them (until after_cursor_execute).

    An executemany counts once: it is one round trip in the statement log, and pages should not
    do bulk writes anyway. The statements are kept so that a page over budget can be explained.
    The SQL time is the part of a page's latency that grows with the tables; on a busy machine it
    is also steadier than the wall-clock time, which includes waiting for a CPU.
    """

    def __init__(self, engine: Engine, *, keep_parameters: bool = True) -> None:
        self.engine = engine
        self.statements: list[str] = []
        self.parameters: list[Any] = []  # the DB-API parameters of each statement
        self.keep_parameters = keep_parameters
        self.sql_seconds = 0.0
        self.active = False
        self._started: float | None = None
        event.listen(engine, "before_cursor_execute", self._before)
        event.listen(engine, "after_cursor_execute", self._after)

    def _before(self, conn, cursor, statement, parameters, context, executemany) -> None:
        if self.active:
            self.statements.append(statement)
            if self.keep_parameters:
                self.parameters.append(parameters)
            self._started = time.perf_counter()

    def _after(self, conn, cursor, statement, parameters, context, executemany) -> None:
        if self.active and self._started is not None:
            self.sql_seconds += time.perf_counter() - self._started
            self._started = None

    @contextmanager
    def counting(self) -> Iterator[list[str]]:
        self.statements = []
        self.parameters = []
        self.sql_seconds = 0.0
        self.active = True
        try:
            yield self.statements
        finally:
            self.active = False

    def close(self) -> None:
        event.remove(self.engine, "before_cursor_execute", self._before)
        event.remove(self.engine, "after_cursor_execute", self._after)


@dataclass
class CapturedPage:
    """One page as the in-process app serves it: the statements (with their DB-API parameters)
    a request sends, and the body. bench/served.py replays the statements in the plain view."""

    label: str
    path: str
    statements: list[str]
    parameters: list[Any]
    body: str

    @property
    def queries(self) -> int:
        return len(self.statements)


def capture_page(
    client: FlaskClient,
    counter: QueryCounter,
    path: str,
    *,
    label: str,
    repeats: int = 3,
    warmup: int = 3,
    check: Callable[[str], None] | None = None,
) -> CapturedPage:
    """The statements one GET of `path` sends (after `warmup` ones: templates compiled, caches
    warm); every one of `repeats` requests must send as many, else the page's count is not a
    property of the page and RuntimeError says so."""
    for _ in range(warmup):
        client.get(path)
    counts = []
    for _ in range(repeats):
        with counter.counting() as statements:
            response = client.get(path)
            body = response.get_data(as_text=True)
        if response.status_code != 200:
            raise RuntimeError(f"{label}: GET {path} answered {response.status_code}")
        counts.append(len(statements))
    if len(set(counts)) != 1:
        raise RuntimeError(f"{label}: requests sent {counts} statements: not one count")
    if check is not None:
        check(body)
    return CapturedPage(label, path, list(counter.statements), list(counter.parameters), body)


def machine_load() -> str:
    """The load average against the cores: busy neighbours inflate wall-clock latencies."""
    load1, _, _ = os.getloadavg()
    cores = os.cpu_count() or 1
    note = "  (busy: latencies are inflated, rerun on a quiet machine)" if load1 > cores else ""
    return f"load average {load1:.2f} on {cores} cores{note}"


def login(client: FlaskClient, username: str, password: str = BENCH_PASSWORD) -> None:
    """Sign in through the real form (CSRF is off in the bench app)."""
    response = client.post(
        "/login/", data={"username": username, "password": password}, follow_redirects=False
    )
    if response.status_code not in (302, 303):
        raise RuntimeError(f"sign-in as {username!r} failed: HTTP {response.status_code}")
    with client.session_transaction() as sess:
        if not sess.get("_user_id"):
            raise RuntimeError(f"sign-in as {username!r} did not start a session")


def short_count(n: int) -> str:
    """1000 → "1k", 2500 → "2500": the sizes in the benches' table headings."""
    return f"{n // 1000}k" if n % 1000 == 0 else str(n)


class Stopwatch:
    """`with Stopwatch("loading") as sw: ...` prints how long a set-up step took."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.seconds = 0.0

    def __enter__(self) -> Stopwatch:
        self.start = time.perf_counter()
        print(f"  {self.what} ...", end="", flush=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start
        print(f" {self.seconds:.1f} s", flush=True)


if __name__ == "__main__":
    # `make bench` runs every bench/*.py; this one only holds helpers.
    print("bench/common.py: shared helpers, nothing to measure")


# ---------------------------------------------------------------------------------------------
# Bulk patients: accounts (ab_user + Patient role link) and patient records
# ---------------------------------------------------------------------------------------------

SURNAMES = ["Иванов", "Петров", "Сидоров", "Кузнецов", "Смирнов", "Попов", "Васильев", "Зайцев"]
NAMES = ["Анна", "Мария", "Ольга", "Сергей", "Алексей", "Елена", "Игорь", "Наталья"]
REGIONS = ["Москва", "Республика Саха (Якутия)", "Камчатский край", "Калининградская область"]

# Every NOT NULL column is given explicitly: COPY applies no Python-side defaults.
USER_COLUMNS = (
    "id first_name last_name username password active email login_count fail_login_count "
    "created_on changed_on session_generation must_change_password timezone"
).split()
PATIENT_COLUMNS = (
    "id public_id user_id surname name patronymic birth_date sex phone email region timezone "
    "source identity_status notify_sms notify_email created_at"
).split()


def next_id(conn: Connection, table: str) -> int:
    from sqlalchemy import func, select

    from models import Model

    t = Model.metadata.tables[table]
    return int(conn.execute(select(func.coalesce(func.max(t.c.id), 0))).scalar_one()) + 1


def load_patient_accounts(
    conn: Connection,
    *,
    count: int,
    first_n: int,
    role_id: int,
    password_hash: str,
    phone_prefix: str,
    email_prefix: str,
    patronymic: str,
    now: Any,
) -> int:
    """Insert `count` patients (user, Patient role link, patient record) numbered from
    `first_n`; return the id of the first patient record (the rest follow it)."""
    import uuid
    from datetime import date, timedelta

    user0, link0 = next_id(conn, "ab_user"), next_id(conn, "ab_user_role")
    patient0 = next_id(conn, "patient")
    created = now.replace(tzinfo=None)  # FAB's own columns are naive

    def users() -> Iterator[tuple]:
        for i in range(count):
            n = first_n + i
            yield (
                user0 + i, NAMES[n % 8], SURNAMES[n % 8], f"{phone_prefix}{n:07d}",
                password_hash, True, f"{email_prefix}{n}@example.org", 0, 0, created, created,
                0, False, "Europe/Moscow",
            )  # fmt: skip

    def patients() -> Iterator[tuple]:
        for i in range(count):
            n = first_n + i
            yield (
                patient0 + i, uuid.uuid4(), user0 + i, f"{SURNAMES[n % 8]}{n}", NAMES[n % 8],
                patronymic, date(1950 + n % 50, 1 + n % 12, 1 + n % 28),
                "female" if n % 2 else "male", f"{phone_prefix}{n:07d}",
                f"{email_prefix}{n}@example.org", REGIONS[n % 4], "Europe/Moscow", "self",
                "unverified", True, True, now - timedelta(minutes=n),
            )  # fmt: skip

    bulk_insert(conn, "ab_user", USER_COLUMNS, users())
    bulk_insert(
        conn,
        "ab_user_role",
        ("id", "user_id", "role_id"),
        ((link0 + i, user0 + i, role_id) for i in range(count)),
    )
    bulk_insert(conn, "patient", PATIENT_COLUMNS, patients())
    return patient0
