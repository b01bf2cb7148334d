"""Chat: stored once per client message id, in order, caught up after a reconnect, closed by
the consultation's status in the database."""

from __future__ import annotations

import asyncio

import pytest

from tests.media.conftest import chat_rows, make_invite, set_status
from tests.media_fixtures import MediaClient, refused_code, run


def pair(server, room, *, patient_chat: bool = True):
    patient = MediaClient(
        server.url,
        lambda: server.token(
            room.consultation_id, room.patient_user_id, "patient", chat=patient_chat
        ),
    )
    doctor = MediaClient(
        server.url, lambda: server.token(room.consultation_id, room.doctor_user_id, "doctor")
    )
    return patient, doctor


def test_message_reaches_the_room_and_is_stored(app, media_server, make_room):
    room = make_room()
    patient, doctor = pair(media_server, room)

    async def scenario():
        await patient.connect()
        await doctor.connect()
        ack = await patient.call("chat.send", {"client_msg_id": "m-1", "body": "<b>Болит</b>"})
        await doctor.wait_for(lambda: doctor.got("chat.message"))
        await patient.close()
        await doctor.close()
        return ack

    ack = run(scenario())
    assert ack["ok"] is True
    msg = ack["message"]
    assert msg["body"] == "<b>Болит</b>"  # stored and relayed as plain text, untouched
    assert msg["author_id"] == room.patient_user_id
    assert msg["author_role"] == "patient"
    assert msg["created_at"].endswith("Z")
    assert doctor.got("chat.message") == [msg]
    assert chat_rows(app, room.consultation_id) == [(msg["id"], "m-1", "<b>Болит</b>")]


def test_resend_with_same_client_msg_id_is_stored_and_broadcast_once(app, media_server, make_room):
    room = make_room()
    patient, doctor = pair(media_server, room)

    async def scenario():
        await patient.connect()
        await doctor.connect()
        first = await patient.call("chat.send", {"client_msg_id": "dup", "body": "один"})
        again = await patient.call("chat.send", {"client_msg_id": "dup", "body": "один"})
        await doctor.wait_for(lambda: doctor.got("chat.message"))
        await doctor.quiet()
        await patient.close()
        await doctor.close()
        return first, again

    first, again = run(scenario())
    assert first["ok"] and again["ok"]
    assert again["message"] == first["message"]
    assert len(doctor.got("chat.message")) == 1
    assert len(chat_rows(app, room.consultation_id)) == 1


def test_messages_arrive_in_order(media_server, make_room):
    room = make_room()
    patient, doctor = pair(media_server, room)

    async def scenario():
        await patient.connect()
        await doctor.connect()
        # Five at once (the burst the limit allows), not waiting for acks in between.
        acks = await asyncio.gather(
            *(
                patient.call("chat.send", {"client_msg_id": f"o-{i}", "body": f"#{i}"})
                for i in range(5)
            )
        )
        await doctor.wait_for(lambda: len(doctor.got("chat.message")) == 5)
        await patient.close()
        await doctor.close()
        return acks

    acks = run(scenario())
    assert all(a["ok"] for a in acks)
    got = doctor.got("chat.message")
    assert [m["body"] for m in got] == [f"#{i}" for i in range(5)]
    assert [m["id"] for m in got] == sorted(m["id"] for m in got)


def test_reconnect_catches_up_from_last_seen(media_server, make_room):
    room = make_room()
    patient, doctor = pair(media_server, room)

    async def scenario():
        await patient.connect()
        await doctor.connect()
        await patient.call("chat.send", {"client_msg_id": "a", "body": "before"})
        await doctor.wait_for(lambda: doctor.got("chat.message"))
        await doctor.close()
        for i in range(3):
            await patient.call("chat.send", {"client_msg_id": f"b{i}", "body": f"missed {i}"})
        await doctor.connect()  # auth carries last_seen = the id of "before"
        history = doctor.got("chat.history")
        await patient.close()
        await doctor.close()
        return history

    history = run(scenario())
    assert history[0]["messages"] == []  # first connect: nothing yet
    assert [m["body"] for m in history[1]["messages"]] == ["missed 0", "missed 1", "missed 2"]


def test_history_on_first_connect_has_everything_oldest_first(media_server, make_room):
    room = make_room()
    patient, doctor = pair(media_server, room)

    async def scenario():
        await patient.connect()
        for i in range(3):
            await patient.call("chat.send", {"client_msg_id": f"h{i}", "body": f"m{i}"})
        await doctor.connect()
        await patient.close()
        await doctor.close()

    run(scenario())
    messages = doctor.got("chat.history")[0]["messages"]
    assert [m["body"] for m in messages] == ["m0", "m1", "m2"]
    assert {m["author_role"] for m in messages} == {"patient"}


@pytest.mark.parametrize(
    ("kind", "status"),
    [
        ("duty", "completed"),
        ("duty", "cancelled"),
        ("centre_request", "scheduled"),  # a centre application chats only once started
        ("centre_request", "requested"),
        ("referral", "scheduled"),
    ],
)
def test_chat_closed_by_consultation_status(app, media_server, make_room, kind, status):
    room = make_room(kind=kind, status=status)
    patient, _ = pair(media_server, room)

    async def scenario():
        await patient.connect()
        ack = await patient.call("chat.send", {"client_msg_id": "x", "body": "hello"})
        await patient.close()
        return ack

    assert run(scenario()) == {"ok": False, "error": "chat_closed"}
    assert chat_rows(app, room.consultation_id) == []


def test_duty_booking_chats_before_the_start_and_stops_when_completed(app, media_server, make_room):
    """The database, not the token, decides: completing the consultation closes the chat of a
    socket that connected (with a chat-enabled token) while it was open."""
    room = make_room(kind="duty", status="scheduled")
    patient, _ = pair(media_server, room)

    async def scenario():
        await patient.connect()
        before = await patient.call("chat.send", {"client_msg_id": "1", "body": "заранее"})
        set_status(app, room.consultation_id, "completed")
        after = await patient.call("chat.send", {"client_msg_id": "2", "body": "после"})
        await patient.close()
        return before, after

    before, after = run(scenario())
    assert before["ok"] is True
    assert after == {"ok": False, "error": "chat_closed"}
    assert [r[2] for r in chat_rows(app, room.consultation_id)] == ["заранее"]


def test_a_socket_joined_before_the_start_writes_once_the_doctor_starts(
    app, media_server, make_room
):
    """The token's `chat` is a snapshot taken at connect (closed: a centre consultation not
    started yet); the database decides at each send. Once the doctor starts, the same socket
    writes without reconnecting, and `consultation.refresh` tells the whole room so."""
    room = make_room(kind="centre_request", status="scheduled")
    patient, doctor = pair(media_server, room, patient_chat=False)

    async def scenario():
        await patient.connect()
        await doctor.connect()
        before = await patient.call("chat.send", {"client_msg_id": "1", "body": "рано"})
        refused = await patient.call("consultation.refresh", {})
        set_status(app, room.consultation_id, "in_progress")
        refreshed = await doctor.call("consultation.refresh", {})
        await patient.wait_for(lambda: patient.got("consultation.state"))
        after = await patient.call("chat.send", {"client_msg_id": "1", "body": "рано"})
        await doctor.wait_for(lambda: doctor.got("chat.message"))
        await patient.close()
        await doctor.close()
        return before, refused, refreshed, after

    before, refused, refreshed, after = run(scenario())
    assert before == {"ok": False, "error": "chat_closed"}
    assert refused == {"ok": False, "error": "forbidden"}  # only the doctor's page asks
    assert refreshed == {"ok": True, "status": "in_progress", "chat": True, "guest_chat": True}
    assert patient.got("consultation.state") == [
        {"status": "in_progress", "chat": True, "guest_chat": True}
    ]
    assert after["ok"] is True
    assert [r[2] for r in chat_rows(app, room.consultation_id)] == ["рано"]


def test_consultation_state_says_a_duty_booking_is_open_to_the_patient_only(
    app, media_server, make_room
):
    room = make_room(kind="duty", status="scheduled")
    patient, doctor = pair(media_server, room)

    async def scenario():
        await patient.connect()
        await doctor.connect()
        ack = await doctor.call("consultation.refresh", {})
        await patient.close()
        await doctor.close()
        return ack

    assert run(scenario()) == {"ok": True, "status": "scheduled", "chat": True, "guest_chat": False}


def guest_client(server, room, invite_id: int, *, name: str = "Анна Переводчикова"):
    return MediaClient(
        server.url,
        lambda: server.token(
            room.consultation_id, None, "guest", invite_id=invite_id, name=name, chat=True
        ),
    )


async def admit(doctor: MediaClient, client: MediaClient) -> None:
    await doctor.call("room.enter", {})
    assert (await client.call("room.enter", {}))["state"] == "waiting"
    await doctor.wait_for(
        lambda: any(
            p["sid"] == client.sid and p["state"] == "waiting" for p in doctor.participants()
        )
    )
    assert await doctor.call("room.admit", {"sid": client.sid}) == {"ok": True}
    await client.wait_for(lambda: client.got("room.admitted"))


def test_admitted_guest_writes_under_the_invites_name(app, media_server, make_room):
    from sqlalchemy import select

    from app.extensions import db
    from models import ChatMessage

    room = make_room(kind="centre_request", status="in_progress")
    invite = make_invite(app, room.consultation_id, room.doctor_user_id)
    guest = guest_client(media_server, room, invite)
    patient, doctor = pair(media_server, room)
    late = MediaClient(
        media_server.url,
        lambda: media_server.token(room.consultation_id, room.patient_user_id, "patient"),
    )

    async def scenario():
        await guest.connect()
        await patient.connect()
        await doctor.connect()
        waiting = await guest.call("chat.send", {"client_msg_id": "g-0", "body": "Можно?"})
        await admit(doctor, guest)
        first = await patient.call("chat.send", {"client_msg_id": "p-1", "body": "Здравствуйте"})
        ack = await guest.call("chat.send", {"client_msg_id": "g-1", "body": "Перевожу: <i>да</i>"})
        again = await guest.call(
            "chat.send", {"client_msg_id": "g-1", "body": "Перевожу: <i>да</i>"}
        )
        last = await doctor.call("chat.send", {"client_msg_id": "d-1", "body": "Продолжим"})
        await patient.wait_for(lambda: len(patient.got("chat.message")) == 3)
        await doctor.wait_for(lambda: len(doctor.got("chat.message")) == 3)
        await patient.quiet()
        await late.connect()  # a page opened later gets the guest's line in the history
        for c in (guest, patient, doctor, late):
            await c.close()
        return waiting, first, ack, again, last

    waiting, first, ack, again, last = run(scenario())
    assert waiting == {"ok": False, "error": "not_admitted"}
    assert ack["ok"] and again == ack  # a resend is stored and broadcast once
    msg = ack["message"]
    assert msg["author_id"] is None
    assert msg["author_role"] == "guest"
    assert msg["author_name"] == "Анна Переводчикова"
    assert msg["body"] == "Перевожу: <i>да</i>"
    assert first["message"]["id"] < msg["id"] < last["message"]["id"]
    assert [m["body"] for m in patient.got("chat.message")] == [
        "Здравствуйте",
        "Перевожу: <i>да</i>",
        "Продолжим",
    ]
    assert msg in doctor.got("chat.message")
    history = late.got("chat.history")[0]["messages"]
    assert [(m["author_role"], m["body"]) for m in history] == [
        ("patient", "Здравствуйте"),
        ("guest", "Перевожу: <i>да</i>"),
        ("doctor", "Продолжим"),
    ]
    assert history[1] == msg
    with app.app_context():
        rows = db.session.execute(
            select(ChatMessage.author_id, ChatMessage.invite_id, ChatMessage.body).where(
                ChatMessage.consultation_id == room.consultation_id,
                ChatMessage.invite_id.is_not(None),
            )
        ).all()
    assert [tuple(r) for r in rows] == [(None, invite, "Перевожу: <i>да</i>")]


@pytest.mark.parametrize(
    ("kind", "status"),
    [
        ("duty", "scheduled"),  # a duty booking's patient may write before: a guest may not
        ("centre_request", "scheduled"),
        ("duty", "completed"),
    ],
)
def test_guest_writes_only_during_the_consultation(app, media_server, make_room, kind, status):
    """The token says the guest may write; the database says the consultation is not on."""
    room = make_room(kind=kind, status="in_progress")
    invite = make_invite(app, room.consultation_id, room.doctor_user_id)
    guest = guest_client(media_server, room, invite)
    _, doctor = pair(media_server, room)

    async def scenario():
        await guest.connect()
        await doctor.connect()
        await admit(doctor, guest)
        set_status(app, room.consultation_id, status)
        ack = await guest.call("chat.send", {"client_msg_id": "g", "body": "hello"})
        await guest.close()
        await doctor.close()
        return ack

    assert run(scenario()) == {"ok": False, "error": "chat_closed"}
    assert chat_rows(app, room.consultation_id) == []


def test_guest_of_a_revoked_or_foreign_invite_cannot_write(app, media_server, make_room):
    from app.extensions import db
    from models import MediaInvite, utcnow

    room = make_room(kind="centre_request", status="in_progress")
    other = make_room(kind="centre_request", status="in_progress")
    revoked = make_invite(app, room.consultation_id, room.doctor_user_id)
    foreign = make_invite(app, other.consultation_id, other.doctor_user_id)
    with app.app_context():
        db.session.get(MediaInvite, revoked).revoked_at = utcnow()
        db.session.commit()
    guests = [guest_client(media_server, room, i) for i in (revoked, foreign)]
    _, doctor = pair(media_server, room)

    async def scenario():
        await doctor.connect()
        acks = []
        for guest in guests:
            await guest.connect()
            await admit(doctor, guest)
            acks.append(await guest.call("chat.send", {"client_msg_id": "g", "body": "hi"}))
            await guest.close()
        await doctor.quiet()
        await doctor.close()
        return acks

    assert run(scenario()) == [{"ok": False, "error": "chat_closed"}] * 2
    assert chat_rows(app, room.consultation_id) == []
    assert not doctor.got("chat.message")


def test_patient_of_another_consultation_cannot_write_into_this_one(app, media_server, make_room):
    """The room comes from the token: a patient's message goes to their own consultation only,
    and a token naming this consultation's id with another's public id is refused."""
    room = make_room(kind="centre_request", status="in_progress")
    other = make_room(kind="centre_request", status="in_progress")
    _, doctor = pair(media_server, room)
    stranger = MediaClient(
        media_server.url,
        lambda: media_server.token(other.consultation_id, other.patient_user_id, "patient"),
    )

    async def scenario():
        await doctor.connect()
        await stranger.connect()
        ack = await stranger.call("chat.send", {"client_msg_id": "s", "body": "не туда"})
        await doctor.quiet()
        from app.extensions import db
        from models import Consultation

        with app.app_context():
            other_public = db.session.get(Consultation, other.consultation_id).public_id
        forged = await refused_code(
            media_server.url,
            {
                "token": media_server.token(
                    room.consultation_id,
                    other.patient_user_id,
                    "patient",
                    public_id=other_public,
                )
            },
        )
        await stranger.close()
        await doctor.close()
        return ack, forged

    ack, forged = run(scenario())
    assert ack["ok"]  # stored in the stranger's own consultation
    assert forged == "token_invalid"
    assert not doctor.got("chat.message")
    assert chat_rows(app, room.consultation_id) == []
    assert [r[2] for r in chat_rows(app, other.consultation_id)] == ["не туда"]


def test_guest_without_an_invite_cannot_write(app, media_server, make_room):
    room = make_room()
    guest = MediaClient(
        media_server.url,
        lambda: media_server.token(room.consultation_id, None, "guest", name="Гость"),
    )
    patient, _ = pair(media_server, room)

    async def scenario():
        await guest.connect()
        await patient.connect()
        ack = await guest.call("chat.send", {"client_msg_id": "g", "body": "hi"})
        await patient.call("chat.send", {"client_msg_id": "p", "body": "to all"})
        await guest.wait_for(lambda: guest.got("chat.message"))
        await guest.close()
        await patient.close()
        return ack

    assert run(scenario()) == {"ok": False, "error": "forbidden"}
    assert [m["body"] for m in guest.got("chat.message")] == ["to all"]


def test_read_mark_never_moves_backwards(app, media_server, make_room):
    from sqlalchemy import select

    from app.extensions import db
    from models import ChatRead

    room = make_room()
    patient, doctor = pair(media_server, room)

    async def scenario():
        await patient.connect()
        await doctor.connect()
        ids = []
        for i in range(3):
            ack = await patient.call("chat.send", {"client_msg_id": f"r{i}", "body": str(i)})
            ids.append(ack["message"]["id"])
        up = await doctor.call("chat.read", {"up_to": ids[2]})
        back = await doctor.call("chat.read", {"up_to": ids[0]})
        await patient.close()
        await doctor.close()
        return ids, up, back

    ids, up, back = run(scenario())
    assert up == {"ok": True, "up_to": ids[2]}
    assert back == {"ok": True, "up_to": ids[2]}
    with app.app_context():
        marks = db.session.scalars(
            select(ChatRead.last_read_id).where(ChatRead.user_id == room.doctor_user_id)
        ).all()
    assert marks == [ids[2]]


def test_authors_are_named_as_on_every_page_live_and_in_the_history(app, media_server, make_room):
    """One formatter (models.person_name): «Фамилия Имя Отчество» in a live message and in a
    reconnect's history alike, as the room's title names the person, not the account."""
    from app.extensions import db
    from models import Consultation, Patient

    room = make_room()
    with app.app_context():
        c = db.session.get(Consultation, room.consultation_id)
        full = db.session.get(Patient, c.patient_id).full_name
    patient, doctor = pair(media_server, room)
    late = MediaClient(
        media_server.url,
        lambda: media_server.token(room.consultation_id, room.doctor_user_id, "doctor"),
    )

    async def scenario():
        await patient.connect()
        await doctor.connect()
        ack = await patient.call("chat.send", {"client_msg_id": "n", "body": "Добрый день"})
        await doctor.wait_for(lambda: doctor.got("chat.message"))
        await late.connect()
        for c in (patient, doctor, late):
            await c.close()
        return ack

    ack = run(scenario())
    assert " " in full and len(full.split()) >= 2
    assert ack["message"]["author_name"] == full
    assert doctor.got("chat.message")[0]["author_name"] == full
    history = late.got("chat.history")[0]["messages"]
    assert [m["author_name"] for m in history] == [full]
