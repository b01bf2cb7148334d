"""deploy/: the systemd units run what exists, the example environment names every variable
the service reads, and gunicorn with several workers reports one set of metrics."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.media_fixtures import free_port

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
SOURCES = ["config.py", "logs.py", "run.py", "app", "media_server", "views"]

# Read by the service, yet not for an administrator's env file, with the reason.
NOT_IN_ENV_FILE = {
    "FLASK_DEBUG": "development only: never in production",
    "OBLAKO_TEST_PAUSE_UPLOAD": "a test hook, refused outside OBLAKO_ENV=test",
    "HUEY_IMMEDIATE": "tests: jobs run inline",
    "HUEY_NAME": "the queue's name; the default is right",
    "HUEY_SQLITE_PATH": "the embedded default's queue file",
    "HOST": "run.py (make run) only",
    "PORT": "run.py (make run) only",
    "OBLAKO_WORKER": "run.py (make run) only",
    "OBLAKO_MEDIA": "run.py (make run) only",
    "MEDIA_HOST": "set by oblako-media@.service",
    "MEDIA_PORT": "set by oblako-media@.service (810N)",
    "PROMETHEUS_MULTIPROC_DIR": "set by oblako-web.service (its runtime directory)",
}
_READ = re.compile(
    # os.environ (not a WSGI environ), app/tasks.py's `env` mapping, config.py's _bool()
    r"""(?:os\.environ\.get|os\.environ\[|\benv\.get|_bool|getenv)\(?\s*["']([A-Z][A-Z0-9_]+)["']"""
)

pytestmark = pytest.mark.no_db


def variables_read() -> set[str]:
    names: set[str] = set()
    for source in SOURCES:
        path = ROOT / source
        for file in [path] if path.is_file() else path.rglob("*.py"):
            names.update(_READ.findall(file.read_text()))
    return names


def env_file_names() -> set[str]:
    text = (DEPLOY / "oblako.env.example").read_text()
    # A line "#NAME=" documents a variable left at its default.
    return set(re.findall(r"^#?([A-Z][A-Z0-9_]+)=", text, re.MULTILINE))


def test_the_example_environment_names_every_variable_the_service_reads():
    read = variables_read()
    assert {"DATABASE_URL", "SECRET_KEY", "TRUSTED_PROXIES", "METRICS_ALLOWED"} <= read
    missing = read - env_file_names() - set(NOT_IN_ENV_FILE)
    assert missing == set(), f"add to deploy/oblako.env.example (commented): {sorted(missing)}"
    unknown = env_file_names() - read - {"FLASK_APP", "WEB_BIND", "WEB_WORKERS", "LOG_FORMAT"}
    assert unknown == set(), f"nothing reads these: {sorted(unknown)}"


def unit(name: str) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for line in (DEPLOY / "systemd" / name).read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            values.setdefault(key.strip(), []).append(value.strip())
    return values


@pytest.mark.parametrize(
    "name", ["oblako-web.service", "oblako-worker.service", "oblako-media@.service"]
)
def test_every_unit_runs_as_oblako_from_opt_with_the_env_file_and_restarts(name):
    u = unit(name)
    assert u["User"] == ["oblako"] and u["Group"] == ["oblako"]
    assert u["WorkingDirectory"] == ["/opt/oblako"]
    assert u["EnvironmentFile"] == ["/etc/oblako/oblako.env"]
    assert u["Restart"] == ["on-failure"] and u["StartLimitIntervalSec"] == ["0"]
    assert u["ReadWritePaths"] == ["/var/lib/oblako"]
    assert u["ExecStart"][0].startswith("/opt/oblako/.venv/bin/")


def test_the_units_start_what_the_code_provides():
    web = unit("oblako-web.service")["ExecStart"][0]
    assert "--config /opt/oblako/deploy/gunicorn.conf.py 'app:create_app()'" in web
    assert (DEPLOY / "gunicorn.conf.py").is_file()
    assert (
        "Environment=PROMETHEUS_MULTIPROC_DIR=/run/oblako-web"
        in (DEPLOY / "systemd" / "oblako-web.service").read_text()
    )
    worker = unit("oblako-worker.service")["ExecStart"][0]
    assert worker.endswith("flask --app app:create_app oblako worker --workers 2")
    media = unit("oblako-media@.service")
    assert media["ExecStart"] == ["/opt/oblako/.venv/bin/python -m media_server"]
    assert "MEDIA_PORT=810%i" in media["Environment"]
    assert (ROOT / "media_server" / "__main__.py").is_file()
    from app.cli import oblako_cli

    assert {"worker", "init", "create-admin", "verify-storage"} <= set(oblako_cli.commands)


def test_gunicorn_workers_report_one_set_of_metrics(tmp_path):
    """Two gunicorn workers, each its own process: whichever answers /metrics reports the
    requests both served (prometheus-client's multiprocess mode, as oblako-web.service runs it).

    The app runs on a SQLite file of its own (no test database is touched from here)."""
    port = free_port()
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    env = {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "WEB_BIND": f"127.0.0.1:{port}",
        "WEB_WORKERS": "2",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'web.db'}",
        "REDIS_URL": "",
        "HUEY_BACKEND": "memory",
        "SECRET_KEY": "a-test-secret-of-more-than-32-characters",
        "OBLAKO_INSTANCE_DIR": str(tmp_path / "instance"),
        "STORAGE_DIR": str(tmp_path / "storage"),
        "OBLAKO_ENV": "test",
        "LOG_FORMAT": "text",
    }
    migrate = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app:create_app", "db", "upgrade"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert migrate.returncode == 0, migrate.stderr
    log = (tmp_path / "gunicorn.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--config",
            str(DEPLOY / "gunicorn.conf.py"),
            "app:create_app()",
        ],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=log,
    )
    base = f"http://127.0.0.1:{port}"

    def get(path: str) -> str:
        with urllib.request.urlopen(base + path, timeout=30) as resp:  # noqa: S310
            assert resp.status == 200
            return resp.read().decode()

    def worker_files() -> set[str]:
        return {p.name.rsplit("_", 1)[-1] for p in metrics_dir.glob("histogram_*.db")}

    try:
        deadline = time.monotonic() + 180
        while True:  # until both workers have booted and answer
            try:
                get("/healthz")
                break
            except OSError:
                assert proc.poll() is None, (tmp_path / "gunicorn.log").read_text()
                assert time.monotonic() < deadline, "gunicorn did not start"
                time.sleep(0.5)
        served = 1
        # Keep asking until both workers have served (each writes its own file): the second
        # may still be booting on a busy machine, and the kernel may favour one for a while.
        deadline = time.monotonic() + 180
        while len(worker_files()) < 2 and time.monotonic() < deadline:
            get("/healthz")
            served += 1
            time.sleep(0.02)
        assert len(worker_files()) == 2, "one worker answered every request"
        for _ in range(4):  # every scrape, whichever worker answers, counts them all
            body = get("/metrics")
            line = re.search(
                r'^oblako_http_request_duration_seconds_count\{endpoint="ops.healthz",'
                r'method="GET"\} (\S+)$',
                body,
                re.MULTILINE,
            )
            assert line and float(line.group(1)) == served, body[:2000]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()
