"""Content-Security-Policy for our pages: script only from our own files (or with this response's
nonce), no plugins, no <base>, never framed; the web app manifest and the service worker
(app/pwa.py) from this site only.

Every behaviour lives in a static file (app/static/oblako/*.js); the nonce exists for what we do
not write ourselves: Flask-AppBuilder's templates call `csp_nonce()` when it is defined (its
baselib.get_nonce) and Flask-Admin takes a nonce generator. Inline event handlers and
`javascript:` links cannot carry a nonce, so none may remain (tests/test_csp.py checks the HTML).

Responses that our own pages frame (a document's inline preview, a recording) set their own,
stricter policy with `frame-ancestors 'self'` and X-Frame-Options SAMEORIGIN before this runs;
`setdefault` leaves them alone.
"""

from __future__ import annotations

import secrets

from flask import Flask, Response, current_app, g, request

# style-src keeps 'unsafe-inline': FAB's and Flask-Admin's markup carries style attributes, and
# a style cannot run code.
POLICY = (
    "default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; "
    "style-src 'self' 'unsafe-inline'; script-src 'self' 'nonce-{nonce}'; "
    "frame-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'self'; manifest-src 'self'; worker-src 'self'; connect-src {connect}"
)


def nonce() -> str:
    """This request's nonce: the same for the header and every template that asks."""
    value = g.get("csp_nonce")
    if value is None:
        value = g.csp_nonce = secrets.token_urlsafe(18)
    return value


def content_security_policy() -> str:
    """The policy for this request. connect-src: this site and the media server (socket.io over
    http and ws), which listens on MEDIA_PUBLIC_URL or, by default, on the page's host at
    MEDIA_PORT."""
    from app.media import connect_sources

    try:
        sources = connect_sources(current_app.config, scheme=request.scheme, host=request.host)
    except (KeyError, ValueError):
        sources = "'self'"
    return POLICY.format(nonce=nonce(), connect=sources)


def set_headers(response: Response) -> Response:
    headers = response.headers
    headers.setdefault("Content-Security-Policy", content_security_policy())
    # The same promise for browsers that ignore frame-ancestors.
    headers.setdefault("X-Frame-Options", "DENY")
    return response


def init_app(app: Flask) -> None:
    # FAB's templates test `csp_nonce is defined` and call it (the Flask-Talisman convention).
    app.jinja_env.globals["csp_nonce"] = nonce
