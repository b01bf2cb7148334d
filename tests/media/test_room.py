"""Waiting room, admission, re-admission after a drop, signalling and room isolation."""

from __future__ import annotations

import asyncio
import threading
import uuid

import pytest

from tests.media.conftest import set_status
from tests.media_fixtures import MediaClient, run


def clients(server, room, *, media: bool = True):
    patient = MediaClient(
        server.url,
        lambda: server.token(room.consultation_id, room.patient_user_id, "patient", media=media),
    )
    doctor = MediaClient(
        server.url, lambda: server.token(room.consultation_id, room.doctor_user_id, "doctor")
    )
    return patient, doctor


def states(client) -> dict[str, str]:
    last = client.participants()
    return {p["sid"]: p["state"] for p in last}


def test_patient_waits_until_the_doctor_admits(media_server, make_room):
    room = make_room(kind="centre_request", status="scheduled")
    patient, doctor = clients(media_server, room)

    async def scenario():
        await doctor.connect()
        await patient.connect()
        d = await doctor.call("room.enter", {})
        p = await patient.call("room.enter", {})
        await doctor.wait_for(lambda: states(doctor).get(patient.sid) == "waiting")
        assert not patient.got("room.admitted")
        # The patient cannot admit itself (nor anyone).
        self_admit = await patient.call("room.admit", {"sid": patient.sid})
        admit = await doctor.call("room.admit", {"sid": patient.sid})
        await patient.wait_for(lambda: patient.got("room.admitted"))
        await doctor.wait_for(lambda: states(doctor).get(patient.sid) == "admitted")
        again = await doctor.call("room.admit", {"sid": patient.sid})  # no longer waiting
        await patient.close()
        await doctor.close()
        return d, p, self_admit, admit, again

    d, p, self_admit, admit, again = run(scenario())
    assert d == {"ok": True, "state": "admitted"}
    assert p == {"ok": True, "state": "waiting"}
    assert self_admit == {"ok": False, "error": "forbidden"}
    assert admit == {"ok": True}
    assert again == {"ok": False, "error": "not_found"}


def test_room_enter_needs_the_media_claim(media_server, make_room):
    room = make_room()
    patient, _ = clients(media_server, room, media=False)

    async def scenario():
        await patient.connect()
        ack = await patient.call("room.enter", {})
        await patient.close()
        return ack

    assert run(scenario()) == {"ok": False, "error": "room_closed"}


@pytest.mark.parametrize("status", ["completed", "needs_documents"])
def test_room_enter_follows_the_room_statuses_of_models(app, media_server, make_room, status):
    """The token's media claim was granted while the consultation was scheduled; at room.enter
    the server asks the database, with the web app's rule (models.ROOM_STATUSES): a status out
    of it, closed or not, means the room is closed."""
    room = make_room(kind="centre_request", status="scheduled")
    patient, _ = clients(media_server, room)

    async def scenario():
        await patient.connect()
        set_status(app, room.consultation_id, status)
        ack = await patient.call("room.enter", {})
        await patient.close()
        return ack

    assert run(scenario()) == {"ok": False, "error": "room_closed"}


def test_admitted_patient_comes_back_admitted_after_a_drop(media_server, make_room):
    room = make_room()
    patient, doctor = clients(media_server, room)

    async def scenario():
        await doctor.connect()
        await doctor.call("room.enter", {})
        await patient.connect()
        await patient.call("room.enter", {})
        await doctor.call("room.admit", {"sid": patient.sid})
        await patient.wait_for(lambda: patient.got("room.admitted"))
        await patient.close()  # the network drops
        back = MediaClient(patient.url, patient.token_fn)
        await back.connect()
        again = await back.call("room.enter", {})
        await back.wait_for(lambda: back.got("room.admitted"))
        # Hanging up on purpose is different: entering again means waiting again.
        await back.call("room.leave", {})
        third = await back.call("room.enter", {})
        await back.close()
        await doctor.close()
        return again, third

    again, third = run(scenario())
    assert again == {"ok": True, "state": "admitted"}
    assert third == {"ok": True, "state": "waiting"}


def test_signal_relays_only_between_admitted_participants(media_server, make_room):
    room = make_room()
    patient, doctor = clients(media_server, room)

    async def scenario():
        await doctor.connect()
        await patient.connect()
        await doctor.call("room.enter", {})
        offer = {"to": patient.sid, "kind": "offer", "pc": "pc1", "sdp": "v=0\r\n"}
        before = await doctor.call("signal", offer)  # patient not admitted yet
        await patient.call("room.enter", {})
        from_waiting = await patient.call(
            "signal", {"to": doctor.sid, "kind": "offer", "pc": "x", "sdp": "v=0"}
        )
        await doctor.call("room.admit", {"sid": patient.sid})
        after = await doctor.call("signal", offer)
        await patient.wait_for(lambda: patient.got("signal"))
        cand = {"candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host", "sdpMid": "0"}
        answer = await patient.call(
            "signal", {"to": doctor.sid, "kind": "candidate", "pc": "pc1", "candidate": cand}
        )
        await doctor.wait_for(lambda: doctor.got("signal"))
        await patient.close()
        await doctor.close()
        return before, from_waiting, after, answer

    before, from_waiting, after, answer = run(scenario())
    assert before == {"ok": False, "error": "not_found"}
    assert from_waiting == {"ok": False, "error": "forbidden"}
    assert after == {"ok": True}
    assert answer == {"ok": True}
    assert patient.got("signal") == [
        {"from": doctor.got("joined")[0]["sid"], "kind": "offer", "pc": "pc1", "sdp": "v=0\r\n"}
    ]
    assert doctor.got("signal")[0]["candidate"]["sdpMid"] == "0"


def test_rooms_are_isolated(media_server, make_room):
    """A message in consultation A never reaches B; A's admitted doctor cannot signal B's."""
    a, b = make_room(), make_room()
    pa, da = clients(media_server, a)
    pb, db_ = clients(media_server, b)

    async def scenario():
        for c in (pa, da, pb, db_):
            await c.connect()
        for d, p in ((da, pa), (db_, pb)):
            await d.call("room.enter", {})
            await p.call("room.enter", {})
            await d.call("room.admit", {"sid": p.sid})
        cross_admit = await da.call("room.admit", {"sid": pb.sid})
        cross_signal = await pa.call(
            "signal", {"to": db_.sid, "kind": "offer", "pc": "p", "sdp": "v=0"}
        )
        await pa.call("chat.send", {"client_msg_id": "a1", "body": "only A"})
        await da.wait_for(lambda: da.got("chat.message"))
        await pb.quiet()
        for c in (pa, da, pb, db_):
            await c.close()
        return cross_admit, cross_signal

    cross_admit, cross_signal = run(scenario())
    assert cross_admit == {"ok": False, "error": "not_found"}
    assert cross_signal == {"ok": False, "error": "not_found"}
    assert pb.got("chat.message") == [] and db_.got("chat.message") == []
    assert db_.got("signal") == []
    # B's participants never even see A's people.
    seen_in_b = {p["sid"] for s in db_.got("room.state") for p in s["participants"]}
    assert seen_in_b <= {pb.sid, db_.sid}


def test_doctor_ends_the_room(media_server, make_room):
    room = make_room()
    patient, doctor = clients(media_server, room)

    async def scenario():
        await doctor.connect()
        await patient.connect()
        await doctor.call("room.enter", {})
        await patient.call("room.enter", {})
        await doctor.call("room.admit", {"sid": patient.sid})
        by_patient = await patient.call("room.end", {})
        ended = await doctor.call("room.end", {})
        await patient.wait_for(lambda: patient.got("room.ended"))
        await doctor.wait_for(lambda: set(states(doctor).values()) == {"present"})
        # After the end, the patient is not let back in automatically.
        again = await patient.call("room.enter", {})
        await patient.close()
        await doctor.close()
        return by_patient, ended, again

    by_patient, ended, again = run(scenario())
    assert by_patient == {"ok": False, "error": "forbidden"}
    assert ended == {"ok": True}
    assert again == {"ok": True, "state": "waiting"}


@pytest.mark.once  # the subject is Redis's delivery order; the database only stages the room
def test_a_late_list_from_another_process_does_not_undo_a_newer_one(
    redis_url, media_server_factory, make_room
):
    """Process one's list reaches the doctor on process two through Redis, after process two's
    own newer list: the version tells the doctor's client which one is current."""
    one = media_server_factory(MEDIA_REDIS_URL=redis_url)
    two = media_server_factory(MEDIA_REDIS_URL=redis_url)
    room = make_room()
    held, release = threading.Event(), threading.Event()
    emit = one.server.sio.emit

    async def late_room_state(event, data=None, **kw):
        if event == "room.state" and not held.is_set():
            held.set()  # read, not yet sent
            await asyncio.to_thread(release.wait, 10)
        return await emit(event, data, **kw)

    one.server.sio.emit = late_room_state

    def token(server):
        return lambda: server.token(room.consultation_id, room.patient_user_id, "patient")

    doctor = MediaClient(
        two.url, lambda: two.token(room.consultation_id, room.doctor_user_id, "doctor")
    )
    patient, second_tab = MediaClient(one.url, token(one)), MediaClient(two.url, token(two))

    async def scenario():
        await doctor.connect()
        await patient.connect()
        await asyncio.to_thread(held.wait, 10)
        await second_tab.connect()
        everyone = {doctor.sid, patient.sid, second_tab.sid}
        await doctor.wait_for(lambda: {p["sid"] for p in doctor.participants()} == everyone)
        heard = len(doctor.got("room.state"))
        release.set()
        await doctor.wait_for(lambda: len(doctor.got("room.state")) > heard)
        for c in (doctor, patient, second_tab):
            await c.close()
        return everyone

    everyone = run(scenario())
    late, newer = doctor.got("room.state")[-1], doctor.got("room.state")[-2]
    # The late list (without the second tab) did arrive last, numbered below the newer one.
    assert {p["sid"] for p in late["participants"]} == everyone - {second_tab.sid}
    assert late["version"] < newer["version"]
    assert {p["sid"] for p in doctor.participants()} == everyone


@pytest.mark.no_db
def test_room_state_numbers_keep_rising_after_the_counter_expires(redis_url):
    """The version counter expires with an idle room (ROOM_TTL_SECONDS); a page that stayed
    connected still holds the last number, so a new counter starts from the clock, above it."""
    from media_server.rooms import RedisRooms

    async def scenario() -> list[int]:
        prefix = f"oblako:test:{uuid.uuid4().hex}:"
        rooms, counter = RedisRooms(redis_url, prefix=prefix), f"{prefix}room:r:version"
        try:
            heard = [(await rooms.snapshot("r"))[0] for _ in range(3)]
            await rooms.redis.delete(counter)  # as if it expired
            await asyncio.sleep(0.01)
            heard.append((await rooms.snapshot("r"))[0])
            await rooms.redis.delete(counter)
            return heard
        finally:
            await rooms.close()

    heard = run(scenario())
    assert heard == sorted(set(heard)), heard
