"""Static files (app/assets.py) and the installable app (app/pwa.py), over the WSGI stack.

The test client calls app.wsgi_app, which is WhiteNoise in front of Flask: what a browser gets
under `python run.py` or gunicorn. The browser side (weights, the service worker offline) is in
tests/e2e/test_light_pages.py.
"""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import pytest
from flask import Flask, url_for

from app.assets import StaticSource, build
from tests.consultation_world import World, signed_in

HASHED = re.compile(r"\.[0-9a-f]{12}\.[a-z0-9]+$")


def _url(app: Flask, endpoint: str, filename: str) -> str:
    with app.test_request_context():
        return url_for(endpoint, filename=filename)


@pytest.mark.no_db
@pytest.mark.parametrize(
    ("endpoint", "filename"),
    [("static", "oblako/oblako.css"), ("appbuilder.static", "css/bootstrap.min.css")],
)
def test_static_files_are_hashed_gzipped_and_cached_a_year(app: Flask, endpoint, filename):
    url = _url(app, endpoint, filename)
    assert HASHED.search(url), url
    folder = Path(
        app.static_folder if endpoint == "static" else app.blueprints["appbuilder"].static_folder
    )
    original = (folder / filename).read_bytes()
    client = app.test_client()

    packed = client.get(url, headers={"Accept-Encoding": "gzip, deflate, br"})
    assert packed.status_code == 200
    assert packed.headers["Content-Encoding"] == "gzip"
    assert packed.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert packed.headers["X-Content-Type-Options"] == "nosniff"
    assert "Accept-Encoding" in packed.headers["Vary"]
    plain = client.get(url)
    assert "Content-Encoding" not in plain.headers
    assert gzip.decompress(packed.data) == plain.data
    assert len(packed.data) < len(plain.data) / 2
    if filename.endswith("oblako.css"):
        assert plain.data == original  # our CSS has no url(): copied as it is


@pytest.mark.no_db
def test_css_points_at_the_hashed_fonts_it_uses(app: Flask):
    client = app.test_client()
    css_url = _url(app, "appbuilder.static", "css/bootstrap.min.css")
    css = client.get(css_url).get_data(as_text=True)
    fonts = re.findall(
        r"url\((\.\./fonts/glyphicons-halflings-regular\.[0-9a-f]{12}\.woff2)\)", css
    )
    assert fonts, "bootstrap.min.css still names the unhashed font"
    font_url = css_url.rsplit("/", 2)[0] + "/" + fonts[0].removeprefix("../")
    answer = client.get(font_url)
    assert answer.status_code == 200 and "immutable" in answer.headers["Cache-Control"]


@pytest.mark.no_db
def test_an_unhashed_name_still_answers_without_the_year_long_cache(app: Flask):
    answer = app.test_client().get("/static/oblako/oblako.css")
    assert answer.status_code == 200
    assert "immutable" not in answer.headers.get("Cache-Control", "")


@pytest.mark.no_db
def test_a_changed_file_changes_its_name_and_the_css_that_uses_it(tmp_path: Path):
    src, out = tmp_path / "src", tmp_path / "out"
    (src / "img").mkdir(parents=True)
    (src / "img" / "dot.png").write_bytes(b"\x89PNG first")
    (src / "site.css").write_text('a { background: url("img/dot.png?v=1#x"); }\n' * 40)

    def names() -> dict[str, str]:
        source = StaticSource("static", "/static/", src)
        build(source, out)
        return source.names

    first = names()
    assert first == names()  # idempotent: the same content, the same names
    css = (out / first["site.css"]).read_text()
    assert f'url("{first["img/dot.png"]}?v=1#x")' in css
    assert (out / (first["site.css"] + ".gz")).exists()  # worth compressing
    assert not (out / (first["img/dot.png"] + ".gz")).exists()  # PNG: never

    (src / "img" / "dot.png").write_bytes(b"\x89PNG second")
    second = names()
    assert second["img/dot.png"] != first["img/dot.png"]
    assert second["site.css"] != first["site.css"]


@pytest.mark.no_db
def test_style_sources_and_loose_icons_are_not_built(tmp_path: Path):
    src, out = tmp_path / "src", tmp_path / "out"
    for relative in ("css/all.css", "scss/_icons.scss", "less/icons.less", "svgs/solid/x.svg"):
        (src / relative).parent.mkdir(parents=True, exist_ok=True)
        (src / relative).write_text("x")
    source = StaticSource("static", "/static/", src)
    build(source, out)
    assert list(source.names) == ["css/all.css"]


def test_the_reports_files_stay_behind_the_reports_gate(app: Flask, world: World):
    url = _url(app, "reports.static", "admin/css/bootstrap4/admin.css")
    assert HASHED.search(url.split("?")[0]), url
    anonymous = app.test_client().get(url)
    assert anonymous.status_code == 302 and "/login/" in anonymous.headers["Location"]
    assert signed_in(app, world, "patient").get(url).status_code == 403
    answer = signed_in(app, world, "manager").get(url, headers={"Accept-Encoding": "gzip"})
    assert answer.status_code == 200
    assert answer.headers["Content-Encoding"] == "gzip"
    assert answer.headers["Cache-Control"] == "public, max-age=31536000, immutable"


def test_pages_link_the_manifest_and_hashed_files_only(app: Flask, world: World):
    html = signed_in(app, world, "patient").get("/cabinet/").get_data(as_text=True)
    assert '<html lang="ru">' in html
    assert '<link rel="manifest" href="/manifest.webmanifest">' in html
    local = re.findall(r'(?:src|href)="(/(?:static|reports/static)/[^"]+)"', html)
    assert local and all(HASHED.search(u) for u in local), local
    # No icon font, no select2 or date picker where no widget needs them.
    assert "fontawesome" not in html and "select2.min" not in html.split('data-css="')[0]


@pytest.mark.no_db
def test_the_manifest_names_the_service_and_its_icons(app: Flask):
    client = app.test_client()
    answer = client.get("/manifest.webmanifest", headers={"Accept-Language": "ru"})
    assert answer.status_code == 200
    assert answer.mimetype == "application/manifest+json"
    manifest = json.loads(answer.data)
    assert manifest["name"] == "Облако здоровья"
    assert manifest["theme_color"] == "#1d5fa8" and manifest["display"] == "standalone"
    for icon in manifest["icons"]:
        image = client.get(icon["src"])
        assert image.status_code == 200 and image.mimetype == "image/png"
        assert image.data.startswith(b"\x89PNG")


def test_the_service_worker_caches_only_the_offline_page(app: Flask, world: World):
    client = signed_in(app, world, "patient")
    worker = client.get("/sw.js")
    assert worker.status_code == 200 and worker.mimetype == "text/javascript"
    assert worker.headers["Cache-Control"] == "no-cache"
    code = worker.get_data(as_text=True)
    assert 'var OFFLINE = "/offline";' in code and "cache.add(OFFLINE)" in code
    assert code.count("cache.add") == 1 and "cache.put" not in code  # nothing else is kept
    assert re.search(r'var CACHE = "oblako-offline-v1-[0-9a-f]{12}";', code)
    assert client.get("/sw.js").get_data(as_text=True) == code  # stable: no reinstall per visit
    # The offline page is the same for everyone and needs no other file.
    offline = client.get("/offline").get_data(as_text=True)
    assert "Нет связи" in offline and "Иванова" not in offline
    assert "<link" not in offline and "<script" not in offline and "<img" not in offline
    assert app.test_client().get("/offline").get_data(as_text=True) == offline  # public


@pytest.mark.no_db
def test_the_policy_lets_the_manifest_and_the_worker_load(app: Flask):
    policy = app.test_client().get("/offline").headers["Content-Security-Policy"]
    assert "manifest-src 'self'" in policy and "worker-src 'self'" in policy


def test_the_page_says_its_language_and_has_one_main(app: Flask, world: World):
    client = signed_in(app, world, "patient")
    html = client.get("/cabinet/").get_data(as_text=True)
    assert '<html lang="ru">' in html and html.count("<main") == 1 and html.count("<h1") == 1
    assert 'class="sr-only">Меню</span>' in html  # the menu button's name
    client.get("/lang/en")
    html = client.get("/cabinet/").get_data(as_text=True)
    assert '<html lang="en">' in html and 'class="sr-only">Menu</span>' in html
