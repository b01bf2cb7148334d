"""Start Oblako: `python run.py` (what `make run` calls) serves the web app on PORT.

It also starts the background worker (`flask oblako worker`: outbox delivery, reminders) as a
child process and stops it on exit, so one command runs the whole service on the embedded
defaults. OBLAKO_WORKER=0 skips the worker (when it runs as its own service).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from app import create_app

app = create_app()


def start_worker() -> subprocess.Popen | None:
    if os.environ.get("OBLAKO_WORKER", "1").strip().lower() in {"0", "false", "no", "off"}:
        return None
    here = Path(__file__).resolve().parent
    command = [sys.executable, "-m", "flask", "--app", str(here / "run.py"), "oblako", "worker"]
    return subprocess.Popen(command, cwd=here, env={**os.environ, "OBLAKO_WORKER": "0"})  # noqa: S603


def stop_worker(worker: subprocess.Popen | None) -> None:
    if worker is None or worker.poll() is not None:
        return
    worker.send_signal(signal.SIGINT)  # Huey's graceful stop: running tasks finish
    try:
        worker.wait(timeout=15)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(0)


if __name__ == "__main__":
    port = int(os.environ.get("PORT", "5000"))
    host = os.environ.get("HOST", "127.0.0.1")
    signal.signal(signal.SIGTERM, _terminate)  # `kill` stops the worker too, like Ctrl-C
    worker = start_worker()
    try:
        app.run(host=host, port=port, debug=False, use_reloader=False, threaded=True)
    except KeyboardInterrupt:
        pass
    finally:
        stop_worker(worker)
