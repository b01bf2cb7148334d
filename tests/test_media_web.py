"""The web side of the consultation room: who gets a join token and with what claims, the room
and guest pages, the chat on the consultation page, unread counts, invites (issue 5)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
import uuid
from datetime import timedelta

import jwt
import pytest
from sqlalchemy import event
from sqlalchemy.exc import IntegrityError

from tests.conftest import csrf_token, login, patient_username

PASSWORD_PAGE = "/account/password/"


# ---------------------------------------------------------------------------------------------
# The world
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def world(app, make_patient, make_center, make_doctor, make_staff):
    """Centre C1 with doctors D1 (assigned) and D2, centre C2 with D3, a duty doctor; patient P
    (Vladivostok) with a C1 consultation starting in 5 minutes, patient Q."""
    c1, c2 = make_center("Кардиоцентр"), make_center("Онкоцентр")
    w = {
        "c1": c1,
        "c2": c2,
        "d1": make_doctor(username="media_d1", center_id=c1),
        "d2": make_doctor(username="media_d2", center_id=c1),
        "d3": make_doctor(username="media_d3", center_id=c2),
        "duty": make_doctor(username="media_duty", is_duty=True),
        "duty2": make_doctor(username="media_duty2", is_duty=True),
        "p": make_patient(surname="Медиева", timezone="Asia/Vladivostok"),
        "q": make_patient(surname="Чужова"),
        "manager": make_staff("Manager", "media_manager"),
        "admin": make_staff("Admin", "media_admin"),
    }
    w["p_login"] = patient_username(app, w["p"])
    w["q_login"] = patient_username(app, w["q"])
    w["c"] = make_consultation(app, w, doctor=w["d1"])
    return w


def make_consultation(app, w, *, doctor=None, status="scheduled", minutes=5, kind=None, **kw):
    """A consultation of P starting in `minutes` (negative: in the past)."""
    from app.extensions import db
    from models import Consultation, utcnow

    duty = doctor in (w["duty"], w["duty2"])
    with app.app_context():
        c = Consultation(
            public_id=uuid.uuid4(),
            kind=kind or ("duty" if duty else "centre_request"),
            status=status,
            patient_id=kw.pop("patient", w["p"]),
            center_id=kw.pop("center", None if duty else w["c1"]),
            doctor_id=doctor,
            complaints="Боли в груди",
            scheduled_at=utcnow() + timedelta(minutes=minutes),
            duration_minutes=30,
            **kw,
        )
        db.session.add(c)
        db.session.commit()
        return c.public_id


def signed_in(app, username):
    client = app.test_client()
    if username:
        assert login(client, username).status_code == 302
    return client


def decode(app, token: str) -> dict:
    from config import media_token_key

    return jwt.decode(
        token, media_token_key(app.config), algorithms=["HS256"], audience="oblako-media"
    )


def consultation(app, public_id):
    from sqlalchemy import select

    from app.extensions import db
    from models import Consultation

    with app.app_context():
        return db.session.execute(
            select(Consultation).where(Consultation.public_id == public_id)
        ).scalar_one()


def add_messages(app, public_id, author_user_id: int, *bodies: str) -> list[int]:
    from app.extensions import db
    from models import ChatMessage

    c = consultation(app, public_id)
    ids = []
    with app.app_context():
        for body in bodies:
            m = ChatMessage(
                consultation_id=c.id,
                author_id=author_user_id,
                body=body,
                client_msg_id=uuid.uuid4().hex,
            )
            db.session.add(m)
            db.session.flush()
            ids.append(m.id)
        db.session.commit()
    return ids


def user_id_of_doctor(app, doctor_id: int) -> int:
    from app.extensions import db
    from models import Doctor

    with app.app_context():
        return db.session.get(Doctor, doctor_id).user_id


def user_id_of_patient(app, patient_id: int) -> int:
    from app.extensions import db
    from models import Patient

    with app.app_context():
        return db.session.get(Patient, patient_id).user_id


def session_generation(app, user_id: str | int) -> int:
    from app.extensions import db
    from models import OblakoUser

    with app.app_context():
        return db.session.get(OblakoUser, int(user_id)).session_generation


# ---------------------------------------------------------------------------------------------
# The join token
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# The room page
# ---------------------------------------------------------------------------------------------


def room_config(html: str) -> dict:
    import json

    match = re.search(
        r'<script type="application/json" id="oblako-room-config">(.*?)</script>', html, re.S
    )
    assert match, "no room config on the page"
    return json.loads(match.group(1))


@pytest.mark.parametrize("username,role", [("p", "patient"), ("media_d1", "doctor")])
def test_the_room_page_renders_for_each_participant(app, world, username, role):
    client = signed_in(app, world["p_login"] if username == "p" else username)
    response = client.get(f"/media/room/{world['c']}")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "<title>Консультация" in html
    # Content-hashed names (app/assets.py): socket.io.min.<hash>.js, then the room's parts in
    # their load order (room/core.<hash>.js first, room/controls.<hash>.js, which starts, last).
    socket_io = re.search(r"/static/vendor/socket\.io\.min\.[0-9a-f]{12}\.js", html)
    assert socket_io
    parts = re.findall(r"/static/oblako/room/(\w+)\.[0-9a-f]{12}\.js", html)
    assert parts == ["core", "chat", "precall", "presence", "peers", "relay", "controls"]
    assert socket_io.start() < html.index("/static/oblako/room/core.")
    config = room_config(html)
    assert config["role"] == role and config["mode"] == "room"
    assert config["token_url"] == f"/media/token/{world['c']}"
    # Every text of the script comes translated from here: Russian, no English left.
    assert config["text"]["waiting"] == "Пожалуйста, подождите: врач скоро пригласит вас."
    assert config["errors"]["room_full"] == "Комната консультации заполнена."
    assert 'id="btn-join"' in html
    if role == "doctor":
        assert 'id="waiting-room"' in html and 'id="invite-form"' in html
        assert config["start_url"] == f"/care/consultations/{world['c']}/start"
        assert config["conclusion_url"] == f"/care/consultations/{world['c']}/conclusion"
    else:
        assert 'id="waiting-room"' not in html and config["start_url"] is None


@pytest.mark.parametrize("who", ["q", "media_d3", "media_duty", "media_admin"])
def test_the_room_page_is_404_for_everyone_else(app, world, who):
    username = world["q_login"] if who == "q" else who
    assert signed_in(app, username).get(f"/media/room/{world['c']}").status_code == 404


def test_chat_history_is_escaped_and_in_the_viewers_zone(app, world):
    duty = make_consultation(app, world, doctor=world["duty"], minutes=24 * 60)
    doctor_user = user_id_of_doctor(app, world["duty"])
    add_messages(app, duty, doctor_user, "<script>alert(1)</script> Здравствуйте")
    page = signed_in(app, world["p_login"]).get(f"/cabinet/consultations/{duty}")
    html = page.get_data(as_text=True)
    assert 'id="chat-form"' in html  # a duty booking: the patient writes before the day
    assert "&lt;script&gt;alert(1)&lt;/script&gt; Здравствуйте" in html
    assert "<script>alert(1)" not in html
    from app.extensions import db
    from models import ChatMessage

    with app.app_context():
        created = db.session.query(ChatMessage).one().created_at
    from zoneinfo import ZoneInfo

    local = created.astimezone(ZoneInfo("Asia/Vladivostok")).strftime("%H:%M")
    assert re.search(rf'<time datetime="[^"]+">[^<]*{local}</time>', html)
    # The doctor's care page carries the same chat.
    care = signed_in(app, "media_duty").get(f"/care/consultations/{duty}").get_data(as_text=True)
    assert 'id="chat-messages"' in care and "&lt;script&gt;" in care


def test_a_centre_consultation_before_its_start_has_no_chat_panel(app, world):
    html = signed_in(app, world["p_login"]).get(f"/cabinet/consultations/{world['c']}")
    assert 'id="chat-form"' not in html.get_data(as_text=True)


# ---------------------------------------------------------------------------------------------
# Unread counts
# ---------------------------------------------------------------------------------------------


def test_unread_counts_in_the_cabinet_list_reset_by_reading(app, world):
    duty = make_consultation(app, world, doctor=world["duty"], minutes=24 * 60)
    doctor_user = user_id_of_doctor(app, world["duty"])
    patient_user = user_id_of_patient(app, world["p"])
    add_messages(app, duty, doctor_user, "Первое", "Второе")
    add_messages(app, duty, patient_user, "Моё")  # own messages are never unread
    client = signed_in(app, world["p_login"])
    listing = client.get("/cabinet/consultations/").get_data(as_text=True)
    badges = re.findall(
        r'class="badge chat-unread"[^>]*><i class="fa fa-comment"></i> (\d+)', listing
    )
    assert badges == ["2"]
    client.get(f"/cabinet/consultations/{duty}")  # reading the chat marks it
    listing = client.get("/cabinet/consultations/").get_data(as_text=True)
    assert "chat-unread" not in listing
    # The doctor's day shows what the patient wrote.
    from zoneinfo import ZoneInfo

    day = consultation(app, duty).scheduled_at.astimezone(ZoneInfo("Europe/Moscow")).date()
    care = signed_in(app, "media_duty").get(f"/care/day?date={day.isoformat()}")
    assert re.search(r"chat-unread[^>]*><i class=\"fa fa-comment\"></i> 1<", care.get_data(True))


def test_unread_counts_cost_one_query_for_the_whole_list(app, world):
    from app import media as svc
    from app.extensions import db

    doctor_user = user_id_of_doctor(app, world["duty"])
    patient_user = user_id_of_patient(app, world["p"])

    def queries_for(n: int) -> tuple[int, dict]:
        ids = []
        for _ in range(n):
            public_id = make_consultation(app, world, doctor=world["duty"], minutes=600)
            add_messages(app, public_id, doctor_user, "а", "б", "в")
            ids.append(consultation(app, public_id).id)
        with app.app_context():
            statements = []
            listener = lambda *a, **k: statements.append(a[2])  # noqa: E731
            event.listen(db.engine, "before_cursor_execute", listener)
            try:
                counts = svc.unread_counts(patient_user, ids)
            finally:
                event.remove(db.engine, "before_cursor_execute", listener)
        return len(statements), counts

    few, _ = queries_for(2)
    many, counts_many = queries_for(12)
    assert few == many == 1
    assert set(counts_many.values()) == {3} and len(counts_many) == 12


def test_the_read_mark_never_moves_backwards(app, world):
    from app import media as svc
    from app.extensions import db
    from models import ChatRead

    duty = make_consultation(app, world, doctor=world["duty"], minutes=600)
    ids = add_messages(app, duty, user_id_of_doctor(app, world["duty"]), "1", "2", "3")
    patient_user = user_id_of_patient(app, world["p"])
    with app.app_context():
        c = db.session.get(type(consultation(app, duty)), consultation(app, duty).id)
        assert svc.mark_read(patient_user, c, ids[2]) == ids[2]
        assert svc.mark_read(patient_user, c, ids[0]) == ids[2]
        assert svc.mark_read(patient_user, c, ids[2] + 1000) == ids[2]  # not past the last
        db.session.commit()
        assert db.session.query(ChatRead).one().last_read_id == ids[2]
        assert svc.unread_counts(patient_user, [c.id]) == {}


# ---------------------------------------------------------------------------------------------
# Invites and the guest
# ---------------------------------------------------------------------------------------------


def create_invite(app, client, public_id, name="Анна Переводчикова", role="interpreter"):
    token = csrf_token(client, f"/media/room/{public_id}")
    return client.post(
        f"/media/room/{public_id}/invite",
        data={"csrf_token": token, "name": name, "role": role},
        headers={"Accept": "application/json"},
    )


def test_an_invite_link_works_once_and_gives_a_guest_grant(app, world):
    from app.extensions import db
    from models import MediaInvite

    doctor = signed_in(app, "media_d1")
    response = create_invite(app, doctor, world["c"])
    assert response.status_code == 200, response.get_data(as_text=True)
    link = response.get_json()["link"]
    secret = link.rsplit("/", 1)[1]
    assert len(secret) >= 40
    with app.app_context():
        invite = db.session.query(MediaInvite).one()
        # Only the hash is stored, the invite ends with the consultation's room.
        assert invite.token_hash != secret and secret not in invite.token_hash
        assert invite.used_at is None and invite.guest_role == "interpreter"
    guest = app.test_client()
    opened = guest.get(f"/media/guest/join/{secret}")
    assert opened.status_code == 302 and opened.headers["Location"].endswith("/media/guest/room")
    page = guest.get("/media/guest/room")
    assert page.status_code == 200
    config = room_config(page.get_data(as_text=True))
    assert config["role"] == "guest" and config["token_url"] == "/media/guest/token"
    claims = decode(app, guest.get("/media/guest/token").get_json()["token"])
    assert claims["role"] == "guest" and claims["name"] == "Анна Переводчикова"
    assert claims["sub"] == f"guest:{invite.id}" and claims["inv"] == invite.id
    assert "gen" not in claims  # a guest has no account, hence no session to end
    assert claims["media"] is True and claims["chat"] is False
    assert claims["cpub"] == str(world["c"])
    # Used once: a second browser with the same link gets nothing.
    again = app.test_client().get(f"/media/guest/join/{secret}")
    assert again.status_code == 404
    assert "уже использована" in again.get_data(as_text=True)


def test_a_revoked_invite_stops_the_guest(app, world):
    from app.extensions import db
    from models import MediaInvite

    doctor = signed_in(app, "media_d1")
    secret = create_invite(app, doctor, world["c"]).get_json()["link"].rsplit("/", 1)[1]
    guest = app.test_client()
    guest.get(f"/media/guest/join/{secret}")
    assert guest.get("/media/guest/token").status_code == 200
    with app.app_context():
        invite_id = db.session.query(MediaInvite).one().public_id
    token = csrf_token(doctor, f"/media/room/{world['c']}")
    revoked = doctor.post(
        f"/media/room/{world['c']}/invites/{invite_id}/revoke", data={"csrf_token": token}
    )
    assert revoked.status_code == 302
    refused = guest.get("/media/guest/token")
    assert refused.status_code == 403 and refused.get_json()["error"] == "invite_unavailable"
    assert guest.get("/media/guest/room").status_code == 404


def test_an_expired_invite_is_refused(app, world):
    from app.extensions import db
    from models import MediaInvite, utcnow

    doctor = signed_in(app, "media_d1")
    secret = create_invite(app, doctor, world["c"]).get_json()["link"].rsplit("/", 1)[1]
    with app.app_context():
        invite = db.session.query(MediaInvite).one()
        invite.expires_at = utcnow() - timedelta(minutes=1)
        db.session.commit()
    response = app.test_client().get(f"/media/guest/join/{secret}")
    assert response.status_code == 404
    assert "истёк" in response.get_data(as_text=True) or "отозван" in response.get_data(True)


def test_invites_are_the_doctors_and_checked(app, world):
    patient = signed_in(app, world["p_login"])
    token = csrf_token(patient, PASSWORD_PAGE)
    refused = patient.post(
        f"/media/room/{world['c']}/invite",
        data={"csrf_token": token, "name": "X", "role": "relative"},
    )
    assert refused.status_code in (302, 403)
    doctor = signed_in(app, "media_d1")
    bad_role = create_invite(app, doctor, world["c"], role="boss")
    assert bad_role.status_code == 400 and "коллега" in bad_role.get_json()["message"]
    no_name = create_invite(app, doctor, world["c"], name="   ")
    assert no_name.status_code == 400
    done = make_consultation(app, world, doctor=world["d1"], status="completed", minutes=-40)
    closed = create_invite(app, doctor, done)
    assert closed.status_code == 400
    # A doctor of another centre cannot reach the consultation at all.
    other = signed_in(app, "media_d3")
    token = csrf_token(other, PASSWORD_PAGE)
    assert (
        other.post(
            f"/media/room/{world['c']}/invite",
            data={"csrf_token": token, "name": "X", "role": "relative"},
        ).status_code
        == 404
    )
    from app.extensions import db
    from models import MediaInvite

    with app.app_context():
        assert db.session.query(MediaInvite).count() == 0


def test_unknown_guest_links_and_sessions_get_a_clear_404(app, world):
    client = app.test_client()
    response = client.get("/media/guest/join/not-a-real-secret")
    assert response.status_code == 404 and "Приглашение" in response.get_data(as_text=True)
    assert client.get("/media/guest/room").status_code == 404
    token = client.get("/media/guest/token")
    assert token.status_code == 403 and token.get_json()["message"]


def test_the_cabinet_list_costs_the_same_queries_however_many_chats(app, world):
    from app.extensions import db

    doctor_user = user_id_of_doctor(app, world["duty"])
    client = signed_in(app, world["p_login"])

    def queries_for_list() -> int:
        with app.app_context():
            engine = db.engine
        statements: list[str] = []

        def listener(*args, **kwargs):
            statements.append(args[2])

        event.listen(engine, "before_cursor_execute", listener)
        try:
            assert client.get("/cabinet/consultations/").status_code == 200
        finally:
            event.remove(engine, "before_cursor_execute", listener)
        return len(statements)

    for _ in range(2):
        add_messages(app, make_consultation(app, world, doctor=world["duty"]), doctor_user, "а")
    few = queries_for_list()
    for _ in range(8):
        add_messages(app, make_consultation(app, world, doctor=world["duty"]), doctor_user, "б")
    many = queries_for_list()
    assert few == many


def test_a_guest_writes_during_the_consultation_and_every_page_shows_the_guests_lines(app, world):
    """The grant lets a guest write once the consultation is in progress (not before); a guest's
    line is stored under the invite and shown with the invite's name, counted as unread for the
    patient, and marked as the guest's own on the guest's page."""
    import app.media as svc
    from app.extensions import db
    from models import ChatMessage, MediaInvite

    doctor = signed_in(app, "media_d1")
    secret = create_invite(app, doctor, world["c"]).get_json()["link"].rsplit("/", 1)[1]
    guest = app.test_client()
    guest.get(f"/media/guest/join/{secret}")
    assert decode(app, guest.get("/media/guest/token").get_json()["token"])["chat"] is False
    c = consultation(app, world["c"])
    with app.app_context():
        db.session.get(type(c), c.id).status = "in_progress"
        invite = db.session.query(MediaInvite).one()
        db.session.add(
            ChatMessage(
                consultation_id=c.id,
                invite_id=invite.id,
                body="Перевожу: <b>да</b>",
                client_msg_id="g-1",
            )
        )
        db.session.commit()
        invite_id = invite.id
    assert decode(app, guest.get("/media/guest/token").get_json()["token"])["chat"] is True
    guest_page = guest.get("/media/guest/room").get_data(as_text=True)
    assert 'id="chat-form"' in guest_page and 'id="chat-guest-hint"' in guest_page
    assert re.search(r'class="chat-message own"[^>]*data-client-id="g-1"', guest_page)

    patient_user = user_id_of_patient(app, world["p"])
    with app.app_context():
        assert svc.unread_counts(patient_user, [c.id]) == {c.id: 1}
        lines = svc.chat_history(db.session.get(type(c), c.id), viewer_id=patient_user)
    assert [(line.author_name, line.author_role, line.own) for line in lines] == [
        ("Анна Переводчикова", "guest", False)
    ]
    page = signed_in(app, world["p_login"]).get(f"/cabinet/consultations/{world['c']}")
    html = page.get_data(as_text=True)
    assert "Анна Переводчикова" in html and "Перевожу: &lt;b&gt;да&lt;/b&gt;" in html
    # Exactly one author: an account or an invite, never both, never neither.
    with app.app_context():
        for author_id, invite in ((patient_user, invite_id), (None, None)):
            db.session.add(
                ChatMessage(
                    consultation_id=c.id,
                    author_id=author_id,
                    invite_id=invite,
                    body="x",
                    client_msg_id=uuid.uuid4().hex,
                )
            )
            with pytest.raises(IntegrityError):
                db.session.commit()
            db.session.rollback()


def test_the_room_page_revokes_in_place_and_strangers_cannot(app, world):
    """The room lists a new invite with its revoke address and revokes it by JSON (a reload
    would drop the doctor's call); another centre's doctor and the patient get 404."""
    from app.extensions import db
    from models import MediaInvite

    doctor = signed_in(app, "media_d1")
    created = create_invite(app, doctor, world["c"]).get_json()
    with app.app_context():
        invite_id = db.session.query(MediaInvite).one().public_id
    url = f"/media/room/{world['c']}/invites/{invite_id}/revoke"
    assert created["revoke_url"] == url
    assert created["state"] == "ссылка ещё не открыта"
    # Another centre's doctor: not theirs (404); a patient: no such permission at all (403).
    for username, code in (("media_d3", 404), (world["q_login"], 403)):
        stranger = signed_in(app, username)
        token = csrf_token(stranger, PASSWORD_PAGE)
        refused = stranger.post(
            url, data={"csrf_token": token}, headers={"Accept": "application/json"}
        )
        assert refused.status_code == code, username
    expired = doctor.post(url, data={}, headers={"Accept": "application/json"})  # no CSRF
    assert expired.status_code == 400
    with app.app_context():
        assert db.session.query(MediaInvite).one().revoked_at is None
    token = csrf_token(doctor, f"/media/room/{world['c']}")
    done = doctor.post(url, data={"csrf_token": token}, headers={"Accept": "application/json"})
    assert done.status_code == 200
    assert done.get_json() == {
        "ok": True,
        "message": "Приглашение для Анна Переводчикова отозвано.",
    }
    with app.app_context():
        assert db.session.query(MediaInvite).one().revoked_at is not None
