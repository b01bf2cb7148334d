"""The relay hub driven directly (no socket.io): the cap on publishers per room, and no
connection left open by a subscription racing its source or by two publishes of one sid."""

from __future__ import annotations

import asyncio

import pytest

from media_server.peers import PeerError, RelayHub
from tests.media import peer_clients as pc
from tests.media_fixtures import run

pytestmark = pytest.mark.no_db  # the hub in memory: no database (run once, on SQLite)


def test_publishers_per_room_are_capped():
    """Direct on the hub (no socket.io): the cap counts other publishers of the same room."""

    async def scenario():
        hub = RelayHub(max_publishers=1)
        first = await pc.publish(lambda sdp: hub.publish("a", "c:1", sdp), 10, audio=False)
        try:
            await pc.publish(lambda sdp: hub.publish("b", "c:1", sdp), 20, audio=False)
        except PeerError as exc:
            refused = exc.code
        else:
            refused = None
        # Another room is not affected, and the same sid may publish again (a replacement).
        other = await pc.publish(lambda sdp: hub.publish("c", "c:2", sdp), 30, audio=False)
        again = await pc.publish(lambda sdp: hub.publish("a", "c:1", sdp), 10, audio=False)
        counts = (hub.peer_count("c:1"), hub.peer_count("c:2"))
        for conn in (first, other, again):
            await conn.close()
        await hub.close()
        return refused, counts, hub.peer_count()

    refused, counts, left = run(scenario())
    assert refused == "room_full"
    assert counts == (1, 1)
    assert left == 0


def test_no_connection_outlives_a_race_with_the_source_or_a_second_publish():
    """Direct on the hub: a subscription negotiated while its source unpublishes, and two
    publishes of one sid at once, leave nothing open behind (a leak here kept relayed copies
    and sockets open for the life of the media process)."""

    async def scenario():
        hub = RelayHub()
        source = await pc.publish(lambda sdp: hub.publish("a", "c:1", sdp), 10, audio=False)

        async def subscribe_while_the_source_leaves(sdp: str) -> str:
            negotiating = asyncio.ensure_future(hub.subscribe("b", "c:1", "a", sdp))
            await asyncio.sleep(0)  # the subscription is under way...
            await hub.unpublish("a")  # ...when the source goes
            return await negotiating

        try:
            await pc.subscribe(subscribe_while_the_source_leaves, pc.Counter())
        except PeerError as exc:
            refused = exc.code
        else:
            refused = None
        after_race = hub.peer_count()

        offers = []

        async def answer_later(sdp: str) -> str:
            offers.append(sdp)
            while len(offers) < 2:  # both offers in hand: answer them at the same time
                await asyncio.sleep(0.01)
            return await hub.publish("c", "c:1", sdp)

        both = await asyncio.gather(
            pc.publish(answer_later, 20, audio=False), pc.publish(answer_later, 30, audio=False)
        )
        after_double = hub.peer_count()
        for conn in (source, *both):
            await conn.close()
        await hub.close()
        return refused, after_race, after_double, hub.peer_count()

    refused, after_race, after_double, left = run(scenario())
    assert refused == "not_found"
    assert after_race == 0
    assert after_double == 1
    assert left == 0
