"""The relay through real socket.io and a real media server: a doctor, a patient and a guest
each get the other two's video (grey levels name the senders), peers close when one leaves or
the room ends, and the relay's rules (admitted only, known sources, payloads) hold."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from datetime import timedelta

from tests.media import peer_clients as pc
from tests.media_fixtures import MediaClient, run

FRAMES = 20  # video frames each subscriber must receive from each source (~0.7 s at 30 fps)
LEVELS = {"doctor": 40, "patient": 120, "guest": 200}  # grey levels: who is who


def make_invite(app, consultation_id: int, created_by: int) -> int:
    from app.extensions import db
    from models import MediaInvite, utcnow

    with app.app_context():
        invite = MediaInvite(
            consultation_id=consultation_id,
            token_hash=hashlib.sha256(secrets.token_bytes(16)).hexdigest(),
            guest_name="Переводчик",
            guest_role="interpreter",
            created_by_id=created_by,
            expires_at=utcnow() + timedelta(hours=1),
        )
        db.session.add(invite)
        db.session.commit()
        return invite.id


def participants(server, room, app):
    invite = make_invite(app, room.consultation_id, room.doctor_user_id)
    cid = room.consultation_id
    return {
        "doctor": MediaClient(server.url, lambda: server.token(cid, room.doctor_user_id, "doctor")),
        "patient": MediaClient(
            server.url, lambda: server.token(cid, room.patient_user_id, "patient")
        ),
        "guest": MediaClient(
            server.url,
            lambda: server.token(cid, None, "guest", name="Переводчик", invite_id=invite),
        ),
    }


async def enter_all(people: dict[str, MediaClient]) -> None:
    for client in people.values():
        await client.connect()
    doctor = people["doctor"]
    await doctor.call("room.enter", {})
    for name in ("patient", "guest"):
        await people[name].call("room.enter", {})
        await doctor.wait_for(
            lambda name=name: any(
                p["sid"] == people[name].sid and p["state"] == "waiting"
                for p in doctor.participants()
            )
        )
        assert await doctor.call("room.admit", {"sid": people[name].sid}) == {"ok": True}
        await people[name].wait_for(lambda name=name: people[name].got("room.admitted"))


def answerer(client: MediaClient, event: str, **extra):
    async def answer(sdp: str) -> str:
        ack = await client.call(event, {"sdp": sdp, **extra}, timeout=20)
        assert ack.get("ok"), ack
        return ack["sdp"]

    return answer


async def _count(server) -> int:
    return server.server.peers.peer_count()


def test_three_participants_see_each_other_through_the_relay(app, media_server, make_room):
    room = make_room(kind="centre_request", status="in_progress")
    people = participants(media_server, room, app)

    async def scenario():
        await enter_all(people)
        publishers = {
            name: await pc.publish(answerer(c, "relay.publish"), LEVELS[name])
            for name, c in people.items()
        }
        # Everybody hears who publishes: the last relay.sources lists all three.
        sids = {c.sid for c in people.values()}
        for client in people.values():
            await client.wait_for(
                lambda client=client: (
                    client.got("relay.sources")
                    and {s["sid"] for s in client.got("relay.sources")[-1]["sources"]} == sids
                )
            )
        state = await people["patient"].call("relay.state", {})
        assert state["ok"] and state["recording"] is False
        assert {(s["sid"], s["video"], s["audio"]) for s in state["sources"]} == {
            (sid, True, True) for sid in sids
        }
        assert len({s["pub"] for s in state["sources"]}) == 3

        counters: dict[tuple[str, str], pc.Counter] = {}
        subscribers = []
        for me, client in people.items():
            for src, source in people.items():
                if src == me:
                    continue
                counter = counters[(me, src)] = pc.Counter()
                subscribers.append(
                    await pc.subscribe(
                        answerer(client, "relay.subscribe", source=source.sid), counter
                    )
                )
        peers_open = await asyncio.wrap_future(
            asyncio.run_coroutine_threadsafe(_count(media_server), media_server.thread._loop)
        )
        arrived = await pc.wait_for(
            lambda: all(c.frames >= FRAMES for c in counters.values()), timeout=60
        )
        frames = {k: c.frames for k, c in counters.items()}
        levels = {k: c.levels[-1] if c.levels else None for k, c in counters.items()}

        # The guest leaves: its peers go, the others stop listing it.
        await people["guest"].close()
        guest_sid = people["guest"].sid
        for name in ("doctor", "patient"):
            await people[name].wait_for(
                lambda name=name: (
                    guest_sid
                    not in {s["sid"] for s in people[name].got("relay.sources")[-1]["sources"]}
                )
            )
        for counter in counters.values():
            counter.cancel()
        for conn in [*publishers.values(), *subscribers]:
            await conn.close()
        await people["doctor"].close()
        await people["patient"].close()
        return arrived, frames, levels, peers_open

    arrived, frames, levels, peers_open = run(scenario(), timeout=120)
    assert peers_open == 9  # 3 publish + 6 subscribe connections on the server
    assert arrived, frames
    for (me, src), level in levels.items():
        # The codec keeps a flat grey flat within a few steps (video → full range adds ~15%).
        expected = (LEVELS[src] - 16) * 255 / 219
        assert abs(level - expected) < 12, (me, src, level, expected)

    async def settle():
        for _ in range(100):
            if server_peers.peer_count() == 0:
                return 0
            await asyncio.sleep(0.05)
        return server_peers.peer_count()

    server_peers = media_server.server.peers
    assert media_server.thread.call(settle) == 0  # every connection closed on disconnect


def test_relay_rules(app, media_server, make_room):
    room = make_room(kind="centre_request", status="in_progress")
    people = participants(media_server, room, app)
    other_room = make_room(kind="centre_request", status="in_progress")
    stranger = MediaClient(
        media_server.url,
        lambda: media_server.token(other_room.consultation_id, other_room.doctor_user_id, "doctor"),
    )

    async def scenario():
        doctor, patient = people["doctor"], people["patient"]
        await doctor.connect()
        await patient.connect()
        await stranger.connect()
        await doctor.call("room.enter", {})
        await stranger.call("room.enter", {})
        await patient.call("room.enter", {})  # waiting, not admitted
        out = {}
        out["waiting_publish"] = await patient.call("relay.publish", {"sdp": "v=0"})
        out["waiting_state"] = await patient.call("relay.state", {})
        out["no_sdp"] = await doctor.call("relay.publish", {})
        out["not_a_dict"] = await doctor.call("relay.publish", "sdp")
        out["bad_sdp"] = await doctor.call("relay.publish", {"sdp": "garbage"})
        out["huge_sdp"] = await doctor.call("relay.publish", {"sdp": "v" * 100_001})
        out["unknown_source"] = await doctor.call(
            "relay.subscribe", {"source": "nobody", "sdp": "v=0"}
        )
        out["patient_records"] = await patient.call("record.start", {})
        # The doctor publishes; a doctor of another room cannot subscribe to it.
        publisher = await pc.publish(answerer(doctor, "relay.publish"), 50, audio=False)
        out["foreign_subscribe"] = await stranger.call(
            "relay.subscribe", {"source": doctor.sid, "sdp": "v=0"}
        )
        out["self_subscribe"] = await doctor.call(
            "relay.subscribe", {"source": doctor.sid, "sdp": "v=0"}
        )
        out["stranger_sources"] = (await stranger.call("relay.state", {}))["sources"]
        # Ending the room closes the doctor's publish connection.
        await doctor.call("room.end", {})
        await doctor.wait_for(
            lambda: doctor.got("relay.sources") and doctor.got("relay.sources")[-1]["sources"] == []
        )
        out["after_end"] = await doctor.call("relay.state", {})
        await publisher.close()
        for client in (doctor, patient, stranger):
            await client.close()
        return out

    out = run(scenario(), timeout=60)
    assert out["waiting_publish"] == {"ok": False, "error": "forbidden"}
    assert out["waiting_state"] == {"ok": False, "error": "forbidden"}
    assert out["no_sdp"] == {"ok": False, "error": "bad_request"}
    assert out["not_a_dict"] == {"ok": False, "error": "bad_request"}
    assert out["bad_sdp"] == {"ok": False, "error": "bad_request"}
    assert out["huge_sdp"] == {"ok": False, "error": "bad_request"}
    assert out["unknown_source"] == {"ok": False, "error": "not_found"}
    assert out["patient_records"] == {"ok": False, "error": "forbidden"}
    assert out["foreign_subscribe"] == {"ok": False, "error": "not_found"}
    assert out["self_subscribe"] == {"ok": False, "error": "not_found"}
    assert out["stranger_sources"] == []
    # After room.end nobody is admitted any more: the relay is closed to them too.
    assert out["after_end"] == {"ok": False, "error": "forbidden"}
    assert media_server.server.peers.peer_count() == 0
