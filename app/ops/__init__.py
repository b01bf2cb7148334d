"""Operating the service: request ids and JSON request logs, Prometheus metrics, health,
the storage check behind `flask oblako verify-storage` (issue 18 items 4 and 6).

init_app() wires the request hooks and the proxy fix; views/ops.py serves /healthz and
/metrics; logs.py (top level) formats the lines for every process.
"""

from __future__ import annotations

from flask import Flask

# Libraries whose INFO lines name people: Flask-AppBuilder logs "Updated user <first name>
# <last name>" at every sign-in and "Login Failed for user: <login>" (a patient's login is the
# phone number). Their warnings and errors still get through.
QUIET_LOGGERS = ("flask_appbuilder",)


def init_app(app: Flask) -> None:
    import logging

    import logs
    from app.ops import requests

    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)

    if not app.testing:
        logs.configure()  # JSON lines on stderr, unless the host (pytest) has its own handlers
    requests.init_app(app)
