"""Who may join: the token decides the room; everything else is refused with a code."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import jwt

from tests.media_fixtures import MediaClient, refused_code, run


def test_patient_joins_own_room_and_gets_joined_then_history(media_server, make_room):
    room = make_room()

    async def scenario():
        c = MediaClient(
            media_server.url,
            lambda: media_server.token(room.consultation_id, room.patient_user_id, "patient"),
        )
        await c.connect()
        order = [e for e in c.events if e in ("joined", "chat.history")]
        joined = c.got("joined")[0]
        await c.close()
        return order, joined

    order, joined = run(scenario())
    assert order == ["joined", "chat.history"]
    assert joined["role"] == "patient"
    assert joined["user_id"] == room.patient_user_id
    assert [p["sid"] for p in joined["participants"]] == [joined["sid"]]
    assert joined["participants"][0]["state"] == "present"
    assert joined["ice_servers"] == []


def test_missing_token_is_refused(media_server):
    assert run(refused_code(media_server.url, {})) == "token_missing"
    assert run(refused_code(media_server.url, None)) == "token_missing"


def test_expired_token_is_refused(media_server, make_room):
    room = make_room()
    old = datetime.now(UTC) - timedelta(minutes=10)
    token = media_server.token(room.consultation_id, room.patient_user_id, "patient", now=old)
    assert run(refused_code(media_server.url, {"token": token})) == "token_expired"


def test_forged_token_is_refused(media_server, make_room):
    room = make_room()
    good = media_server.token(room.consultation_id, room.patient_user_id, "patient")
    claims = jwt.decode(good, options={"verify_signature": False})
    forged = jwt.encode(
        claims, "not-the-key-but-long-enough-for-hs256-0123456789", algorithm="HS256"
    )
    assert run(refused_code(media_server.url, {"token": forged})) == "token_invalid"
    # A doctor's role written into a patient's token breaks the signature too.
    header, _payload, sig = good.split(".")
    claims["role"] = "doctor"
    tampered = jwt.encode(claims, "x" * 40, algorithm="HS256").split(".")[1]
    assert run(refused_code(media_server.url, {"token": f"{header}.{tampered}.{sig}"})) == (
        "token_invalid"
    )


def test_token_naming_another_consultation_is_refused(media_server, make_room):
    """cid and cpub signed together must name the same consultation; a token for a
    consultation that does not exist is refused as well."""
    a, b = make_room(), make_room()
    with media_server.app.app_context():
        from app.extensions import db
        from models import Consultation

        b_public = db.session.get(Consultation, b.consultation_id).public_id
    mixed = media_server.token(a.consultation_id, a.patient_user_id, "patient", public_id=b_public)
    assert run(refused_code(media_server.url, {"token": mixed})) == "token_invalid"
    ghost = media_server.token(
        a.consultation_id, a.patient_user_id, "patient", public_id=uuid.uuid4()
    )
    assert run(refused_code(media_server.url, {"token": ghost})) == "token_invalid"


def test_foreign_or_missing_origin_is_refused(media_server, make_room):
    room = make_room()

    def auth():
        return {"token": media_server.token(room.consultation_id, room.patient_user_id, "patient")}

    # engine.io turns a foreign Origin away at the HTTP handshake, before socket.io.
    assert run(refused_code(media_server.url, auth(), origin="http://evil.example")) == (
        "http_refused"
    )
    assert run(refused_code(media_server.url, auth(), origin=None)) == "origin_forbidden"
    # The same token from the allowed origin works: the refusals above were about the origin.
    c = MediaClient(
        media_server.url,
        lambda: media_server.token(room.consultation_id, room.patient_user_id, "patient"),
    )

    async def ok():
        await c.connect()
        await c.close()

    run(ok())


def test_browser_origin_of_a_local_live_server_is_accepted(media_server, make_room):
    """The session fixture serves the browser test: its live server's origin is accepted."""
    room = make_room()
    c = MediaClient(
        media_server.url,
        lambda: media_server.token(room.consultation_id, room.doctor_user_id, "doctor"),
        origin="http://127.0.0.1:54321",
    )

    async def scenario():
        await c.connect()
        await c.close()

    run(scenario())


def test_healthz(media_server):
    import urllib.request

    with urllib.request.urlopen(f"{media_server.url}/healthz", timeout=5) as resp:  # noqa: S310
        assert resp.status == 200
