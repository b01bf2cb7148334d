"""Security headers and sign-in throttling at the door (error pages: app/error_pages.py)."""

from __future__ import annotations

from flask import Flask, Response, flash, jsonify, redirect, request, url_for
from flask.sessions import SecureCookieSessionInterface
from flask_babel import gettext as _

from app import csp, throttle
from app.accounts import sign_in_name
from app.security import client_ip

API_LOGIN_PATH = "/api/v1/security/login"


def safe_back(default: str = "/") -> str:
    """The page the request came from, if it is ours; else the default."""
    ref = request.referrer or ""
    return ref if ref.startswith(request.host_url) else default


# The same for every visitor, fetched in the background (the service worker, monitors).
SESSIONLESS_ENDPOINTS = frozenset(
    {
        "static",
        "pwa.manifest",
        "pwa.offline",
        "pwa.service_worker",
        "ops.healthz",
        "ops.prometheus_metrics",
    }
)


class SessionInterface(SecureCookieSessionInterface):
    """The signed cookie session, never written by the answers of SESSIONLESS_ENDPOINTS.

    Flask-Login marks any anonymous session "not fresh", which rewrites the cookie: the service
    worker's fetch of /offline, sent from the sign-in page and answered after the sign-in (a
    loaded phone, a slow network), would put the signed-out cookie back and sign her out.
    """

    def save_session(self, app, session, response) -> None:  # type: ignore[no-untyped-def]
        if request.endpoint in SESSIONLESS_ENDPOINTS:
            return
        super().save_session(app, session, response)


def init_app(app: Flask) -> None:
    app.session_interface = SessionInterface()
    throttle.init_app(app)
    csp.init_app(app)

    @app.before_request
    def _throttle_sign_in():
        if request.method != "POST":
            return None
        if request.path == API_LOGIN_PATH:
            body = request.get_json(silent=True) or {}
            username = sign_in_name(str(body.get("username") or ""))
            if not throttle.get_throttle().allowed(username, client_ip()):
                return jsonify(message=_("Too many sign-in attempts. Try again later.")), 429
        elif request.endpoint == "OblakoAuthDBView.login":
            username = sign_in_name(request.form.get("username", ""))
            if not throttle.get_throttle().allowed(username, client_ip()):
                flash(_("Too many sign-in attempts. Try again in 15 minutes."), "danger")
                return redirect(url_for("OblakoAuthDBView.login")), 303
        return None

    @app.after_request
    def _security_headers(response: Response) -> Response:
        headers = response.headers
        headers.setdefault("X-Content-Type-Options", "nosniff")
        headers.setdefault("Referrer-Policy", "same-origin")
        csp.set_headers(response)
        headers.setdefault("Permissions-Policy", "camera=(self), microphone=(self), geolocation=()")
        if app.config.get("SESSION_COOKIE_SECURE"):
            headers.setdefault("Strict-Transport-Security", "max-age=31536000")
        return response
