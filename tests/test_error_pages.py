"""Every error is a Russian page in the site's layout with the way back; the API answers JSON.

The database and Redis are made really unreachable for an app of this test's own: PostgreSQL
through a TCP proxy the test closes (the shared server is never touched), SQLite by removing
the folder of a copy of the database, Redis at a free port where nothing listens.
"""

from __future__ import annotations

import shutil
import socket
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask, abort
from sqlalchemy.engine import make_url

from tests.conftest import TEST_PASSWORD, csrf_token, login

LAYOUT = 'class="navbar'  # FAB's navbar: the page is drawn in the site's layout
HOME_LINK = 'href="/"'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TcpProxy:
    """127.0.0.1:<port> → target; close() refuses new connections and cuts the open ones."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            if self.closed:
                client.close()
                return
            upstream = socket.create_connection(self.target)
            with self.lock:
                self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.closed = True
        try:  # wakes the accepting thread (close() alone leaves it listening on Linux)
            self.server.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.server.close()
        with self.lock:
            for s in self.sockets:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()


def second_app(app: Flask, **overrides) -> Flask:
    from app import create_app

    config = {
        k: app.config[k]
        for k in (
            "SECRET_KEY",
            "STORAGE_DIR",
            "REDIS_URL",
            "RATELIMIT_STORAGE_URI",
            "SQLALCHEMY_DATABASE_URI",
            "FAB_PASSWORD_HASH_METHOD",
        )
    }
    config.update(TESTING=True, SERVER_NAME="localhost", **overrides)
    return create_app(config)


@pytest.fixture
def unreachable_database(app: Flask, tmp_path: Path) -> Iterator[tuple[Flask, callable]]:
    """An app on the test database and a function that makes the database unreachable."""
    url = make_url(app.config["SQLALCHEMY_DATABASE_URI"])
    if url.get_backend_name() == "postgresql":
        proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
        proxied = url.set(host="127.0.0.1", port=proxy.port)
        application = second_app(
            app, SQLALCHEMY_DATABASE_URI=proxied.render_as_string(hide_password=False)
        )
        stop = proxy.close
    else:
        folder = tmp_path / "db"
        folder.mkdir()
        copy = folder / "copy.db"
        with sqlite3.connect(url.database) as src, sqlite3.connect(copy) as dst:
            src.backup(dst)
        application = second_app(app, SQLALCHEMY_DATABASE_URI=f"sqlite:///{copy}")

        def stop() -> None:
            from app.extensions import db

            shutil.rmtree(folder)
            with application.app_context():
                db.engine.dispose()  # the next query opens the (now missing) file

    yield application, stop
    stop_quietly(stop)
    from app.extensions import db

    with application.app_context():
        db.engine.dispose()


def stop_quietly(stop) -> None:
    try:
        stop()
    except OSError:
        pass


def assert_unavailable_page(response) -> None:
    assert response.status_code == 503, response.status_code
    assert response.headers["Retry-After"].isdigit()
    body = response.get_data(as_text=True)
    assert "Сервис временно недоступен" in body
    assert LAYOUT in body and HOME_LINK in body
    assert "Internal Server Error" not in body


def test_database_unreachable_is_a_russian_503(request, make_staff):
    username = make_staff("Manager")
    # After the user exists: on SQLite the app runs on a copy of the database.
    application, stop = request.getfixturevalue("unreachable_database")
    client = application.test_client()
    assert login(client, username).status_code in (302, 303)
    assert client.get("/notifications/").status_code == 200
    visitor = application.test_client()
    token = csrf_token(visitor)

    stop()
    assert_unavailable_page(client.get("/notifications/"))
    assert_unavailable_page(client.get("/doctors/list/"))
    api = client.get("/api/v1/my/documents/")
    assert api.status_code == 503 and api.headers["Retry-After"].isdigit()
    assert "недоступен" in api.get_json()["message"]
    form = {"username": username, "password": TEST_PASSWORD, "csrf_token": token}
    assert_unavailable_page(visitor.post("/login/", data=form))


def test_redis_unreachable_is_a_russian_503(app, make_staff):
    dead = f"redis://127.0.0.1:{free_port()}/6"
    application = second_app(app, RATELIMIT_STORAGE_URI=dead, WTF_CSRF_ENABLED=False)
    username = make_staff("Manager")
    client = application.test_client()
    assert_unavailable_page(
        client.post("/login/", data={"username": username, "password": TEST_PASSWORD})
    )
    api = client.post(
        "/api/v1/security/login",
        json={"username": username, "password": TEST_PASSWORD, "provider": "db"},
    )
    assert api.status_code == 503 and api.headers["Retry-After"].isdigit()
    assert "недоступен" in api.get_json()["message"]


@pytest.fixture(scope="module")
def error_app(app: Flask) -> Flask:
    """An app that answers any status on request, and crashes like a real fault (no test
    propagation of exceptions: what a user gets from production)."""
    application = second_app(app, PROPAGATE_EXCEPTIONS=False)

    @application.route("/__status/<int:code>")
    def status(code: int):
        abort(code)

    @application.route("/__crash")
    def crash():
        raise RuntimeError("a bug")

    return application


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (400, "Не удалось понять запрос"),
        (403, "Доступ запрещён"),
        (404, "Страница не найдена"),
        (405, "Это действие здесь недоступно"),
        (429, "Слишком много запросов"),
        (500, "Что-то пошло не так"),
        (503, "Сервис временно недоступен"),
    ],
)
def test_each_status_is_a_russian_page_with_the_way_back(error_app, make_staff, code, text):
    client = error_app.test_client()
    assert login(client, make_staff("Manager")).status_code in (302, 303)
    referrer = "http://localhost/notifications/"
    response = client.get(f"/__status/{code}", headers={"Referer": referrer})
    assert response.status_code == code
    body = response.get_data(as_text=True)
    assert text in body and LAYOUT in body and HOME_LINK in body
    assert f'href="{referrer}"' in body  # back where they came from
    assert "Уведомления" in body or "fa-bell" in body  # the full navbar for a healthy site
    if code == 503:
        assert response.headers["Retry-After"].isdigit()
    other_site = client.get(f"/__status/{code}", headers={"Referer": "http://evil.example/"})
    assert "evil.example" not in other_site.get_data(as_text=True)


def test_a_crash_is_a_russian_500_page(error_app):
    response = error_app.test_client().get("/__crash")
    assert response.status_code == 500
    body = response.get_data(as_text=True)
    assert "Что-то пошло не так" in body and LAYOUT in body
    assert "RuntimeError" not in body and "Traceback" not in body


def test_real_routes_answer_russian_pages_and_the_api_json(app, role_client):
    patient = role_client("Patient")
    missing = patient.get("/no-such-page/")
    assert missing.status_code == 404 and "Страница не найдена" in missing.get_data(as_text=True)
    rules = list(app.url_map.iter_rules())
    readable = {r.rule for r in rules if "GET" in (r.methods or ())}
    post_only = next(
        r.rule
        for r in rules
        if not r.arguments and r.rule not in readable and not r.rule.startswith("/api/")
    )
    wrong_method = patient.get(post_only)
    assert wrong_method.status_code == 405 and "Allow" in wrong_method.headers
    assert "Это действие здесь недоступно" in wrong_method.get_data(as_text=True)
    refused = patient.get("/reports/")  # Flask-Admin's own 403, drawn by the same page
    assert refused.status_code == 403 and "Доступ запрещён" in refused.get_data(as_text=True)
    api = patient.get("/api/v1/no-such-thing/")
    assert api.status_code == 404 and "Страница не найдена" not in api.get_data(as_text=True)
    assert api.get_json()["message"].startswith("Такой страницы нет")


def test_an_expired_form_and_a_large_file_keep_their_friendly_answer(app, role_client):
    patient = role_client("Patient")
    expired = patient.post("/cabinet/documents/upload", data={"csrf_token": "stale"})
    assert expired.status_code == 303
    back = patient.get(expired.headers["Location"], follow_redirects=True)
    assert "Срок действия формы истёк" in back.get_data(as_text=True)
    token = csrf_token(patient, "/cabinet/documents/upload")
    too_large = patient.post(
        "/cabinet/documents/upload",
        data=b"x" * (app.config["MAX_CONTENT_LENGTH"] + 1),
        headers={"X-CSRFToken": token},
        content_type="application/octet-stream",
    )
    assert too_large.status_code == 303
