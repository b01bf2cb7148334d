"""Chat: stored once per client message id, in order, caught up after a reconnect, closed by
the consultation's status in the database."""

from __future__ import annotations

import asyncio

import pytest

from tests.media.conftest import chat_rows, set_status
from tests.media_fixtures import MediaClient, run


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


def test_token_without_chat_claim_cannot_write(app, media_server, make_room):
    room = make_room()
    patient, _ = pair(media_server, room, patient_chat=False)

    async def scenario():
        await patient.connect()
        ack = await patient.call("chat.send", {"client_msg_id": "1", "body": "hi"})
        await patient.close()
        return ack

    assert run(scenario()) == {"ok": False, "error": "chat_closed"}


def test_guest_reads_but_does_not_write(app, media_server, make_room):
    room = make_room()
    guest = MediaClient(
        media_server.url,
        lambda: media_server.token(room.consultation_id, None, "guest", invite_id=7, name="Гость"),
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
