"""The installable app: a web app manifest, its icons, an offline page and a service worker.

A patient adds «Облако здоровья» to the home screen from the browser (no app store). The
service worker (app/static/oblako/sw.js, served here at /sw.js so that its scope is the whole
site) keeps only the offline page in its cache (self-contained: its style is inline), never a
page or a file with patient data. When the network is down, a page the patient opens shows
the offline page instead of the browser's error.

Everything here is public and the same for everyone: no session, no user data.
"""

from __future__ import annotations

import hashlib
import json

from flask import Blueprint, Flask, Response, current_app, render_template, url_for
from flask_babel import get_locale, gettext

THEME_COLOUR = "#1d5fa8"
BACKGROUND_COLOUR = "#ffffff"
ICONS = (("oblako/icon-192.png", "192x192"), ("oblako/icon-512.png", "512x512"))
CACHE_VERSION = "oblako-offline-v1"

bp = Blueprint("pwa", __name__)


def page_language() -> str:
    """The page's `lang`: the interface language of this request (ru unless English)."""
    locale = get_locale()
    return locale.language if locale is not None else "ru"


@bp.get("/manifest.webmanifest")
def manifest() -> Response:
    name = gettext("Health Cloud")
    body = {
        "name": name,
        "short_name": name,
        "description": gettext("Free online consultations with doctors of specialised centres"),
        "lang": page_language(),
        "start_url": "/",
        "scope": "/",
        "display": "standalone",
        "theme_color": THEME_COLOUR,
        "background_color": BACKGROUND_COLOUR,
        "icons": [
            {
                "src": url_for("static", filename=path),
                "sizes": sizes,
                "type": "image/png",
                "purpose": "any",
            }
            for path, sizes in ICONS
        ],
    }
    response = Response(json.dumps(body, ensure_ascii=False), mimetype="application/manifest+json")
    response.headers["Cache-Control"] = "no-cache"
    return response


@bp.get("/offline")
def offline() -> Response:
    response = Response(render_template("oblako/offline.html"))
    response.headers["Cache-Control"] = "no-cache"
    return response


@bp.get("/sw.js")
def service_worker() -> Response:
    """The worker's code with this build's cache name and the offline page's address."""
    offline_url = url_for("pwa.offline")
    page = render_template("oblako/offline.html")
    # The same name in every process (hashlib, not hash()): a changed page, a new cache.
    version = CACHE_VERSION + "-" + hashlib.sha256(page.encode()).hexdigest()[:12]
    source = (current_app.static_folder or "") + "/oblako/sw.js"
    with open(source, encoding="utf-8") as fh:
        code = fh.read()
    code = code.replace("__CACHE__", version).replace("__OFFLINE__", offline_url)
    response = Response(code, mimetype="text/javascript")
    # Browsers check the worker for updates on every visit; it is small.
    response.headers["Cache-Control"] = "no-cache"
    response.headers["Service-Worker-Allowed"] = "/"
    return response


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
    app.jinja_env.globals["page_language"] = page_language
    app.jinja_env.globals["theme_colour"] = THEME_COLOUR
