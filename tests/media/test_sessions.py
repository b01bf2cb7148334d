"""A join token ends with its session (issue 15, item 4).

The token comes from the web app's own endpoint for a signed-in browser; after logout, a
password change or deactivation it no longer joins, and a socket already open with it is closed
within seconds (with `session_ended`), on every media process, while the others in the room
stay. Guests (no account) are not affected.
"""

from __future__ import annotations

import asyncio

import jwt
from flask import Flask
from flask.testing import FlaskClient

from tests.conftest import TEST_PASSWORD, csrf_token, login
from tests.media_fixtures import MediaClient, refused_code, run

NEW_PASSWORD = "Novyi2026parol"
CLOSE_DEADLINE = 20  # seconds: the check runs every 2 s; a loaded machine may take longer


def signed_in(app: Flask, user_id: int) -> FlaskClient:
    from app.extensions import db
    from models import OblakoUser

    with app.app_context():
        username = db.session.get(OblakoUser, user_id).username
    client = app.test_client()
    assert login(client, username).status_code == 302
    return client


def token_response(app: Flask, client: FlaskClient, consultation_id: int):
    """What the room page asks for: GET /media/token/<consultation public id>."""
    from app.extensions import db
    from models import Consultation

    with app.app_context():
        public_id = db.session.get(Consultation, consultation_id).public_id
    return client.get(f"/media/token/{public_id}")


def web_token(app: Flask, client: FlaskClient, consultation_id: int) -> str:
    response = token_response(app, client, consultation_id)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()["token"]


def change_password(client: FlaskClient) -> None:
    response = client.post(
        "/account/password/",
        data={
            "current_password": TEST_PASSWORD,
            "new_password": NEW_PASSWORD,
            "confirm_password": NEW_PASSWORD,
            "csrf_token": csrf_token(client, "/account/password/"),
        },
    )
    assert response.status_code == 302


def deactivate(app: Flask, user_id: int) -> None:
    from app.extensions import db
    from models import OblakoUser

    with app.app_context():
        user = db.session.get(OblakoUser, user_id)
        user.active = False
        app.appbuilder.sm.update_user(user)  # the admin screens' path


async def joins(url: str, token: str) -> bool:
    c = MediaClient(url, lambda: token, reconnection=False)
    await c.connect()
    await c.close()
    return True


def test_after_logout_the_old_token_is_refused(app, media_server, make_room):
    room = make_room()
    web = signed_in(app, room.patient_user_id)
    token = web_token(app, web, room.consultation_id)
    assert run(joins(media_server.url, token))
    web.get("/logout/")
    assert run(refused_code(media_server.url, {"token": token})) == "session_ended"


def test_after_a_password_change_the_old_token_is_refused(app, media_server, make_room):
    room = make_room()
    here = signed_in(app, room.doctor_user_id)
    elsewhere = signed_in(app, room.doctor_user_id)
    old = web_token(app, elsewhere, room.consultation_id)
    change_password(here)
    assert run(refused_code(media_server.url, {"token": old})) == "session_ended"
    # The session that changed the password goes on, and so does a token it mints now.
    assert run(joins(media_server.url, web_token(app, here, room.consultation_id)))
    assert token_response(app, elsewhere, room.consultation_id).status_code != 200


def test_after_deactivation_the_old_token_is_refused(app, media_server, make_room):
    room = make_room()
    token = web_token(app, signed_in(app, room.patient_user_id), room.consultation_id)
    deactivate(app, room.patient_user_id)
    assert run(refused_code(media_server.url, {"token": token})) == "session_ended"


def test_a_plain_deactivation_flag_is_enough(app, media_server, make_room):
    """An account switched off without the generation moving (a bulk update) is refused too."""
    from app.extensions import db
    from models import OblakoUser

    room = make_room()
    token = web_token(app, signed_in(app, room.patient_user_id), room.consultation_id)
    with app.app_context():
        db.session.query(OblakoUser).filter_by(id=room.patient_user_id).update({"active": False})
        db.session.commit()
    assert run(refused_code(media_server.url, {"token": token})) == "session_ended"


def test_a_users_token_without_a_generation_is_refused(app, media_server, make_room):
    from config import media_token_key

    room = make_room()
    good = media_server.token(room.consultation_id, room.patient_user_id, "patient")
    claims = jwt.decode(good, options={"verify_signature": False})
    del claims["gen"]
    bare = jwt.encode(claims, media_token_key(app.config), algorithm="HS256")
    assert run(refused_code(media_server.url, {"token": bare})) == "token_invalid"


def test_an_open_socket_is_closed_on_logout_and_the_room_carries_on(app, media_server, make_room):
    room = make_room()
    web = signed_in(app, room.patient_user_id)
    token = web_token(app, web, room.consultation_id)
    patient = MediaClient(media_server.url, lambda: token, reconnection=False)
    doctor = MediaClient(
        media_server.url,
        lambda: media_server.token(room.consultation_id, room.doctor_user_id, "doctor"),
    )
    # A guest has no account and no session: its socket stays as it does today.
    guest = MediaClient(
        media_server.url, lambda: media_server.token(room.consultation_id, None, "guest")
    )

    async def scenario():
        await patient.connect()
        await doctor.connect()
        await guest.connect()
        await asyncio.to_thread(web.get, "/logout/")
        await patient.wait_for(lambda: not patient.sio.connected, timeout=CLOSE_DEADLINE)
        await doctor.wait_for(
            lambda: {p["role"] for p in doctor.participants()} == {"doctor", "guest"}
        )
        sent = await doctor.call("chat.send", {"client_msg_id": "after", "body": "Вы здесь?"})
        await guest.wait_for(lambda: guest.got("chat.message"))
        connected = doctor.sio.connected and guest.sio.connected
        await doctor.close()
        await guest.close()
        return sent, connected

    sent, connected = run(scenario())
    assert patient.got("error") == [{"error": "session_ended"}]
    assert sent["ok"] and connected
    assert not patient.got("chat.message")


def test_sockets_on_every_process_are_closed(app, redis_url, media_process_factory, make_room):
    """Two media processes over Redis: the patient's tabs on both are closed, the doctor's
    socket (on the second) stays."""
    one = media_process_factory(redis_url=redis_url)
    two = media_process_factory(redis_url=redis_url)
    room = make_room()
    web = signed_in(app, room.patient_user_id)
    token = web_token(app, web, room.consultation_id)
    tab_one = MediaClient(one.url, lambda: token, reconnection=False)
    tab_two = MediaClient(two.url, lambda: token, reconnection=False)
    doctor = MediaClient(
        two.url, lambda: two.token(room.consultation_id, room.doctor_user_id, "doctor")
    )

    async def scenario():
        for c in (tab_one, tab_two, doctor):
            await c.connect()
        await asyncio.to_thread(web.get, "/logout/")
        for tab in (tab_one, tab_two):
            await tab.wait_for(lambda t=tab: not t.sio.connected, timeout=CLOSE_DEADLINE)
        await doctor.wait_for(lambda: [p["role"] for p in doctor.participants()] == ["doctor"])
        sent = await doctor.call("chat.send", {"client_msg_id": "d1", "body": "Остался"})
        await doctor.close()
        return sent

    assert run(scenario())["ok"]
    assert tab_one.got("error") == [{"error": "session_ended"}]
    assert tab_two.got("error") == [{"error": "session_ended"}]
    assert run(refused_code(one.url, {"token": token})) == "session_ended"
