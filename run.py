"""Start Oblako: `python run.py` (what `make run` calls) serves the web app on PORT.

It also starts the background worker (`flask oblako worker`: outbox delivery, reminders) and
the media server (`python -m media_server`: chat and video signalling on MEDIA_PORT) as child
processes and stops them on exit, so one command runs the whole service on the embedded
defaults. OBLAKO_WORKER=0 / OBLAKO_MEDIA=0 skip them (when they run as their own services).

A child that dies is started again (as systemd's Restart=on-failure does in production), after
a back-off that doubles from 1 s up to 30 s while it keeps dying and starts afresh once a child
has stayed up for a minute; each exit and restart is logged.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

from app import create_app
from supervision import Supervised, Supervisor

app = create_app()


def _disabled(name: str) -> bool:
    return os.environ.get(name, "1").strip().lower() in {"0", "false", "no", "off"}


def start_worker() -> subprocess.Popen | None:
    if _disabled("OBLAKO_WORKER"):
        return None
    here = Path(__file__).resolve().parent
    command = [sys.executable, "-m", "flask", "--app", str(here / "run.py"), "oblako", "worker"]
    return subprocess.Popen(command, cwd=here, env={**os.environ, "OBLAKO_WORKER": "0"})  # noqa: S603


def start_media() -> subprocess.Popen | None:
    if _disabled("OBLAKO_MEDIA"):
        return None
    here = Path(__file__).resolve().parent
    command = [sys.executable, "-m", "media_server"]
    return subprocess.Popen(command, cwd=here, env={**os.environ, "OBLAKO_MEDIA": "0"})  # noqa: S603


def stop_child(child: subprocess.Popen | None, sig: int = signal.SIGINT) -> None:
    if child is None or child.poll() is not None:
        return
    child.send_signal(sig)
    try:
        child.wait(timeout=15)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def stop_worker(worker: subprocess.Popen | None) -> None:
    stop_child(worker, signal.SIGINT)  # Huey's graceful stop: running tasks finish


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(0)


if __name__ == "__main__":
    port = int(os.environ.get("PORT", "5000"))
    host = os.environ.get("HOST", "127.0.0.1")
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    signal.signal(signal.SIGTERM, _terminate)  # `kill` stops the worker too, like Ctrl-C
    worker = Supervised("worker", start_worker)
    media = Supervised("media server", start_media)
    supervisor = Supervisor([worker, media])
    supervisor.start()
    try:
        app.run(host=host, port=port, debug=False, use_reloader=False, threaded=True)
    except KeyboardInterrupt:
        pass
    finally:
        supervisor.stop()  # first: a child stopped below is not started again
        stop_child(media.child, signal.SIGTERM)  # aiohttp closes the sockets, clients reconnect
        stop_worker(worker.child)
