"""`python -m media_server` as real processes: two of them joined through Redis, and a crash
and restart in the middle of a conversation."""

from __future__ import annotations

import asyncio
import signal

import pytest

from tests.media.conftest import chat_rows
from tests.media_fixtures import MediaClient, run


def test_two_processes_share_rooms_through_redis(app, redis_url, media_process_factory, make_room):
    one = media_process_factory(redis_url=redis_url)
    two = media_process_factory(redis_url=redis_url)
    room = make_room()
    other = make_room()
    patient = MediaClient(
        one.url, lambda: one.token(room.consultation_id, room.patient_user_id, "patient")
    )
    doctor = MediaClient(
        two.url, lambda: two.token(room.consultation_id, room.doctor_user_id, "doctor")
    )
    stranger = MediaClient(
        two.url, lambda: two.token(other.consultation_id, other.patient_user_id, "patient")
    )

    async def scenario():
        await patient.connect()
        await doctor.connect()
        await stranger.connect()
        # Presence crosses processes: the doctor (on two) sees the patient (on one).
        assert {p["sid"] for p in doctor.got("joined")[0]["participants"]} == {
            patient.sid,
            doctor.sid,
        }
        sent = await patient.call("chat.send", {"client_msg_id": "x1", "body": "через Redis"})
        await doctor.wait_for(lambda: doctor.got("chat.message"))
        # The waiting room and signalling across processes.
        await doctor.call("room.enter", {})
        await patient.call("room.enter", {})
        admit = await doctor.call("room.admit", {"sid": patient.sid})
        await patient.wait_for(lambda: patient.got("room.admitted"))
        sig = await doctor.call(
            "signal", {"to": patient.sid, "kind": "offer", "pc": "p1", "sdp": "v=0"}
        )
        await patient.wait_for(lambda: patient.got("signal"))
        # A participant of another room on the same process cannot be reached.
        cross = await doctor.call(
            "signal", {"to": stranger.sid, "kind": "offer", "pc": "p1", "sdp": "v=0"}
        )
        await stranger.quiet()
        for c in (patient, doctor, stranger):
            await c.close()
        return sent, admit, sig, cross

    sent, admit, sig, cross = run(scenario())
    assert doctor.got("chat.message") == [sent["message"]]
    assert admit == {"ok": True} and sig == {"ok": True}
    assert patient.got("signal")[0]["from"] == doctor.got("joined")[0]["sid"]
    assert cross == {"ok": False, "error": "not_found"}
    assert stranger.got("chat.message") == [] and stranger.got("signal") == []
    assert len(chat_rows(app, room.consultation_id)) == 1


def test_restart_during_a_session_loses_and_doubles_nothing(app, media_process_factory, make_room):
    server = media_process_factory()
    room = make_room()
    patient = MediaClient(
        server.url, lambda: server.token(room.consultation_id, room.patient_user_id, "patient")
    )
    doctor = MediaClient(
        server.url, lambda: server.token(room.consultation_id, room.doctor_user_id, "doctor")
    )

    def doctor_seen() -> list[dict]:
        seen = list(doctor.got("chat.message"))
        for h in doctor.got("chat.history"):
            seen.extend(h["messages"])
        return seen

    async def scenario():
        await patient.connect()
        await doctor.connect()
        await patient.call("chat.send", {"client_msg_id": "m1", "body": "first"})
        await doctor.wait_for(lambda: len(doctor_seen()) == 1)
        # m2 leaves without waiting for its ack, and the server dies right then: the page
        # cannot know whether it was stored, so it resends it after the reconnect.
        await patient.sio.emit("chat.send", {"client_msg_id": "m2", "body": "in flight"})
        await asyncio.sleep(0.01)
        await asyncio.to_thread(server.kill)
        await asyncio.sleep(0.3)
        await asyncio.to_thread(server.start)  # the same port
        await patient.wait_for(lambda: len(patient.got("joined")) == 2, timeout=20)
        await doctor.wait_for(lambda: len(doctor.got("joined")) == 2, timeout=20)
        resent = await patient.call("chat.send", {"client_msg_id": "m2", "body": "in flight"})
        third = await patient.call("chat.send", {"client_msg_id": "m3", "body": "after"})
        await doctor.wait_for(lambda: {m["client_msg_id"] for m in doctor_seen()} >= {"m3"})
        await doctor.quiet(0.5)
        await patient.close()
        await doctor.close()
        return resent, third

    resent, third = run(scenario(), timeout=90)
    assert resent["ok"] and third["ok"]
    rows = chat_rows(app, room.consultation_id)
    assert [r[1] for r in rows] == ["m1", "m2", "m3"]
    ids = [m["id"] for m in doctor_seen()]
    assert sorted(ids) == [r[0] for r in rows]  # every message once: none lost, none doubled
    # The reconnect's history started after what the doctor had already seen.
    assert "m1" not in {m["client_msg_id"] for m in doctor.got("chat.history")[1]["messages"]}


def test_sigterm_stops_the_process_cleanly(media_process_factory):
    server = media_process_factory()
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(15) == 0


@pytest.mark.parametrize("with_redis", [False, True], ids=["alone", "redis"])
def test_an_admitted_patient_is_admitted_again_after_a_media_server_restart(
    app, request, media_process_factory, make_room, with_redis
):
    """Issue 18, item 5: the media server dies mid-call and comes back; the pages reconnect and
    the patient is let straight back into the call, not into the waiting room. Alone (the
    embedded default) the marks are in the database, with Redis in Redis: never in memory."""
    redis_url = request.getfixturevalue("redis_url") if with_redis else ""
    server = media_process_factory(redis_url=redis_url)
    room = make_room()
    patient = MediaClient(
        server.url, lambda: server.token(room.consultation_id, room.patient_user_id, "patient")
    )
    doctor = MediaClient(
        server.url, lambda: server.token(room.consultation_id, room.doctor_user_id, "doctor")
    )

    async def scenario():
        await patient.connect()
        await doctor.connect()
        await doctor.call("room.enter", {})
        first = await patient.call("room.enter", {})
        await doctor.call("room.admit", {"sid": patient.sid})
        await patient.wait_for(lambda: patient.got("room.admitted"))
        await asyncio.to_thread(server.kill)
        await asyncio.sleep(0.3)
        await asyncio.to_thread(server.start)  # the same port
        await patient.wait_for(lambda: len(patient.got("joined")) == 2, timeout=30)
        await doctor.wait_for(lambda: len(doctor.got("joined")) == 2, timeout=30)
        again = await patient.call("room.enter", {})
        sent = await patient.call("chat.send", {"client_msg_id": "back", "body": "снова тут"})
        await doctor.wait_for(lambda: doctor.got("chat.message"))
        await patient.close()
        await doctor.close()
        return first, again, sent

    first, again, sent = run(scenario(), timeout=120)
    assert first == {"ok": True, "state": "waiting"}
    assert again == {"ok": True, "state": "admitted"}
    assert sent["ok"] is True
