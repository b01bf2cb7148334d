"""Security headers, sign-in throttling at the door, and friendly error pages."""

from __future__ import annotations

from flask import Flask, Response, flash, jsonify, redirect, request, url_for
from flask_babel import gettext as _

from app import csp, throttle
from app.errors import ChangedMeanwhile
from app.security import client_ip

API_LOGIN_PATH = "/api/v1/security/login"


def safe_back(default: str = "/") -> str:
    """The page the request came from, if it is ours; else the default."""
    ref = request.referrer or ""
    return ref if ref.startswith(request.host_url) else default


def init_app(app: Flask) -> None:
    throttle.init_app(app)
    csp.init_app(app)

    @app.before_request
    def _throttle_sign_in():
        if request.method != "POST":
            return None
        if request.path == API_LOGIN_PATH:
            body = request.get_json(silent=True) or {}
            username = str(body.get("username") or "")
            if not throttle.get_throttle().allowed(username, client_ip()):
                return jsonify(message=_("Too many sign-in attempts. Try again later.")), 429
        elif request.endpoint == "OblakoAuthDBView.login":
            username = request.form.get("username", "")
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

    def refused(message: str, status: int):
        """JSON with `status` for the API, else the message flashed and back to the form."""
        if request.accept_mimetypes.best == "application/json" or request.path.startswith("/api/"):
            return jsonify(message=message), status
        flash(message, "danger")
        return redirect(safe_back()), 303

    @app.errorhandler(413)
    def _too_large(_exc):
        limit_mb = app.config["MAX_DOCUMENT_BYTES"] // (1024 * 1024)
        return refused(_("The file is too large: the limit is %(n)d MB.", n=limit_mb), 413)

    @app.errorhandler(ChangedMeanwhile)
    def _changed_meanwhile(exc: ChangedMeanwhile):
        # Views answer their own domain errors; this is the net for a view that names only
        # its module's error class: a concurrent change is never a 500.
        return refused(str(exc), 409)

    @app.errorhandler(400)
    def _bad_request(exc):
        description = getattr(exc, "description", "")
        if "CSRF" in str(description):
            message = _("The form has expired. Please try again.")
        else:
            message = _("The request could not be understood.")
        if request.path.startswith("/api/"):
            return jsonify(message=message), 400
        flash(message, "danger")
        return redirect(safe_back()), 303
