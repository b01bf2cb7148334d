"""/healthz: can this web process serve? Database, Redis and the schema's revision.

The answer names each part and whether it is ok, never why not in detail (an error message
may carry a host name or a URL with a password): the reason goes to the log.
"""

from __future__ import annotations

import logging
from functools import cache
from pathlib import Path

from flask import Flask, current_app
from sqlalchemy import text

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"
OK = "ok"


@cache
def code_heads() -> frozenset[str]:
    """The migration heads this code expects (read from migrations/ once per process)."""
    from alembic.script import ScriptDirectory

    return frozenset(ScriptDirectory(str(MIGRATIONS_DIR)).get_heads())


def _database_and_migrations() -> tuple[str, str]:
    from app.extensions import db

    try:
        with db.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            try:
                revisions = set(
                    conn.execute(text("SELECT version_num FROM alembic_version")).scalars()
                )
            except Exception:
                log.warning("healthz: no alembic_version table", exc_info=True)
                return OK, "not migrated"
    except Exception:
        log.warning("healthz: database unreachable", exc_info=True)
        return "unreachable", "unknown"
    if revisions != code_heads():
        log.warning(
            "healthz: database at %s, code expects %s", sorted(revisions), sorted(code_heads())
        )
        return OK, "not current"
    return OK, OK


def _redis(app: Flask) -> str:
    url = app.config.get("REDIS_URL") or ""
    if not url:
        return "not configured"  # the embedded default: nothing uses Redis
    client = app.extensions.get("oblako_health_redis")
    if client is None:
        import redis

        client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        app.extensions["oblako_health_redis"] = client
    try:
        client.ping()
    except Exception:
        log.warning("healthz: redis unreachable", exc_info=True)
        return "unreachable"
    return OK


def check() -> tuple[bool, dict[str, str]]:
    """(healthy, {part: state}); every state but "ok" and "not configured" is a failure."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    database, migrations = _database_and_migrations()
    parts = {"database": database, "migrations": migrations, "redis": _redis(app)}
    healthy = all(state in (OK, "not configured") for state in parts.values())
    return healthy, parts
