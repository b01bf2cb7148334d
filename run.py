"""Start Oblako: `python run.py` (what `make run` calls) serves the web app on PORT.

It also starts the background worker (`flask oblako worker`: outbox delivery, reminders) and
the media server (`python -m media_server`: chat and video signalling on MEDIA_PORT) as child
processes and stops them on exit, so one command runs the whole service on the embedded
defaults. OBLAKO_WORKER=0 / OBLAKO_MEDIA=0 skip them (when they run as their own services).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from app import create_app

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
    signal.signal(signal.SIGTERM, _terminate)  # `kill` stops the worker too, like Ctrl-C
    worker = start_worker()
    media = start_media()
    try:
        app.run(host=host, port=port, debug=False, use_reloader=False, threaded=True)
    except KeyboardInterrupt:
        pass
    finally:
        stop_child(media, signal.SIGTERM)  # aiohttp closes the sockets, clients reconnect later
        stop_worker(worker)
