"""A media process's own /metrics (its sockets and rooms) and its connection log line with the
request id of the web request that minted the join token (issue 18 items 4 and 6)."""

from __future__ import annotations

import json
import logging
import re
import urllib.error
import urllib.request

from logs import JsonFormatter, request_id_var
from tests.media_fixtures import MediaClient, run


def scrape(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url + "/metrics", timeout=10) as resp:  # noqa: S310
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode()


def gauge(body: str, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", body, re.MULTILINE)
    assert match, body
    return float(match.group(1))


def test_metrics_count_this_process_sockets_and_rooms(media_server_factory, make_room):
    media = media_server_factory()
    first, second = make_room(), make_room()

    def token(room, role: str, user_id: int) -> str:
        return media.token(room.consultation_id, user_id, role)

    async def scenario() -> list[str]:
        clients = [
            MediaClient(media.url, lambda: token(first, "patient", first.patient_user_id)),
            MediaClient(media.url, lambda: token(first, "doctor", first.doctor_user_id)),
            MediaClient(media.url, lambda: token(second, "patient", second.patient_user_id)),
        ]
        bodies = [scrape(media.url)[1]]
        for c in clients:
            await c.connect()
        bodies.append(scrape(media.url)[1])
        await clients[2].close()
        await clients[0].wait_for(lambda: len(media.server.conns) == 2)
        bodies.append(scrape(media.url)[1])
        for c in clients[:2]:
            await c.close()
        return bodies

    before, full, one_left = run(scenario())
    assert (gauge(before, "oblako_media_sockets"), gauge(before, "oblako_media_rooms")) == (0, 0)
    assert (gauge(full, "oblako_media_sockets"), gauge(full, "oblako_media_rooms")) == (3, 2)
    assert (gauge(one_left, "oblako_media_sockets"), gauge(one_left, "oblako_media_rooms")) == (
        2,
        1,
    )


def test_metrics_refused_to_an_address_not_allowed(media_server_factory):
    media = media_server_factory(METRICS_ALLOWED="203.0.113.0/24")
    status, body = scrape(media.url)
    assert status == 403
    assert "oblako_media" not in body


def test_a_connection_is_logged_with_the_request_id_of_its_token(
    media_server_factory, make_room, caplog
):
    caplog.set_level(logging.INFO, logger="media_server.socket")
    media = media_server_factory()
    room = make_room()

    def token() -> str:
        minted = request_id_var.set("rid-web-42")  # as inside the web request that mints it
        try:
            return media.token(room.consultation_id, room.patient_user_id, "patient")
        finally:
            request_id_var.reset(minted)

    async def scenario() -> None:
        c = await MediaClient(media.url, token).connect()
        await c.close()

    run(scenario())
    lines = [
        json.loads(JsonFormatter().format(r))
        for r in caplog.records
        if r.name == "media_server.socket"
    ]
    assert len(lines) == 1
    line = lines[0]
    assert line["request_id"] == "rid-web-42"
    assert line["event"] == "connect"
    assert line["consultation_id"] == room.consultation_id
    assert line["user_id"] == room.patient_user_id
    assert line["role"] == "patient"
    # The name shown to the others ("patient" here, a real name in production) is not logged.
    assert "name" not in line
