"""Operating one media process: its /metrics (sockets and rooms), its connection log lines.

/metrics is for Prometheus (issue 18 item 6).
Each process reports only what it holds (a room whose two sides sit on two processes counts
on both): Prometheus labels the figures by instance, sum() gives the service's. Answered only
to METRICS_ALLOWED (config.address_allowed); the process listens on loopback behind nginx,
which routes only /socket.io/ to it.

A signed-in socket is logged as one JSON line (logs.py) with the request id of the web request
that minted its join token, or else nginx's id for the handshake (X-Request-ID), the
consultation's key, the role and the user id: never a name or a message.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily

from config import address_allowed
from logs import clean_request_id
from media_server.auth import Claims

log = logging.getLogger("media_server.socket")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def exposition(rooms: Iterable[str]) -> bytes:
    """`rooms`: the room of every authenticated socket of this process."""
    rooms = list(rooms)

    class _Collector:
        def collect(self):
            yield GaugeMetricFamily(
                "oblako_media_sockets", "Signed-in sockets on this process.", value=len(rooms)
            )
            yield GaugeMetricFamily(
                "oblako_media_rooms",
                "Consultation rooms with a socket on this process.",
                value=len(set(rooms)),
            )

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector())
    return generate_latest(registry)


def handler(cfg: dict, rooms: Callable[[], Iterable[str]]):
    allowed = str(cfg.get("METRICS_ALLOWED") or "")

    async def metrics(request: web.Request) -> web.Response:
        if not address_allowed(request.remote, allowed):
            raise web.HTTPForbidden()
        return web.Response(
            body=exposition(rooms()),
            headers={"Content-Type": CONTENT_TYPE, "Cache-Control": "no-store"},
        )

    return metrics


def log_connect(claims: Claims, environ: dict[str, Any]) -> None:
    handshake = environ.get("HTTP_X_REQUEST_ID")
    log.info(
        "socket",
        extra={
            "request_id": claims.request_id or clean_request_id(handshake),
            "fields": {
                "event": "connect",
                "consultation_id": claims.consultation_id,
                "role": claims.role,
                "user_id": claims.user_id,
                "handshake_request_id": clean_request_id(handshake) if handshake else None,
            },
        },
    )
