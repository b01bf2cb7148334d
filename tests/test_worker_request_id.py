"""The request id travels in a job's payload to a real worker process, which logs it
(issue 18 item 4): `flask oblako worker` on a queue file, a job enqueued inside a request."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.processes import service_env

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.once
def test_a_job_enqueued_by_a_request_is_logged_by_the_worker_with_its_id(
    app, database_url, tmp_path
):
    from huey.storage import SqliteStorage

    from app.tasks import deliver_outbox, huey
    from logs import request_id_var

    queue = tmp_path / "huey.db"
    env = service_env(app, database_url, tmp_path, LOG_FORMAT="json")
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "flask", "--app", "app:create_app", "oblako", "worker"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    # This process enqueues onto the worker's queue file, through the app's own queue object
    # (its signal puts the id into the payload), as the web app does in production.
    saved_storage = huey.storage
    huey.immediate = False
    huey.storage = SqliteStorage(huey.name, filename=str(queue))
    try:
        with app.test_request_context("/"):
            token = request_id_var.set("rid-to-worker-7")
            try:
                deliver_outbox()
            finally:
                request_id_var.reset(token)
    finally:
        huey.storage = saved_storage
        huey.immediate = True

    def job_lines() -> list[dict]:
        lines = []
        for raw in log_path.read_text(errors="replace").splitlines():
            if raw.startswith("{"):
                line = json.loads(raw)
                if line.get("logger") == "oblako.job" and line.get("task", "").endswith(
                    "deliver_outbox"
                ):
                    lines.append(line)
        return lines

    try:
        deadline = time.monotonic() + 180  # the worker boots and polls the queue file
        while not any(line["event"] == "done" for line in job_lines()):
            assert worker.poll() is None, log_path.read_text(errors="replace")
            assert time.monotonic() < deadline, log_path.read_text(errors="replace")
            time.sleep(0.2)
    finally:
        worker.send_signal(signal.SIGINT)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(5)
    lines = job_lines()
    assert {line["event"] for line in lines} == {"start", "done"}
    assert all(line["request_id"] == "rid-to-worker-7" for line in lines), lines
