"""Real local servers standing in for the outside world in tests (no mock objects).

FakeSmsProvider: an HTTP server on 127.0.0.1 that records each request (path, headers, JSON
body) and answers with whatever `mode` says: "ok" (200), "error" (500), "reject" (400) or
"hang" (answers nothing until the client gives up).

FakeSmtpServer: aiosmtpd's SMTP server on 127.0.0.1, keeping every message it receives.

serve_in_thread: any socketserver-based server (http.server, Werkzeug) run in a daemon thread
that shutdown() stops at once.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import BaseServer
from typing import Any

from aiosmtpd.controller import Controller

# serve_forever() looks at its shutdown flag once per poll_interval (0.5 s by default), so every
# shutdown() waited up to half a second for nothing; each test that stops a server paid it.
POLL_INTERVAL = 0.01


def serve_in_thread(server: BaseServer, name: str = "test-server") -> threading.Thread:
    """Serve in a started daemon thread; `server.shutdown()` then returns within ~10 ms."""
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": POLL_INTERVAL}, name=name, daemon=True
    )
    thread.start()
    return thread


@dataclass
class RecordedRequest:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


class FakeSmsProvider:
    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self.mode = "ok"
        self.delay = 0.0  # seconds before answering
        self._lock = threading.Lock()
        self._release = threading.Event()
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length)
                with provider._lock:
                    provider.requests.append(
                        RecordedRequest(self.path, dict(self.headers.items()), json.loads(raw))
                    )
                    mode = provider.mode
                if provider.delay:
                    time.sleep(provider.delay)
                if mode == "hang":
                    provider._release.wait(10)
                    return
                status = {"ok": 200, "error": 500, "reject": 400}[mode]
                answer = json.dumps({"status": "accepted" if status == 200 else "error"})
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer.encode())

            def log_message(self, *args: Any) -> None:  # keep the test output quiet
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/sms"

    def start(self) -> FakeSmsProvider:
        serve_in_thread(self.server, "fake-sms")
        return self

    def stop(self) -> None:
        self._release.set()
        self.server.shutdown()
        self.server.server_close()


@dataclass
class ReceivedMail:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage


@dataclass
class _Handler:
    received: list[ReceivedMail] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = message_from_bytes(envelope.original_content, policy=policy.default)
        self.received.append(ReceivedMail(envelope.mail_from, list(envelope.rcpt_tos), message))
        return "250 Message accepted for delivery"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class FakeSmtpServer:
    def __init__(self) -> None:
        self._handler = _Handler()
        self.port = _free_port()  # Controller checks readiness by connecting: no port 0
        self._controller = Controller(self._handler, hostname="127.0.0.1", port=self.port)

    @property
    def received(self) -> list[ReceivedMail]:
        return self._handler.received

    def start(self) -> FakeSmtpServer:
        self._controller.start()
        self._running = True
        return self

    def stop(self) -> None:
        if getattr(self, "_running", False):
            self._running = False
            self._controller.stop()
