"""Every request: its id, one JSON log line, its latency in the metrics, the client's address.

The id comes from X-Request-ID (nginx sets it to $request_id) or is made here; it goes back in
the response header, into every log line of the request (logs.request_id_var), into the media
join token and into the payload of the jobs the request enqueues (app/tasks.py).

The line names the endpoint and the route's template (`/consultations/<uuid:pid>`), never the
path as sent, the query string or a form: the path template, status, duration and user id tell
an administrator what happened without a patient's name, phone, e-mail or message text.

Behind nginx every request arrives from 127.0.0.1: with TRUSTED_PROXIES=N werkzeug's ProxyFix
takes the client's address from the last N entries of X-Forwarded-For (and the scheme and host
from X-Forwarded-Proto / -Host), so that the per-address sign-in throttling counts the client,
not the proxy. N must be exactly the number of proxies in front: more would let a client pick
its own address by sending the header itself.
"""

from __future__ import annotations

import logging
import time

from flask import Flask, Response, g, request
from sqlalchemy import inspect
from werkzeug.middleware.proxy_fix import ProxyFix

from app.ops import metrics
from logs import REQUEST_ID_HEADER, clean_request_id, request_id_var

log = logging.getLogger("oblako.request")
# A metric's labels must stay a small set: any other method a client makes up counts as OTHER.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def current_request_id() -> str:
    """The id of the request (or job) being handled, "" outside one."""
    return request_id_var.get()


def _user_id() -> int | None:
    # Flask-Login keeps the user it loaded for this request in g; asking current_user would
    # load one (a query) for requests that never needed it.
    user = g.get("_login_user")
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    # The key the row was loaded under: no query, even when the view's unit of work has
    # ended the session and the instance's attributes expired with its commit.
    state = inspect(user, raiseerr=False)
    if state is not None and state.identity:
        return state.identity[0]
    return None


def init_app(app: Flask) -> None:
    proxies = int(app.config.get("TRUSTED_PROXIES") or 0)
    if proxies < 0:
        raise RuntimeError("TRUSTED_PROXIES must be 0 or more")
    if proxies:
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=proxies, x_proto=proxies, x_host=proxies
        )

    @app.before_request
    def _start() -> None:
        request_id = clean_request_id(request.headers.get(REQUEST_ID_HEADER))
        g.oblako_request = (request_id, time.perf_counter(), request_id_var.set(request_id))

    @app.after_request
    def _finish(response: Response) -> Response:
        started = g.get("oblako_request")
        if started is None:  # a before_request hook ahead of ours answered
            return response
        request_id, t0, _token = started
        seconds = time.perf_counter() - t0
        response.headers[REQUEST_ID_HEADER] = request_id
        endpoint = request.endpoint or "none"
        rule = request.url_rule.rule if request.url_rule is not None else None
        method = request.method if request.method in METHODS else "OTHER"
        metrics.observe_request(endpoint, method, seconds)
        log.info(
            "request",
            extra={
                "request_id": request_id,
                "fields": {
                    "method": method,
                    "endpoint": endpoint,
                    "path": rule,
                    "status": response.status_code,
                    "duration_ms": round(seconds * 1000, 1),
                    "user_id": _user_id(),
                },
            },
        )
        return response

    @app.teardown_request
    def _forget(exc: BaseException | None) -> None:
        started = g.pop("oblako_request", None)
        if started is not None:
            try:
                request_id_var.reset(started[2])
            except ValueError:  # set in another context (a streamed response's last chunk)
                request_id_var.set("")
