"""Bad input and floods: a malformed event is refused and the socket stays; a flooding client
is cut off while the others in its room carry on."""

from __future__ import annotations

import asyncio

from tests.media_fixtures import MediaClient, run


def patient_client(server, room, **kw) -> MediaClient:
    return MediaClient(
        server.url,
        lambda: server.token(room.consultation_id, room.patient_user_id, "patient"),
        **kw,
    )


def doctor_client(server, room, **kw) -> MediaClient:
    return MediaClient(
        server.url,
        lambda: server.token(room.consultation_id, room.doctor_user_id, "doctor"),
        **kw,
    )


def test_malformed_events_get_bad_request_and_the_socket_stays(app, media_server, make_room):
    room = make_room()
    c = patient_client(media_server, room)
    bad = "bad_request"

    async def scenario():
        await c.connect()
        sio = c.sio
        acks = {
            "string payload": await sio.call("chat.send", "hello", timeout=5),
            "list payload": await sio.call("chat.send", [1, 2], timeout=5),
            "two arguments": await sio.call("chat.send", ({"a": 1}, {"b": 2}), timeout=5),
            "no body": await c.call("chat.send", {"client_msg_id": "1"}),
            "body not text": await c.call("chat.send", {"client_msg_id": "1", "body": 5}),
            "blank body": await c.call("chat.send", {"client_msg_id": "1", "body": "  \n"}),
            "NUL in body": await c.call("chat.send", {"client_msg_id": "1", "body": "a\x00b"}),
            # JSON's "\ud800" escape: a lone surrogate, text no database column takes
            "surrogate body": await c.call("chat.send", {"client_msg_id": "1", "body": "a\ud800"}),
            "surrogate id": await c.call("chat.send", {"client_msg_id": "\udc00", "body": "a"}),
            "long id": await c.call("chat.send", {"client_msg_id": "x" * 65, "body": "a"}),
            "id not text": await c.call("chat.send", {"client_msg_id": 7, "body": "a"}),
            "read not int": await c.call("chat.read", {"up_to": "5"}),
            "read bool": await c.call("chat.read", {"up_to": True}),
            "read negative": await c.call("chat.read", {"up_to": -1}),
            "admit no sid": await c.call("room.admit", {}),
            "signal kind": await c.call("signal", {"to": "x", "kind": "hack", "pc": "p"}),
            "signal big sdp": await c.call(
                "signal", {"to": "x", "kind": "offer", "pc": "p", "sdp": "v" * 150_000}
            ),
            "signal candidate": await c.call(
                "signal", {"to": "x", "kind": "candidate", "pc": "p", "candidate": "str"}
            ),
            "unknown event": await c.call("chat.delete", {"id": 1}),
        }
        too_long = await c.call("chat.send", {"client_msg_id": "2", "body": "я" * 2001})
        still = await c.call("chat.send", {"client_msg_id": "3", "body": "я" * 2000})
        connected = c.sio.connected
        await c.close()
        return acks, too_long, still, connected

    acks, too_long, still, connected = run(scenario())
    assert {k: v for k, v in acks.items() if v != {"ok": False, "error": bad}} == {}
    assert too_long == {"ok": False, "error": "too_long"}
    assert still["ok"] is True and len(still["message"]["body"]) == 2000
    assert connected


def test_oversized_packet_closes_only_that_connection(media_server, make_room):
    room = make_room()
    big = patient_client(media_server, room, reconnection=False)
    doctor = doctor_client(media_server, room)

    async def scenario():
        await big.connect()
        await doctor.connect()
        await big.sio.emit("chat.send", {"client_msg_id": "big", "body": "x" * 400_000})
        for _ in range(50):
            if not big.sio.connected:
                break
            await asyncio.sleep(0.1)
        dropped = not big.sio.connected
        ok = await doctor.call("chat.send", {"client_msg_id": "d", "body": "still here"})
        await doctor.close()
        return dropped, ok

    dropped, ok = run(scenario())
    assert dropped
    assert ok["ok"] is True


def test_chat_rate_limit_per_connection(media_server, make_room):
    room = make_room()
    c = patient_client(media_server, room)
    other = doctor_client(media_server, room)

    async def scenario():
        await c.connect()
        await other.connect()
        acks = [
            await c.call("chat.send", {"client_msg_id": f"r{i}", "body": "spam"}) for i in range(7)
        ]
        # The limit is per connection: the doctor still writes.
        doc = await other.call("chat.send", {"client_msg_id": "d", "body": "ok"})
        await asyncio.sleep(1.1)  # one token back per second
        later = await c.call("chat.send", {"client_msg_id": "r-late", "body": "later"})
        await c.close()
        await other.close()
        return acks, doc, later

    acks, doc, later = run(scenario())
    assert [a["ok"] for a in acks] == [True] * 5 + [False] * 2
    assert acks[5] == {"ok": False, "error": "rate_limited"}
    assert doc["ok"] is True
    assert later["ok"] is True


def test_flooding_client_is_cut_off_and_the_room_carries_on(media_server, make_room):
    room = make_room()
    flooder = patient_client(media_server, room, reconnection=False)
    patient = patient_client(media_server, room)
    doctor = doctor_client(media_server, room)

    async def scenario():
        for c in (flooder, patient, doctor):
            await c.connect()
        for i in range(120):
            if not flooder.sio.connected:
                break
            await flooder.sio.emit("chat.read", {"up_to": i})
        await flooder.wait_for(lambda: flooder.got("error"))
        for _ in range(50):
            if not flooder.sio.connected:
                break
            await asyncio.sleep(0.1)
        ack = await doctor.call("chat.send", {"client_msg_id": "after", "body": "после"})
        await patient.wait_for(lambda: patient.got("chat.message"))
        connected = flooder.sio.connected
        await patient.close()
        await doctor.close()
        return ack, connected

    ack, connected = run(scenario())
    assert flooder.got("error") == [{"error": "rate_limited"}]
    assert not connected
    assert ack["ok"] is True
    assert [m["body"] for m in patient.got("chat.message")] == ["после"]
