"""Guest invitations to the consultation room (issue 5): one-time links, revoking (in place
from the room too), expiry, who may invite, and what a guest may write and is shown as."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta

import pytest
from sqlalchemy.exc import IntegrityError

from tests.conftest import csrf_token
from tests.media_web_world import (
    consultation,
    decode,
    make_consultation,
    room_config,
    signed_in,
    stage_world,
    user_id_of_patient,
)

PASSWORD_PAGE = "/account/password/"


@pytest.fixture
def world(app, make_patient, make_center, make_doctor, make_staff):
    """Centres, doctors, staff and patients P and Q: tests/media_web_world.py."""
    return stage_world(app, make_patient, make_center, make_doctor, make_staff)


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
