"""`make run` keeps its children up (issue 18, item 5): run.py starts the media server and the
worker again, with back-off, when one of them dies, as systemd's Restart=on-failure does in
production. A real run.py on free ports; its children are killed with SIGKILL (a crash)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.media_fixtures import free_port
from tests.processes import accepts, children, service_env, wait_for

ROOT = Path(__file__).resolve().parent.parent


def child_running(pid: int, marker: str) -> int | None:
    return next((c for c, cmd in children(pid).items() if marker in cmd), None)


@pytest.fixture
def service(app, database_url, tmp_path) -> Iterator[tuple[subprocess.Popen, int, Path]]:
    port, media_port = free_port(), free_port()
    env = service_env(app, database_url, tmp_path, PORT=str(port), MEDIA_PORT=str(media_port))
    log = tmp_path / "run.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "run.py"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        try:
            wait_for(
                lambda: accepts(port) and accepts(media_port),
                "the web app and media server",
                timeout=120,
            )
        except AssertionError:
            print(log.read_text(errors="replace"))
            raise
        yield proc, media_port, log
    finally:
        print(log.read_text(errors="replace"))  # shown by pytest when the test failed
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


@pytest.mark.once
def test_a_killed_media_server_and_worker_come_back(service):
    proc, media_port, log = service
    media = child_running(proc.pid, "media_server")
    worker = child_running(proc.pid, "oblako worker")
    assert media and worker, children(proc.pid)

    os.kill(media, signal.SIGKILL)
    again = wait_for(
        lambda: (c := child_running(proc.pid, "media_server")) and c != media and c,
        "a new media server",
    )
    wait_for(lambda: accepts(media_port), "the media server's port")
    # It serves socket.io again (engine.io's handshake over polling).
    with urllib.request.urlopen(
        f"http://127.0.0.1:{media_port}/socket.io/?EIO=4&transport=polling", timeout=10
    ) as response:
        assert response.status == 200 and b'"sid"' in response.read()

    os.kill(worker, signal.SIGKILL)
    worker_again = wait_for(
        lambda: (c := child_running(proc.pid, "oblako worker")) and c != worker and c,
        "a new worker",
    )
    text = log.read_text(errors="replace")
    assert f"media server (pid {media}) exited with -9; starting it again in 1 s" in text
    assert f"media server started again (pid {again})" in text
    assert f"worker (pid {worker}) exited with -9" in text

    # A clean stop takes the children along, and nothing is started again.
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0  # the worker's graceful stop may take a while on a busy machine
    for pid in (again, worker_again):
        wait_for(lambda pid=pid: not Path(f"/proc/{pid}").exists(), f"child {pid} to end")
