"""Static files: content-hashed names, gzip, a year's `immutable` cache, served by WhiteNoise.

At start-up every static folder of the app (ours, Flask-AppBuilder's under /static/appbuilder,
Flask-Admin's under /reports/static) is copied into STATIC_BUILD_DIR under content-hashed names
(`oblako.css` → `oblako.3f2a9c1b7d4e.css`), with a `.gz` beside each file worth compressing.
The build is content-addressed, so it is idempotent and cheap when nothing changed, and several
processes starting at once write the same bytes (each file is written aside and renamed).
Relative `url(...)` references inside CSS (fonts, images) are rewritten to the hashed names
before the CSS itself is hashed, so a changed font changes the CSS's name too.

`url_for('static' | 'appbuilder.static' | 'reports.static', filename=...)` yields the hashed
name (a `url_defaults` hook), so FAB's and Flask-Admin's own templates get them too. WhiteNoise
wraps the WSGI app and answers those URLs before Flask: gzip when the browser accepts it,
`Cache-Control: public, max-age=31536000, immutable`. The same happens under `python run.py`
(`make run`) and under gunicorn. A name that is not hashed still falls through to Flask's own
static route (revalidated), so nothing that builds a URL by hand breaks.

The reports' files stay behind the reports' role gate (views/reports.py): their hashed names are
answered by a second WhiteNoise instance from inside the gated blueprint's static view.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flask import Flask
from whitenoise import WhiteNoise
from whitenoise.compress import Compressor

HASH_LENGTH = 12
HASHED_NAME = re.compile(rf"\.[0-9a-f]{{{HASH_LENGTH}}}\.[A-Za-z0-9]+$")
CSS_URL = re.compile(r"""url\(\s*(['"]?)([^'")]+?)\1\s*\)""")
# Blueprints whose files are served only through their own (gated) Flask view.
GATED_ENDPOINTS = frozenset({"reports.static"})
# Shipped by the libraries but never linked from a page: style sources and Font Awesome's 1,264
# loose SVGs in Flask-Admin's folder. Left out of the build (every start hashes what it builds);
# if something ever asks for one, Flask's own static route still serves it.
NOT_BUILT = re.compile(r"(^|/)(svgs|less|scss|metadata)/|\.(less|scss)$")


@dataclass
class StaticSource:
    endpoint: str  # "static", "appbuilder.static", ...
    prefix: str  # the URL path the endpoint's rule starts with, e.g. "/static/appbuilder/"
    folder: Path  # where the original files are
    names: dict[str, str] = field(default_factory=dict)  # original → hashed (relative paths)


def hashed_name(relative: str, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()[:HASH_LENGTH]
    stem, dot, ext = relative.rpartition(".")
    if not dot or "/" in ext:
        return f"{relative}.{digest}"
    return f"{stem}.{digest}.{ext}"


def _rewrite_css(relative: str, css: str, names: dict[str, str]) -> str:
    base = posixpath.dirname(relative)

    def replace(match: re.Match[str]) -> str:
        quote, ref = match.group(1), match.group(2).strip()
        if ref.startswith(("data:", "http:", "https:", "//", "/", "#")):
            return match.group(0)
        path, tail = re.match(r"([^?#]*)(.*)", ref).groups()  # type: ignore[union-attr]
        target = posixpath.normpath(posixpath.join(base, path))
        if target not in names:
            return match.group(0)
        new = posixpath.relpath(names[target], base or ".")
        return f"url({quote}{new}{tail}{quote})"

    return CSS_URL.sub(replace, css)


def _write_once(target: Path, data: bytes, compressor: Compressor) -> None:
    """Write `target` (and its .gz) unless already there; the plain file is the marker, so it
    is renamed into place last."""
    if target.exists():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".build-") as tmp:
        aside = Path(tmp) / target.name
        aside.write_bytes(data)
        if compressor.should_compress(target.name):
            for written in compressor.compress(str(aside)):
                if written != str(aside):
                    os.replace(written, str(target) + written[len(str(aside)) :])
        os.replace(aside, target)


def build(source: StaticSource, out: Path) -> None:
    """Hash and copy one static folder into `out`; fills `source.names`."""
    compressor = Compressor(use_gzip=True, use_brotli=False, quiet=True)
    paths = (p for p in source.folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    relatives = (p.relative_to(source.folder).as_posix() for p in paths)
    files = sorted(r for r in relatives if not NOT_BUILT.search(r))
    # CSS last: its url() references need the other files' hashed names.
    for relative in sorted(files, key=lambda r: r.endswith(".css")):
        data = (source.folder / relative).read_bytes()
        if relative.endswith(".css"):
            css = data.decode("utf-8", errors="surrogateescape")
            data = _rewrite_css(relative, css, source.names).encode("utf-8", "surrogateescape")
        name = hashed_name(relative, data)
        _write_once(out / name, data, compressor)
        source.names[relative] = name


def _sources(app: Flask) -> list[StaticSource]:
    found = []
    for rule in app.url_map.iter_rules():
        endpoint = rule.endpoint
        if endpoint == "static":
            folder = app.static_folder
        elif endpoint.endswith(".static"):
            blueprint = app.blueprints.get(endpoint.rsplit(".", 1)[0])
            folder = blueprint.static_folder if blueprint else None
        else:
            continue
        if folder and Path(folder).is_dir():
            found.append(StaticSource(endpoint, rule.rule.split("<", 1)[0], Path(folder)))
    return found


CACHE_FOREVER = "public, max-age=31536000, immutable"  # a year: a changed file gets a new name


def _add_headers(headers: Any, path: str, url: str) -> None:
    headers["X-Content-Type-Options"] = "nosniff"
    if HASHED_NAME.search(url):
        headers["Cache-Control"] = CACHE_FOREVER


def _whitenoise(application: Any) -> WhiteNoise:
    return WhiteNoise(
        application,
        max_age=None,  # only hashed names are added: _add_headers gives them a year
        allow_all_origins=False,
        add_headers_function=_add_headers,
    )


def init_app(app: Flask) -> None:
    """Build the hashed static files and put WhiteNoise in front of the app (after every
    blueprint is registered: create_app calls this last)."""
    build_root = Path(app.config["STATIC_BUILD_DIR"])
    sources = _sources(app)
    public = _whitenoise(app.wsgi_app)
    gated = _whitenoise(None)
    names: dict[str, dict[str, str]] = {}
    for source in sources:
        out = build_root / source.endpoint.replace(".", "_")
        build(source, out)
        names[source.endpoint] = source.names
        serving = gated if source.endpoint in GATED_ENDPOINTS else public
        for name in source.names.values():
            serving.add_file_to_dictionary(source.prefix + name, str(out / name))
    app.wsgi_app = public  # type: ignore[method-assign]

    @app.url_defaults
    def _hashed(endpoint: str, values: dict[str, Any]) -> None:
        table = names.get(endpoint)
        if table is not None:
            filename = values.get("filename")
            if filename in table:
                values["filename"] = table[filename]

    for source in sources:
        if source.endpoint in GATED_ENDPOINTS:
            original = app.view_functions[source.endpoint]

            def serve_gated(filename: str, _prefix: str = source.prefix, _view: Any = original):
                if _prefix + filename in gated.files:
                    # A WSGI app as the view's return value: the blueprint's gate ran already.
                    return gated
                return _view(filename=filename)

            app.view_functions[source.endpoint] = serve_gated
