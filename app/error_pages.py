"""Every error is a Russian page in the site's layout, with the way back; the API answers JSON.

- 400 … 500: a page that says what happened and links home (and back, when the request came
  from one of our pages). An expired form (CSRF) and a file over the limit (413) keep their
  friendlier answer: the message is flashed on the form the person came from.
- 503 with Retry-After when the database or Redis cannot be reached. The page is then drawn
  without the navbar's menu and user (they would query the unreachable database): the layout
  and the way home only. Should the full layout fail for any other reason, the same stripped
  page is used, and past that a plain page: an error page itself never fails.
"""

from __future__ import annotations

import logging

import redis
from flask import (
    Flask,
    Response,
    current_app,
    flash,
    g,
    jsonify,
    redirect,
    render_template,
    request,
)
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from limits.errors import StorageError
from markupsafe import escape
from sqlalchemy import exc as sa_exc
from werkzeug.exceptions import HTTPException, InternalServerError

from app.boundary import BadParameter
from app.errors import ChangedMeanwhile
from app.hardening import safe_back

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 30

TITLES = {
    400: _l("The request could not be understood"),
    401: _l("Please sign in"),
    403: _l("Access denied"),
    404: _l("Page not found"),
    405: _l("This action is not available here"),
    409: _l("The record has changed"),
    413: _l("The file is too large"),
    429: _l("Too many requests"),
    500: _l("Something went wrong"),
    503: _l("The service is temporarily unavailable"),
}
MESSAGES = {
    400: _l("The request could not be understood."),
    401: _l("Please sign in to continue."),
    403: _l("You do not have access to this page."),
    404: _l("There is no such page, or it is not available to you."),
    405: _l("This page cannot be used this way. Go back and try again from the page itself."),
    409: _l("Someone else has just changed this record. Check its current state and try again."),
    413: _l("The request is too large."),
    429: _l("Too many requests. Please wait a little and try again."),
    500: _l("An error occurred on our side. We have recorded it; please try again later."),
    503: _l("The service is temporarily unavailable. Please try again in a minute."),
}

# Errors that mean a server we depend on cannot be reached (or answered in time), not a fault
# of the request: the answer is 503, "try again later".
UNAVAILABLE = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.TimeoutError,
    sa_exc.DisconnectionError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    StorageError,
)


def wants_json() -> bool:
    return request.path.startswith("/api/") or request.accept_mimetypes.best == "application/json"


def error_response(status: int, message: str | None = None, *, degraded: bool = False):
    """The Russian page (or JSON) for `status`; `degraded` draws it without touching the
    database (no menu, no user)."""
    text = str(message or MESSAGES.get(status) or MESSAGES[500])
    headers = {"Cache-Control": "no-store"}
    if status == 503:
        headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    if wants_json():
        return jsonify(message=text, status=status), status, headers
    if "user" not in g:  # an error before FAB's own before_request set it
        g.user = current_user
    back = safe_back(default="")
    if back == request.url:
        back = ""
    context = {
        "status": status,
        "error_title": str(TITLES.get(status) or TITLES[500]),
        "message": text,
        "back": back,
        "appbuilder": current_app.appbuilder,  # FAB's views pass it to every template
    }
    for stripped in (True,) if degraded else (False, True):
        if stripped:
            _without_user()
        try:
            html = render_template("oblako/error.html", degraded=stripped, **context)
            return html, status, headers
        except Exception:  # an error page must not fail: try the simpler one
            log.exception("error page %s could not be rendered (degraded=%s)", status, stripped)
            _forget_session(dead=True)
    return _plain_page(context), status, headers


def _plain_page(context: dict) -> Response:
    body = (
        '<!DOCTYPE html><html lang="ru"><head><meta charset="utf-8">'
        f"<title>{escape(context['error_title'])}</title></head><body>"
        f"<h1>{escape(context['error_title'])}</h1><p>{escape(context['message'])}</p>"
        f'<p><a href="/">{escape(_("To the home page"))}</a></p></body></html>'
    )
    return Response(body, mimetype="text/html")


def _without_user() -> None:
    """Draw the page as for a visitor: Flask-Login's template context would otherwise load the
    signed-in user from the unreachable database."""
    anonymous = current_app.login_manager.anonymous_user()
    g._login_user = anonymous
    g.user = anonymous


def _forget_session(*, dead: bool = False) -> None:
    """Drop the failed transaction, and the session too when its connection is `dead`."""
    from app.extensions import db

    for step in (db.session.rollback, db.session.remove) if dead else (db.session.rollback,):
        try:
            step()
        except Exception:  # the connection is gone: nothing more to undo
            log.debug("session cleanup after an error failed", exc_info=True)


def flash_back(message: str, status: int):
    """JSON with `status` for the API, else the message flashed and back to the form."""
    if wants_json():
        return jsonify(message=message, status=status), status
    flash(message, "danger")
    return redirect(safe_back()), 303


def init_app(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        status = exc.code or 500
        if status == 400 and "CSRF" in str(exc.description or ""):
            return flash_back(_("The form has expired. Please try again."), 400)
        if status == 413:
            limit_mb = app.config["MAX_DOCUMENT_BYTES"] // (1024 * 1024)
            return flash_back(_("The file is too large: the limit is %(n)d MB.", n=limit_mb), 413)
        if status == 500:
            return _server_error(exc)
        response = error_response(status)
        if status == 405 and isinstance(response, tuple):
            allowed = exc.get_headers()
            response[2].update({k: v for k, v in allowed if k == "Allow"})
        return response

    @app.errorhandler(BadParameter)
    def _bad_parameter(exc: BadParameter):
        return error_response(400, str(exc))

    @app.errorhandler(ChangedMeanwhile)
    def _changed_meanwhile(exc: ChangedMeanwhile):
        # Views answer their own domain errors; this is the net for a view that names only
        # its module's error class: a concurrent change is never a 500.
        return flash_back(str(exc), 409)

    for unavailable in UNAVAILABLE:
        app.register_error_handler(unavailable, _unavailable)

    @app.errorhandler(InternalServerError)
    def _server_error(exc: InternalServerError):
        original = getattr(exc, "original_exception", None)
        if isinstance(original, UNAVAILABLE):
            return _unavailable(original)
        _forget_session()
        return error_response(500)


def _unavailable(exc: Exception):
    log.error("a server the web app needs is unreachable: %s", type(exc).__name__)
    _forget_session(dead=True)
    return error_response(503, degraded=True)
