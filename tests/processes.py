"""Helpers for tests that watch other processes (run.py's supervision, the worker, the
production topology): poll for a condition, list a process's children, probe a port.
Shared here so that every such test waits and looks the same way."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def inherited_environ() -> dict[str, str]:
    """This process's environment without the service's own settings (OBLAKO_*, HUEY_*): a
    child started by a test gets only the settings the test gives it."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("OBLAKO_", "HUEY_"))}


def service_env(app: Any, database_url: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a service process (run.py, the worker) started by a test: the test's
    database, Redis, storage and secret, a real queue in a SQLite file of its own (not the
    tests' immediate mode), its instance folder under `tmp_path`; `extra` adds or overrides."""
    return {
        **inherited_environ(),
        "OBLAKO_ENV": "development",
        "OBLAKO_INSTANCE_DIR": str(tmp_path / "instance"),
        "SECRET_KEY": str(app.config["SECRET_KEY"]),
        "DATABASE_URL": database_url,
        "REDIS_URL": app.config["REDIS_URL"],
        "STORAGE_DIR": app.config["STORAGE_DIR"],
        "HUEY_BACKEND": "sqlite",
        "HUEY_SQLITE_PATH": str(tmp_path / "huey.db"),
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


def wait_for(
    condition: Callable[[], object], what: str, timeout: float = 90.0, interval: float = 0.05
) -> object:
    """Poll until `condition()` is truthy and return it (another process gives no event to
    wait on); fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def children(pid: int) -> dict[int, str]:
    """pid → command line of each living (not zombie) child of `pid`."""
    found: dict[int, str] = {}
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except FileNotFoundError:
        return found
    for task in tasks:
        try:
            listed = (task / "children").read_text().split()
        except (FileNotFoundError, ProcessLookupError):
            continue  # a thread that ended meanwhile
        for child in listed:
            try:
                cmdline = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ")
                status = Path(f"/proc/{child}/stat").read_text().split()[2]
            except FileNotFoundError:
                continue
            if status != "Z":
                found[int(child)] = cmdline.decode(errors="replace")
    return found


def accepts(port: int) -> bool:
    """Does something accept TCP connections on 127.0.0.1:`port`?"""
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0
