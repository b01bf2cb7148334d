"""«Проверка связи» (issue 18): the administrator's page that gathers ICE candidates through the
configured servers with a credential of its own; nobody else reaches it."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re

import pytest

from app.permissions import ADMIN, DOCTOR, DUTY_DOCTOR, MANAGER, PATIENT

URL = "/admin/connection-check/"
SECRET = "check-secret"


def page_config(html: str) -> dict:
    match = re.search(
        r'<script type="application/json" id="oblako-check-config">(.*?)</script>', html, re.S
    )
    assert match, "the page carries its configuration"
    return json.loads(match.group(1))


def test_the_admin_sees_the_check_with_a_fresh_turn_credential(app, role_client, monkeypatch):
    monkeypatch.setitem(app.config, "TURN_SECRET", SECRET)
    monkeypatch.setitem(app.config, "TURN_URLS", ["turn:turn.test:3478?transport=udp"])
    response = role_client(ADMIN).get(URL)
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    html = response.get_data(as_text=True)
    assert "<h1>Проверка связи</h1>" in html
    assert "turn:turn.test:3478?transport=udp" in html  # the servers it checks, listed
    assert re.search(r"/static/oblako/connection_check\.[0-9a-f]{12}\.js", html)
    config = page_config(html)
    assert config["turn"] is True
    (server,) = config["ice_servers"]
    assert server["username"].split(":")[1].startswith("check-")
    expected = hmac.new(SECRET.encode(), server["username"].encode(), hashlib.sha1).digest()
    assert server["credential"] == base64.b64encode(expected).decode()
    assert SECRET not in html
    # The verdicts are in Russian, ready for the script.
    assert config["text"]["relay_ok"].startswith("Сервер TURN работает")
    assert config["text"]["no_relay"].startswith("Кандидатов через ретранслятор")


def test_without_turn_the_page_says_so(app, role_client, monkeypatch):
    monkeypatch.setitem(app.config, "TURN_SECRET", "")
    config = page_config(role_client(ADMIN).get(URL).get_data(as_text=True))
    assert config["turn"] is False
    assert all("credential" not in server for server in config["ice_servers"])
    assert config["text"]["no_turn"].startswith("Сервер TURN не настроен")


def test_the_check_is_in_the_admins_menu_only(app, role_client):
    assert "Проверка связи" in role_client(ADMIN).get("/").get_data(as_text=True)
    assert "Проверка связи" not in role_client(MANAGER).get("/").get_data(as_text=True)


@pytest.mark.parametrize("role", [PATIENT, DOCTOR, DUTY_DOCTOR, MANAGER])
def test_everyone_else_is_refused(app, role_client, role, monkeypatch):
    monkeypatch.setitem(app.config, "TURN_SECRET", SECRET)
    monkeypatch.setitem(app.config, "TURN_URLS", ["turn:turn.test:3478"])
    response = role_client(role).get(URL)
    assert response.status_code in (302, 403)
    assert "credential" not in response.get_data(as_text=True)
    anonymous = app.test_client().get(URL)
    assert anonymous.status_code == 302 and "/login" in anonymous.headers["Location"]
