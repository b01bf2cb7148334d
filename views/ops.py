"""/healthz and /metrics: for the load balancer, systemd and Prometheus, not for people.

Both are outside FAB's sign-in (a monitor has no account). /healthz says only ok / not ok per
part. /metrics is closed twice: nginx does not pass it on (deploy/nginx/oblako.conf), and the
app answers it only to the addresses in METRICS_ALLOWED (loopback by default) — Prometheus
scrapes 127.0.0.1:8000 on the host itself or from an address listed there.
"""

from __future__ import annotations

from flask import Blueprint, Response, abort, current_app, jsonify, request
from flask_appbuilder import AppBuilder

from app.ops import health, metrics
from config import address_allowed

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz() -> tuple[Response, int]:
    healthy, parts = health.check()
    body = jsonify(status="ok" if healthy else "fail", checks=parts)
    body.headers["Cache-Control"] = "no-store"
    return body, 200 if healthy else 503


@bp.get("/metrics")
def prometheus_metrics() -> Response:
    if not address_allowed(request.remote_addr, current_app.config["METRICS_ALLOWED"]):
        abort(403)
    return Response(
        metrics.render(), content_type=metrics.CONTENT_TYPE, headers={"Cache-Control": "no-store"}
    )


def setup(appbuilder: AppBuilder) -> None:
    current_app.register_blueprint(bp)
