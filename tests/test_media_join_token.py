"""The consultation room's join token (issue 5): who gets one and with what claims, TURN
credentials, when the room opens and closes, the chat grant, the media URL in the CSP."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from datetime import timedelta

import pytest

from tests.media_web_world import (
    consultation,
    decode,
    make_consultation,
    session_generation,
    signed_in,
    stage_world,
    user_id_of_patient,
)


@pytest.fixture
def world(app, make_patient, make_center, make_doctor, make_staff):
    """Centres, doctors, staff and patients P and Q: tests/media_web_world.py."""
    return stage_world(app, make_patient, make_center, make_doctor, make_staff)


def test_patient_owner_gets_a_token_with_the_right_claims(app, world):
    c = consultation(app, world["c"])
    client = signed_in(app, world["p_login"])
    response = client.get(f"/media/token/{world['c']}")
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    data = response.get_json()
    assert data["expires_in"] <= 300
    assert data["url"] == "http://localhost:5001"  # the page's host on MEDIA_PORT
    assert data["ice_servers"] == app.config["MEDIA_ICE_SERVERS"]
    claims = decode(app, data["token"])
    assert claims["sub"] == str(user_id_of_patient(app, world["p"]))
    # The session's generation: the media server refuses the token once it moves on.
    assert claims["gen"] == session_generation(app, claims["sub"])
    assert claims["cid"] == c.id
    assert claims["cpub"] == str(world["c"])
    assert claims["role"] == "patient"
    assert claims["name"].startswith("Медиева")
    assert claims["media"] is True  # five minutes before the start: the room is open
    assert claims["chat"] is False  # an application to a centre: chat once it starts
    assert 0 < claims["exp"] - claims["iat"] <= 300


def test_the_consultations_doctor_and_a_doctor_of_its_centre_get_doctor_tokens(app, world):
    for username in ("media_d1", "media_d2"):
        data = signed_in(app, username).get(f"/media/token/{world['c']}").get_json()
        claims = decode(app, data["token"])
        assert claims["role"] == "doctor", username
        assert claims["name"].startswith("Врачев")
        assert claims["media"] is True


@pytest.mark.parametrize("who", ["q", "media_d3", "media_duty", "media_admin"])
def test_others_are_refused_with_a_json_404(app, world, who):
    username = world["q_login"] if who == "q" else who
    response = signed_in(app, username).get(f"/media/token/{world['c']}")
    assert response.status_code == 404
    body = response.get_json()
    assert body["error"] == "not_found"
    assert body["message"] == "Консультация не найдена."
    assert "token" not in body


def test_a_manager_is_refused_with_a_json_403_and_a_visitor_is_sent_to_sign_in(app, world):
    response = signed_in(app, "media_manager").get(f"/media/token/{world['c']}")
    assert response.status_code == 403
    assert response.get_json()["error"] == "forbidden"
    anonymous = app.test_client().get(f"/media/token/{world['c']}")
    assert anonymous.status_code == 302 and "/login" in anonymous.headers["Location"]
    unknown = signed_in(app, world["p_login"]).get(f"/media/token/{uuid.uuid4()}")
    assert unknown.status_code == 404


TURN_SECRET = "a-turn-secret-shared-with-coturn"


@pytest.fixture
def with_turn(app, monkeypatch):
    monkeypatch.setitem(app.config, "TURN_SECRET", TURN_SECRET)
    monkeypatch.setitem(
        app.config, "TURN_URLS", ["turn:turn.test:3478", "turns:turn.test:443?transport=tcp"]
    )
    monkeypatch.setitem(app.config, "TURN_CREDENTIAL_TTL_SECONDS", 3600)
    monkeypatch.setitem(app.config, "MEDIA_ICE_SERVERS", [{"urls": "stun:stun.test:3478"}])


def test_each_join_gets_its_own_expiring_turn_credential(app, world, with_turn):
    before = int(time.time())
    patient = signed_in(app, world["p_login"]).get(f"/media/token/{world['c']}").get_json()
    doctor = signed_in(app, "media_d1").get(f"/media/token/{world['c']}").get_json()
    after = int(time.time())
    assert patient["ice_transport_policy"] == "all"
    stun, turn = patient["ice_servers"]
    assert stun == {"urls": "stun:stun.test:3478"}  # no credential on a STUN server
    assert turn["urls"] == ["turn:turn.test:3478", "turns:turn.test:443?transport=tcp"]
    expiry, who = turn["username"].split(":")
    # coturn's REST scheme: "<expiry>:<who>", the credential base64(HMAC-SHA1(secret, name)).
    assert before + 3600 <= int(expiry) <= after + 3600
    assert who == f"{world['c']}-patient"  # the room and the role, never a person's name
    expected = base64.b64encode(
        hmac.new(TURN_SECRET.encode(), turn["username"].encode(), hashlib.sha1).digest()
    ).decode()
    assert turn["credential"] == expected
    doctors_turn = doctor["ice_servers"][1]
    assert doctors_turn["username"].endswith(f":{world['c']}-doctor")
    assert doctors_turn["credential"] != turn["credential"]
    # The secret itself never leaves the server.
    assert TURN_SECRET not in json.dumps(patient) + json.dumps(doctor)


def test_no_turn_credential_without_a_valid_join(app, world, with_turn):
    for username in (world["q_login"], "media_d3", "media_admin"):
        response = signed_in(app, username).get(f"/media/token/{world['c']}")
        assert response.status_code == 404
        assert "ice_servers" not in response.get_json()
    manager = signed_in(app, "media_manager").get(f"/media/token/{world['c']}")
    assert manager.status_code == 403 and "ice_servers" not in manager.get_json()
    anonymous = app.test_client().get(f"/media/token/{world['c']}")
    assert anonymous.status_code == 302
    # Nor in the room page itself: the page fetches them with its join token only.
    page = signed_in(app, world["p_login"]).get(f"/media/room/{world['c']}")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "turn.test" not in html and "credential" not in html


def test_a_relay_only_policy_reaches_the_page_with_the_token(app, world, with_turn, monkeypatch):
    monkeypatch.setitem(app.config, "MEDIA_ICE_TRANSPORT_POLICY", "relay")
    data = signed_in(app, world["p_login"]).get(f"/media/token/{world['c']}").get_json()
    assert data["ice_transport_policy"] == "relay"


def test_too_early_the_token_has_no_media_and_the_pages_say_when_it_opens(app, world):
    later = make_consultation(app, world, doctor=world["d1"], minutes=60)
    client = signed_in(app, world["p_login"])
    claims = decode(app, client.get(f"/media/token/{later}").get_json()["token"])
    assert claims["media"] is False
    page = client.get(f"/cabinet/consultations/{later}").get_data(as_text=True)
    assert 'id="join-room"' not in page
    assert "Слишком рано" in page and "за 15 минут до начала" in page
    # The time in the patient's own zone (Vladivostok), as the page shows it.
    c = consultation(app, later)
    from zoneinfo import ZoneInfo

    opens = (c.scheduled_at - timedelta(minutes=15)).astimezone(ZoneInfo("Asia/Vladivostok"))
    assert opens.strftime("%H:%M") in page
    room = client.get(f"/media/room/{later}").get_data(as_text=True)
    assert 'id="room-too-early"' in room and 'id="btn-join"' not in room


def test_the_join_button_shows_from_15_minutes_before_for_patient_and_doctor(app, world):
    patient_page = signed_in(app, world["p_login"]).get(f"/cabinet/consultations/{world['c']}")
    html = patient_page.get_data(as_text=True)
    assert f'href="/media/room/{world["c"]}"' in html and "Войти в консультацию" in html
    doctor_page = signed_in(app, "media_d1").get(f"/care/consultations/{world['c']}")
    assert f'href="/media/room/{world["c"]}"' in doctor_page.get_data(as_text=True)


def test_after_the_end_and_its_grace_period_the_room_is_closed(app, world):
    past = make_consultation(app, world, doctor=world["d1"], minutes=-(30 + 61))
    claims = decode(
        app, signed_in(app, world["p_login"]).get(f"/media/token/{past}").get_json()["token"]
    )
    assert claims["media"] is False


def test_completed_consultation_has_no_chat_and_no_media(app, world):
    done = make_consultation(
        app, world, doctor=world["duty"], status="completed", minutes=-10, kind="duty"
    )
    data = signed_in(app, world["p_login"]).get(f"/media/token/{done}").get_json()
    claims = decode(app, data["token"])
    assert claims["chat"] is False and claims["media"] is False


def test_chat_rules_duty_before_and_any_kind_in_progress(app, world):
    duty = make_consultation(app, world, doctor=world["duty"], minutes=24 * 60)
    running = make_consultation(app, world, doctor=world["d1"], status="in_progress", minutes=-5)
    client = signed_in(app, world["p_login"])
    duty_claims = decode(app, client.get(f"/media/token/{duty}").get_json()["token"])
    assert duty_claims["chat"] is True and duty_claims["media"] is False
    running_claims = decode(app, client.get(f"/media/token/{running}").get_json()["token"])
    assert running_claims["chat"] is True and running_claims["media"] is True
    # The duty doctor of that booking joins as its doctor; another duty doctor does not.
    doctor = decode(
        app, signed_in(app, "media_duty").get(f"/media/token/{duty}").get_json()["token"]
    )
    assert doctor["role"] == "doctor" and doctor["chat"] is True
    assert signed_in(app, "media_duty2").get(f"/media/token/{duty}").status_code == 404


def test_the_media_url_and_csp_follow_the_configuration(app, world):
    client = signed_in(app, world["p_login"])
    csp = client.get("/cabinet/").headers["Content-Security-Policy"]
    assert "connect-src 'self' http://localhost:5001 ws://localhost:5001" in csp
    app.config["MEDIA_PUBLIC_URL"] = "https://media.example.org"
    try:
        assert client.get(f"/media/token/{world['c']}").get_json()["url"] == (
            "https://media.example.org"
        )
        csp = client.get("/cabinet/").headers["Content-Security-Policy"]
        assert "https://media.example.org wss://media.example.org" in csp
    finally:
        app.config["MEDIA_PUBLIC_URL"] = ""
