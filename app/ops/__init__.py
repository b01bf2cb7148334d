"""Operating the service: request ids and JSON request logs, Prometheus metrics, health,
the storage check behind `flask oblako verify-storage` (issue 18 items 4 and 6).

init_app() wires the request hooks and the proxy fix; views/ops.py serves /healthz and
/metrics; logs.py (top level) formats the lines for every process.
"""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    import logs
    from app.ops import requests

    if not app.testing:
        logs.configure()  # JSON lines on stderr, unless the host (pytest) has its own handlers
    requests.init_app(app)
