"""Child processes kept up: each one that exits on its own is started again, with back-off.

run.py (`make run`) supervises the media server and the worker with it, as systemd's
Restart=on-failure does in production; the topology test (tests/e2e/test_topology.py)
supervises its media processes and worker the same way. No imports of the app: a supervisor
must not need the service's configuration to keep it running.
"""

from __future__ import annotations

import logging
import subprocess
import threading
import time
from collections.abc import Callable

log = logging.getLogger("oblako.supervision")


class Supervised:
    """One child process, started again with back-off whenever it exits on its own."""

    FIRST_DELAY = 1.0
    MAX_DELAY = 30.0
    HEALTHY_AFTER = 60.0  # up this long: the next crash starts from FIRST_DELAY again

    def __init__(self, name: str, start: Callable[[], subprocess.Popen | None]) -> None:
        self.name = name
        self._start = start
        self.child = start()
        self.started_at = time.monotonic()
        self.delay = self.FIRST_DELAY
        self.restart_at: float | None = None
        self.restarts = 0

    def poll(self, now: float) -> None:
        """Notice an exit and schedule the restart; start the child when its time has come."""
        if self.child is None:
            return
        if self.restart_at is None:
            code = self.child.poll()
            if code is None:
                return
            if now - self.started_at >= self.HEALTHY_AFTER:
                self.delay = self.FIRST_DELAY
            log.warning(
                "%s (pid %s) exited with %s; starting it again in %.0f s",
                self.name,
                self.child.pid,
                code,
                self.delay,
            )
            self.restart_at = now + self.delay
            self.delay = min(self.delay * 2, self.MAX_DELAY)
            return
        if now >= self.restart_at:
            self.restart_at = None
            self.child = self._start()
            self.started_at = now
            self.restarts += 1
            log.warning("%s started again (pid %s)", self.name, self.child and self.child.pid)


class Supervisor(threading.Thread):
    """Polls the children twice a second until stop(); then nothing is restarted any more."""

    def __init__(self, children: list[Supervised]) -> None:
        super().__init__(name="oblako-supervisor", daemon=True)
        self.children = children
        self._stopping = threading.Event()

    def run(self) -> None:
        while not self._stopping.wait(0.5):
            for child in self.children:
                child.poll(time.monotonic())

    def stop(self) -> None:
        self._stopping.set()
        if self.is_alive():
            self.join()
