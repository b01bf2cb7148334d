"""Oblako configuration: embedded defaults, overridden by the environment.

Everything a deployment changes comes from environment variables; the defaults run the whole
service on one machine (SQLite, files under instance/, SMS and e-mail to the outbox table).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import os
import secrets
import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any

from flask_appbuilder.const import AUTH_DB

BASE_DIR = Path(__file__).resolve().parent
INSTANCE_DIR = Path(os.environ.get("OBLAKO_INSTANCE_DIR", BASE_DIR / "instance")).resolve()


def _secret_key() -> str:
    """SECRET_KEY from the environment, else one generated once and kept in instance/."""
    if key := os.environ.get("SECRET_KEY"):
        return key
    path = INSTANCE_DIR / "secret_key"
    if not path.exists():
        INSTANCE_DIR.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(secrets.token_urlsafe(48))
        tmp.chmod(0o600)
        tmp.replace(path)
    return path.read_text().strip()


def _bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}


def _database_url() -> str:
    url = os.environ.get("DATABASE_URL") or f"sqlite:///{INSTANCE_DIR / 'oblako.db'}"
    # psycopg 3 is the driver we ship; accept the common postgres:// spellings.
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


WAL_SIZE_LIMIT = 16 * 1024 * 1024  # bytes: the log's size kept after a checkpoint
SQLITE_LOCK_WAIT_SECONDS = 30


class SQLiteConnection(sqlite3.Connection):
    """Every connection to a SQLite file puts it in WAL mode with synchronous=NORMAL.

    The web app, the worker and the media server share the file: in WAL readers never block
    the writer nor it them, and a commit appends to the log without an fsync (NORMAL syncs at
    checkpoints; the database stays consistent after a power loss, the last commits may be
    lost only then, as SQLite documents). journal_mode is stored in the file, so the first
    connection switches it; an in-memory database answers "memory" and is left as it is.

    The log file keeps the size of its longest run between checkpoints (a chat burst grew it to
    ≈ 40 MB) unless a limit is set: the connection that restarts the log after a checkpoint
    truncates it to WAL_SIZE_LIMIT. Every connection sets it, since any may be that one.
    """

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        sqlite_pragmas(self.cursor())


def sqlite_pragmas(cursor: Any) -> None:
    """The settings above, on a new connection's DB-API cursor: sqlite3's own (the web app's
    SQLiteConnection) or SQLAlchemy's aiosqlite adapter (the media server's connect event)."""
    cursor.execute("PRAGMA journal_mode=WAL")
    if str(cursor.fetchone()[0]).lower() == "wal":
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
    # SQLite serialises writers: wait for the lock (bookings under load) instead of failing
    # with "database is locked" after the driver's default 5 s.
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_LOCK_WAIT_SECONDS * 1000}")
    cursor.close()


def sqlite_connect_args() -> dict:
    """connect_args for every sync SQLite engine of the service (web app, worker)."""
    return {"timeout": SQLITE_LOCK_WAIT_SECONDS, "factory": SQLiteConnection}


def _engine_options(url: str) -> dict:
    if url.startswith("sqlite"):
        return {"pool_pre_ping": True, "connect_args": sqlite_connect_args()}
    return {"pool_pre_ping": True}


def build_config() -> dict:
    """Return the configuration as a dict, read from the environment at call time."""
    database_url = _database_url()
    redis_url = os.environ.get("REDIS_URL", "")
    return {
        "SECRET_KEY": _secret_key(),
        "DEBUG": _bool("FLASK_DEBUG", False),
        "TESTING": False,
        "OBLAKO_ENV": os.environ.get("OBLAKO_ENV", "development"),
        "INSTANCE_DIR": str(INSTANCE_DIR),
        # Database
        "SQLALCHEMY_DATABASE_URI": database_url,
        "SQLALCHEMY_TRACK_MODIFICATIONS": False,
        "SQLALCHEMY_ENGINE_OPTIONS": _engine_options(database_url),
        # Flask-AppBuilder
        "APP_NAME": "Health Cloud",  # replaced by its translation in create_app()
        "APP_THEME": "",
        "AUTH_TYPE": AUTH_DB,
        "AUTH_ROLE_ADMIN": "Admin",
        "AUTH_ROLE_PUBLIC": "Public",
        "AUTH_USER_REGISTRATION": False,  # our own patient registration replaces FAB's
        "FAB_ADD_SECURITY_VIEWS": True,
        "FAB_UPDATE_PERMS": True,
        "FAB_API_SWAGGER_UI": False,
        "FAB_SECURITY_MANAGER_CLASS": "app.security.OblakoSecurityManager",
        "FAB_INDEX_VIEW": "views.home.HomeView",
        "FAB_BASE_TEMPLATE": "oblako/baselayout.html",
        "FAB_PASSWORD_COMPLEXITY_ENABLED": True,
        "FAB_PASSWORD_COMPLEXITY_VALIDATOR": "app.passwords.fab_password_validator",
        # Languages: Russian first, English second.
        "BABEL_DEFAULT_LOCALE": "ru",
        "BABEL_DEFAULT_FOLDER": str(BASE_DIR / "translations"),
        "BABEL_TRANSLATION_DIRECTORIES": str(BASE_DIR / "translations"),
        "LANGUAGES": {
            "ru": {"flag": "ru", "name": "Русский"},
            "en": {"flag": "gb", "name": "English"},
        },
        "DEFAULT_TIMEZONE": os.environ.get("OBLAKO_DEFAULT_TZ", "Europe/Moscow"),
        # Sessions and cookies
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "SESSION_COOKIE_SECURE": _bool("SESSION_COOKIE_SECURE", False),
        "REMEMBER_COOKIE_HTTPONLY": True,
        "REMEMBER_COOKIE_SECURE": _bool("SESSION_COOKIE_SECURE", False),
        "PERMANENT_SESSION_LIFETIME": timedelta(hours=12),
        "WTF_CSRF_ENABLED": True,
        "WTF_CSRF_TIME_LIMIT": None,
        "JWT_ACCESS_TOKEN_EXPIRES": timedelta(minutes=30),
        # Sign-in throttling (failures per window): per account and per client address.
        "LOGIN_FAILURES_PER_ACCOUNT": os.environ.get("LOGIN_FAILURES_PER_ACCOUNT", "5/15minutes"),
        "LOGIN_FAILURES_PER_IP": os.environ.get("LOGIN_FAILURES_PER_IP", "30/15minutes"),
        "RATELIMIT_STORAGE_URI": redis_url or "memory://",
        # Proxies in front of the web app (nginx: 1): the client's address is then taken from
        # X-Forwarded-For, as many entries from the end (app/ops/requests.py). 0 = none.
        "TRUSTED_PROXIES": int(os.environ.get("TRUSTED_PROXIES", "0")),
        # Who may read /metrics (addresses or networks, comma-separated): Prometheus.
        "METRICS_ALLOWED": os.environ.get("METRICS_ALLOWED", "127.0.0.1/32,::1/128"),
        "REDIS_URL": redis_url,
        # Password policy
        "PASSWORD_MIN_LENGTH": 8,
        # One-time passwords sent to imported referral patients stop working after these days.
        "ONE_TIME_PASSWORD_DAYS": int(os.environ.get("ONE_TIME_PASSWORD_DAYS", "7")),
        "CONSENT_POLICY_VERSION": os.environ.get("CONSENT_POLICY_VERSION", "2026-11"),
        # Self-registration: the phone is confirmed with an SMS code before the account exists
        # (app/phone_confirmation.py). Codes sent per number and per client address (initial
        # and «send again» alike), and «send again» per registration.
        "REGISTRATION_CODES_PER_PHONE": os.environ.get("REGISTRATION_CODES_PER_PHONE", "5/hour"),
        "REGISTRATION_CODES_PER_IP": os.environ.get("REGISTRATION_CODES_PER_IP", "20/hour"),
        "REGISTRATION_CODE_RESEND": os.environ.get("REGISTRATION_CODE_RESEND", "1/minute"),
        "REGISTRATION_CODE_MINUTES": int(os.environ.get("REGISTRATION_CODE_MINUTES", "10")),
        "REGISTRATION_CODE_ATTEMPTS": int(os.environ.get("REGISTRATION_CODE_ATTEMPTS", "5")),
        # An unconfirmed registration (its data, the password's hash) is removed after this.
        "REGISTRATION_PENDING_MINUTES": int(os.environ.get("REGISTRATION_PENDING_MINUTES", "60")),
        # A signed-in patient's tries to change phone or e-mail (each says whether it is taken).
        "PROFILE_CONTACT_CHANGES_PER_USER": os.environ.get(
            "PROFILE_CONTACT_CHANGES_PER_USER", "10/hour"
        ),
        # Static files, content-hashed and compressed at start-up (app/assets.py)
        "STATIC_BUILD_DIR": os.environ.get("STATIC_BUILD_DIR", str(INSTANCE_DIR / "static")),
        # Medical documents
        "STORAGE_DIR": os.environ.get("STORAGE_DIR", str(INSTANCE_DIR / "storage")),
        "MAX_DOCUMENT_BYTES": int(os.environ.get("MAX_DOCUMENT_BYTES", 50 * 1024 * 1024)),
        "MAX_CONTENT_LENGTH": int(os.environ.get("MAX_DOCUMENT_BYTES", 50 * 1024 * 1024))
        + 1024 * 1024,
        # A patient's own uploads: at most this many documents a day and bytes in all (far above
        # a real patient's needs; staff uploads are not limited). app/quotas.py
        "PATIENT_UPLOADS_PER_DAY": int(os.environ.get("PATIENT_UPLOADS_PER_DAY", "50")),
        "PATIENT_UPLOAD_TOTAL_BYTES": int(os.environ.get("PATIENT_UPLOAD_TOTAL_BYTES", 2 * 2**30)),
        # A stored file no row points to is moved to <root>/orphans/ once this old (seconds):
        # younger, it may belong to a transaction still in flight. app/storage.py
        "STORAGE_ORPHAN_GRACE_SECONDS": int(os.environ.get("STORAGE_ORPHAN_GRACE_SECONDS", "3600")),
        # Test hook only (refused unless OBLAKO_ENV=test): uploads stop at this point for good.
        "TEST_PAUSE_UPLOAD": os.environ.get("OBLAKO_TEST_PAUSE_UPLOAD", ""),
        # The doctor's conclusion PDF embeds this Cyrillic TrueType font (installed by
        # `make setup` from Debian's fonts-dejavu-core); missing → a clear error, no fallback.
        "CONCLUSION_FONT_PATH": os.environ.get(
            "CONCLUSION_FONT_PATH", "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
        ),
        # Outbox: "outbox" keeps SMS and e-mail in the table staff can read.
        # The sign-in address sent in referral SMS (set it to the public HTTPS address).
        "PUBLIC_SIGN_IN_URL": os.environ.get("PUBLIC_SIGN_IN_URL", ""),
        "SMS_BACKEND": os.environ.get("SMS_BACKEND", "outbox"),
        "EMAIL_BACKEND": os.environ.get("EMAIL_BACKEND", "outbox"),
        # SMS_BACKEND=http: POST {to, text, id} as JSON with a bearer token (app/outbox.py).
        "SMS_HTTP_URL": os.environ.get("SMS_HTTP_URL", ""),
        "SMS_HTTP_TOKEN": os.environ.get("SMS_HTTP_TOKEN", ""),
        "SMS_HTTP_TIMEOUT": float(os.environ.get("SMS_HTTP_TIMEOUT", "10")),
        # EMAIL_BACKEND=smtp
        "SMTP_HOST": os.environ.get("SMTP_HOST", "localhost"),
        "SMTP_PORT": int(os.environ.get("SMTP_PORT", "587")),
        "SMTP_USER": os.environ.get("SMTP_USER", ""),
        "SMTP_PASSWORD": os.environ.get("SMTP_PASSWORD", ""),
        "SMTP_STARTTLS": _bool("SMTP_STARTTLS", True),
        "SMTP_SSL": _bool("SMTP_SSL", False),
        "SMTP_TIMEOUT": float(os.environ.get("SMTP_TIMEOUT", "10")),
        "SMTP_FROM": os.environ.get("SMTP_FROM", "Облако здоровья <noreply@localhost>"),
        # Delivery retries: back-off doubles from OUTBOX_RETRY_SECONDS; failed after MAX_ATTEMPTS.
        "OUTBOX_MAX_ATTEMPTS": int(os.environ.get("OUTBOX_MAX_ATTEMPTS", "5")),
        "OUTBOX_RETRY_SECONDS": int(os.environ.get("OUTBOX_RETRY_SECONDS", "60")),
        # A claimed message is held for the send timeout plus this margin (app/outbox.py).
        "OUTBOX_LEASE_MARGIN_SECONDS": float(os.environ.get("OUTBOX_LEASE_MARGIN_SECONDS", "10")),
        # Background jobs (app/tasks.py): "sqlite" (instance/huey.db) unless REDIS_URL is set.
        "HUEY_BACKEND": os.environ.get("HUEY_BACKEND", "redis" if redis_url else "sqlite"),
        # Referral tables (app/referrals/): at most this many patient rows per file.
        "REFERRAL_MAX_ROWS": int(os.environ.get("REFERRAL_MAX_ROWS", 20000)),
        # Rows imported per committed chunk; an import without progress for IMPORT_STALL_SECONDS
        # has lost its worker and is resumed by the next one (app/referrals/recovery.py).
        "REFERRAL_IMPORT_CHUNK_ROWS": int(os.environ.get("REFERRAL_IMPORT_CHUNK_ROWS", 500)),
        "IMPORT_STALL_SECONDS": float(os.environ.get("IMPORT_STALL_SECONDS", 300)),
        # Consultations and duty shifts are scheduled at most this many days ahead (app/dates.py).
        "SCHEDULE_HORIZON_DAYS": int(os.environ.get("SCHEDULE_HORIZON_DAYS", 365)),
        # Duty doctor booking: how many upcoming bookings one patient may hold at once.
        "MAX_UPCOMING_DUTY_BOOKINGS": int(os.environ.get("MAX_UPCOMING_DUTY_BOOKINGS", 2)),
        # Media server (media_server/, docs/media-contract.md): socket.io chat + WebRTC signalling.
        # MEDIA_PUBLIC_URL is where browsers reach it; empty = the page's host on MEDIA_PORT.
        "MEDIA_HOST": os.environ.get("MEDIA_HOST", "127.0.0.1"),
        "MEDIA_PORT": int(os.environ.get("MEDIA_PORT", "5001")),
        "MEDIA_PUBLIC_URL": os.environ.get("MEDIA_PUBLIC_URL", ""),
        # Origins allowed to open a socket (never "*"); empty = the web app on localhost:PORT.
        "MEDIA_ALLOWED_ORIGINS": _list(os.environ.get("MEDIA_ALLOWED_ORIGINS", ""))
        or _local_origins(int(os.environ.get("PORT", "5000"))),
        # Join tokens are signed with a key derived from SECRET_KEY unless this one is set.
        "MEDIA_TOKEN_SECRET": os.environ.get("MEDIA_TOKEN_SECRET", ""),
        "MEDIA_TOKEN_TTL_SECONDS": min(int(os.environ.get("MEDIA_TOKEN_TTL_SECONDS", "300")), 300),
        # The room opens this many minutes before the start (the service's promise: 15).
        "MEDIA_ROOM_OPENS_MINUTES": int(os.environ.get("MEDIA_ROOM_OPENS_MINUTES", "15")),
        # ICE servers for RTCPeerConnection as JSON, e.g.
        # [{"urls": "stun:stun.example.org:3478"},
        #  {"urls": "turn:turn.example.org:3478", "username": "u", "credential": "p"}]
        # Empty list = host candidates only (enough on one network, as in the tests).
        "MEDIA_ICE_SERVERS": _json_list(os.environ.get("MEDIA_ICE_SERVERS", "[]")),
        # TURN (coturn, use-auth-secret): each join gets a credential for TURN_URLS that expires
        # after TURN_CREDENTIAL_TTL_SECONDS (app/turn.py). TURN_SECRET = coturn's
        # static-auth-secret; empty = no TURN. TURN_URLS, comma-separated, e.g.
        # turn:turn.example.org:3478?transport=udp,turns:turn.example.org:443?transport=tcp
        "TURN_SECRET": os.environ.get("TURN_SECRET", ""),
        "TURN_URLS": _list(os.environ.get("TURN_URLS", "")),
        "TURN_CREDENTIAL_TTL_SECONDS": int(os.environ.get("TURN_CREDENTIAL_TTL_SECONDS", "14400")),
        # "all" (direct when possible) or "relay" (every call through TURN: neither side learns
        # the other's address; needs TURN).
        "MEDIA_ICE_TRANSPORT_POLICY": _ice_policy(os.environ.get("MEDIA_ICE_TRANSPORT_POLICY", "")),
        # Several media processes share rooms through Redis (python-socketio's Redis manager).
        "MEDIA_REDIS_URL": os.environ.get("MEDIA_REDIS_URL", ""),
        "MEDIA_RECORDINGS_DIR": os.environ.get(
            "MEDIA_RECORDINGS_DIR", str(INSTANCE_DIR / "storage" / "recordings")
        ),
        # A page sends its video to the relay at most at this rate (kbit/s). The relay forwards
        # it as it is, to every other participant and into a recording (≈ 7.5 MB a minute at
        # 1000), so this is also what a phone on the other end must receive.
        "MEDIA_RELAY_VIDEO_KBPS": int(os.environ.get("MEDIA_RELAY_VIDEO_KBPS", "1000")),
    }


def _list(raw: str) -> list[str]:
    return [item.strip() for item in raw.split(",") if item.strip()]


def _local_origins(port: int) -> list[str]:
    return [f"http://127.0.0.1:{port}", f"http://localhost:{port}"]


def _ice_policy(raw: str) -> str:
    value = raw.strip().lower() or "all"
    if value not in {"all", "relay"}:
        raise ValueError("MEDIA_ICE_TRANSPORT_POLICY must be all or relay")
    return value


def _json_list(raw: str) -> list:
    value = json.loads(raw or "[]")
    if not isinstance(value, list):
        raise ValueError("MEDIA_ICE_SERVERS must be a JSON list")
    return value


def address_allowed(address: str | None, allowed: str) -> bool:
    """Whether `address` is in one of the comma-separated networks of `allowed` (METRICS_ALLOWED:
    the web app's and every media process's /metrics answer only those)."""
    try:
        ip = ipaddress.ip_address(address or "")
        networks = [
            ipaddress.ip_network(n.strip(), strict=False) for n in allowed.split(",") if n.strip()
        ]
    except ValueError:
        return False
    return any(ip in net for net in networks)


def media_token_key(cfg: dict) -> bytes:
    """The key that signs media join tokens: shared by the web app (mints) and media_server
    (verifies), which both read config.py; a derived key keeps SECRET_KEY itself out of it."""
    if cfg.get("MEDIA_TOKEN_SECRET"):
        return str(cfg["MEDIA_TOKEN_SECRET"]).encode()
    return hmac.new(str(cfg["SECRET_KEY"]).encode(), b"oblako-media-join", hashlib.sha256).digest()
