"""The production topology on loopback, for tests/e2e/test_topology.py (issue 18).

Started from the repository's own deploy/ files, changed only where a test must differ (listed
in render_nginx / coturn_config):

    Chromium ──HTTPS──► nginx (self-signed certificate, deploy/nginx/oblako.conf)
                          ├─► gunicorn, 3 workers ─┐
                          └─► media process A, B ──┼─► PostgreSQL (the test app's database)
    Chromium ◄─relay─► coturn (loopback relay on)  └─► Redis (rooms, throttling, job queue)
                                        the worker ─┘

Every process but nginx and gunicorn's own workers runs under supervision.Supervisor, the
supervisor `make run` uses (systemd's Restart=on-failure in production); gunicorn's master
restarts its workers itself. Each process writes to <tmp>/<name>.log.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from supervision import Supervised, Supervisor
from tests.processes import accepts, children, inherited_environ, wait_for

ROOT = Path(__file__).resolve().parents[2]
NGINX_SITE = ROOT / "deploy" / "nginx" / "oblako.conf"
COTURN_CONF = ROOT / "deploy" / "coturn" / "turnserver.conf"
HOST = "localhost"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def insecure_tls() -> ssl.SSLContext:
    """The test's self-signed certificate: trusted as is (a client of loopback only)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _replace(text: str, old: str, new: str, count: int = 1) -> str:
    found = text.count(old)
    assert found == count, f"deploy file changed: {old!r} found {found} times, not {count}"
    return text.replace(old, new)


@dataclass
class Ports:
    https: int = field(default_factory=free_port)
    http: int = field(default_factory=free_port)
    web: int = field(default_factory=free_port)
    media: tuple[int, int] = field(default_factory=lambda: (free_port(), free_port()))
    turn: int = field(default_factory=free_port)


class Stack:
    def __init__(self, *, database_url: str, redis_url: str, secret_key: str, tmp: Path) -> None:
        self.tmp = tmp
        self.ports = Ports()
        self.turn_secret = secrets.token_hex(16)
        self.base_url = f"https://{HOST}:{self.ports.https}"
        self.env = {
            **inherited_environ(),
            "OBLAKO_ENV": "production",
            "OBLAKO_INSTANCE_DIR": str(tmp / "instance"),
            "SECRET_KEY": secret_key,
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "HUEY_BACKEND": "redis",
            "STORAGE_DIR": str(tmp / "storage"),
            "SESSION_COOKIE_SECURE": "1",
            "TRUSTED_PROXIES": "1",
            "MEDIA_PUBLIC_URL": self.base_url,
            "MEDIA_ALLOWED_ORIGINS": self.base_url,
            "MEDIA_REDIS_URL": redis_url,
            "MEDIA_RECORDINGS_DIR": str(tmp / "storage" / "recordings"),
            "TURN_SECRET": self.turn_secret,
            "TURN_URLS": f"turn:127.0.0.1:{self.ports.turn}?transport=udp",
            "MEDIA_ICE_TRANSPORT_POLICY": "relay",
            "PYTHONUNBUFFERED": "1",
        }
        self.services: dict[str, Supervised] = {}
        self.supervisor: Supervisor | None = None

    # -- configuration ------------------------------------------------------------------------

    def certificate(self) -> tuple[Path, Path]:
        cert, key = self.tmp / "cert.pem", self.tmp / "key.pem"
        subprocess.run(
            [
                *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
                *("-keyout", str(key), "-out", str(cert), "-subj", f"/CN={HOST}"),
                *("-addext", f"subjectAltName=DNS:{HOST},IP:127.0.0.1"),
            ],
            check=True,
            capture_output=True,
        )
        return cert, key

    def render_nginx(self, cert: Path, key: Path) -> Path:
        """deploy/nginx/oblako.conf on the test's ports and files; plus, for the test only, a
        header and a log line naming the media process that answered."""
        p = self.ports
        site = NGINX_SITE.read_text()
        site = _replace(site, "    listen [::]:80;\n", "")
        site = _replace(site, "    listen [::]:443 ssl http2;\n", "")
        site = _replace(site, "listen 80;", f"listen 127.0.0.1:{p.http};")
        site = _replace(site, "listen 443 ssl http2;", f"listen 127.0.0.1:{p.https} ssl http2;")
        site = _replace(site, "server_name oblako.example.org;", f"server_name {HOST};", 2)
        site = _replace(site, "/etc/letsencrypt/live/oblako.example.org/fullchain.pem", str(cert))
        site = _replace(site, "/etc/letsencrypt/live/oblako.example.org/privkey.pem", str(key))
        site = _replace(site, "server 127.0.0.1:8000;", f"server 127.0.0.1:{p.web};")
        site = _replace(site, "server 127.0.0.1:8101 ", f"server 127.0.0.1:{p.media[0]} ")
        site = _replace(site, "server 127.0.0.1:8102 ", f"server 127.0.0.1:{p.media[1]} ")
        site = _replace(site, "/var/cache/nginx/oblako", str(self.tmp / "nginx-cache"))
        site = _replace(site, "/var/www/letsencrypt", str(self.tmp))
        site = _replace(
            site,
            "proxy_pass http://oblako_media;",
            "proxy_pass http://oblako_media;\n"
            "        add_header X-Test-Media $upstream_addr always;\n"
            "        access_log " + str(self.tmp / "nginx-media.log") + " media;",
        )
        (self.tmp / "oblako.conf").write_text(site)
        main = self.tmp / "nginx.conf"
        temp = self.tmp / "nginx-temp"
        temp.mkdir(exist_ok=True)
        main.write_text(
            f"""daemon off;
user root;
worker_processes 1;
pid {self.tmp}/nginx.pid;
error_log {self.tmp}/nginx-error.log warn;
events {{ worker_connections 512; }}
http {{
    include /etc/nginx/mime.types;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    log_format media '$remote_addr "$request" $status up=$upstream_addr key=$cookie_oblako_media';
    access_log {self.tmp}/nginx-access.log;
    include {self.tmp}/oblako.conf;
}}
"""
        )
        check = subprocess.run(
            ["nginx", "-t", "-p", str(self.tmp), "-c", str(main)], capture_output=True, text=True
        )
        assert check.returncode == 0, check.stderr
        return main

    def coturn_config(self) -> Path:
        """deploy/coturn/turnserver.conf's credential scheme and limits, on loopback: the
        relay to loopback peers that production refuses is what lets two local browsers talk."""
        deployed = COTURN_CONF.read_text()
        for line in ("use-auth-secret", "fingerprint", "no-multicast-peers", "no-cli"):
            assert re.search(rf"^{line}$", deployed, re.M), f"{line} left the deploy file"
        conf = self.tmp / "turnserver.conf"
        conf.write_text(
            f"""listening-ip=127.0.0.1
relay-ip=127.0.0.1
listening-port={self.ports.turn}
min-port=49160
max-port=49959
realm=oblako.test
fingerprint
use-auth-secret
static-auth-secret={self.turn_secret}
allow-loopback-peers
no-multicast-peers
no-tls
no-dtls
no-cli
pidfile={self.tmp}/turnserver.pid
userdb={self.tmp}/turndb
log-file={self.tmp}/turnserver-own.log
simple-log
"""
        )
        return conf

    # -- processes ----------------------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str], **env: str) -> Callable[[], subprocess.Popen]:
        def start() -> subprocess.Popen:
            with open(self.tmp / f"{name}.log", "ab") as log:
                return subprocess.Popen(
                    argv,
                    cwd=ROOT,
                    env={**self.env, **env},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )

        return start

    def start(self) -> Stack:
        cert, key = self.certificate()
        nginx_conf = self.render_nginx(cert, key)
        py = sys.executable
        p = self.ports
        plan: list[tuple[str, list[str], dict[str, str]]] = [
            ("coturn", ["turnserver", "-c", str(self.coturn_config())], {}),
            (
                "web",
                [
                    *(py, "-m", "gunicorn", "--workers", "3", "--bind", f"127.0.0.1:{p.web}"),
                    *("--timeout", "60", "--access-logfile", str(self.tmp / "web-access.log")),
                    *("--access-logformat", '%(p)s "%(r)s" %(s)s', "--no-control-socket"),
                    "app:create_app()",
                ],
                {},
            ),
            ("media-a", [py, "-m", "media_server"], {"MEDIA_PORT": str(p.media[0])}),
            ("media-b", [py, "-m", "media_server"], {"MEDIA_PORT": str(p.media[1])}),
            ("worker", [py, "-m", "flask", "--app", "app:create_app", "oblako", "worker"], {}),
            ("nginx", ["nginx", "-p", str(self.tmp), "-c", str(nginx_conf)], {}),
        ]
        for name, argv, env in plan:
            self.services[name] = Supervised(name, self._spawn(name, argv, **env))
        self.supervisor = Supervisor(list(self.services.values()))
        self.supervisor.start()
        for port in (p.web, *p.media, p.https):
            wait_for(lambda port=port: accepts(port), f"port {port}", timeout=120)
        wait_for(lambda: len(self.web_workers()) == 3, "three gunicorn workers", timeout=120)
        wait_for(lambda: self.get("/login/")[0] == 200, "the sign-in page through nginx")
        return self

    def stop(self) -> None:
        if self.supervisor is not None:
            self.supervisor.stop()
        for service in self.services.values():
            child = service.child
            if child is None or child.poll() is not None:
                continue
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait(10)

    # -- looking at it ------------------------------------------------------------------------

    def pid(self, name: str) -> int:
        child = self.services[name].child
        assert child is not None
        return child.pid

    def web_workers(self) -> list[int]:
        return list(children(self.pid("web")))

    def log(self, name: str) -> str:
        path = self.tmp / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def logs(self) -> str:
        """Every log's tail, for a failure's report."""
        parts = []
        for path in sorted(self.tmp.glob("*.log")):
            parts.append(f"--- {path.name}\n" + path.read_text(errors="replace")[-4000:])
        return "\n".join(parts)

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict, bytes]:
        request = urllib.request.Request(self.base_url + path, headers=headers or {})  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=30, context=insecure_tls()) as r:  # noqa: S310
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, dict(exc.headers), exc.read()
        except OSError:
            return 0, {}, b""

    def media_of_key(self, key: str) -> int:
        """The media port nginx routes a socket.io client with this sticky key to."""
        status, headers, _ = self.get(
            "/socket.io/?EIO=4&transport=polling", {"Cookie": f"oblako_media={key}"}
        )
        assert status == 200, status
        return int(headers["X-Test-Media"].rsplit(":", 1)[1])

    def keys_for_each_media(self) -> tuple[str, str]:
        """A sticky key that lands on media process A and one that lands on B."""
        found: dict[int, str] = {}
        for n in range(64):
            key = f"topo{n}"
            found.setdefault(self.media_of_key(key), key)
            if len(found) == 2:
                return found[self.ports.media[0]], found[self.ports.media[1]]
        raise AssertionError(f"every key went to one media process: {found}")
