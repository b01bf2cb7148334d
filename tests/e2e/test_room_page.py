"""The consultation room's page in a real browser: it fits a phone (no scrolling, nothing under
16 px, a movable self-view), guidance when the camera is denied or missing, the call ended
with a reason when the patient signs out elsewhere, and a late participant list ignored."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from flask import Flask
from playwright.sync_api import Page, expect

from tests.e2e.conftest import enter_room_from_consultation_page, sign_in
from tests.e2e.room_world import RoomWorld, open_room

if TYPE_CHECKING:
    from tests.e2e.conftest import LiveServer

pytestmark = [pytest.mark.e2e, pytest.mark.once]


@pytest.fixture
def room_world(
    app: Flask, make_patient, make_center, make_doctor, media_server
) -> Iterator[RoomWorld]:
    """A consultation whose room is open: tests/e2e/room_world.py."""
    yield from open_room(app, make_patient, make_center, make_doctor, media_server)


TEXT_SIZES_JS = """() => {
  const small = [];
  for (const el of document.querySelectorAll('#room *')) {
    const own = [...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
    if (!own || !el.offsetParent) continue;
    const px = parseFloat(getComputedStyle(el).fontSize);
    if (px < 16) small.push(el.tagName + '#' + el.id + '.' + el.className + ': ' + px);
  }
  return small;
}"""


def inside(box: dict, frame: dict) -> bool:
    return (
        box["x"] >= frame["x"] - 1
        and box["y"] >= frame["y"] - 1
        and box["x"] + box["width"] <= frame["x"] + frame["width"] + 1
        and box["y"] + box["height"] <= frame["y"] + frame["height"] + 1
    )


def overlap(a: dict, b: dict) -> bool:
    return not (
        a["x"] + a["width"] <= b["x"]
        or b["x"] + b["width"] <= a["x"]
        or a["y"] + a["height"] <= b["y"]
        or b["y"] + b["height"] <= a["y"]
    )


def test_room_page_fits_a_phone(
    app: Flask,
    room_world: RoomWorld,
    phone_page: Page,
    desk_page: Page,
    live_server: LiveServer,
) -> None:
    page = phone_page
    sign_in(page, live_server, room_world.patient_username)
    enter_room_from_consultation_page(
        page, live_server(f"/cabinet/consultations/{room_world.public_id}")
    )
    # No horizontal scrolling at 390×844.
    widths = page.evaluate(
        "() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    assert widths[0] <= widths[1] == 390, widths
    join = page.locator("#btn-join")
    join.scroll_into_view_if_needed()
    box = join.bounding_box()
    assert box and box["height"] >= 44 and box["x"] >= 0 and box["x"] + box["width"] <= 390
    join.click()

    # In the call: status, video, buttons and chat on one screen, nothing to scroll to; the
    # device check folded away; no text under 16 px.
    expect(page.locator("#room-status")).to_have_text(
        "Пожалуйста, подождите: врач скоро пригласит вас."
    )
    expect(page.locator("#precall")).to_be_hidden()
    screen = {"x": 0, "y": 0, "width": 390, "height": 844}
    for selector in ("#room-status", "#remote-videos", "#btn-hangup", "#chat-input", "#chat-send"):
        el = page.locator(selector)
        expect(el).to_be_visible()
        found = el.bounding_box()
        assert found and inside(found, screen), (selector, found)
    assert page.evaluate(TEXT_SIZES_JS) == []
    widths = page.evaluate(
        "() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    assert widths[0] <= widths[1], widths

    # The self-view is small, and moves where the patient drags it, staying on the video.
    videos = page.locator("#room-videos").bounding_box()
    me = page.locator("#room-self").bounding_box()
    assert videos and me and me["width"] <= 0.3 * videos["width"]
    start = (me["x"] + me["width"] / 2, me["y"] + me["height"] / 2)
    page.mouse.move(*start)
    page.mouse.down()
    page.mouse.move(videos["x"] + 5, videos["y"] + 5, steps=5)
    page.mouse.up()
    moved = page.locator("#room-self").bounding_box()
    assert moved and moved["x"] < me["x"] - 50 and moved["y"] < me["y"] - 20, (me, moved)
    assert inside(moved, videos), (moved, videos)

    # The doctor's «the patient's video will appear here» is not under the self-view.
    doctor = desk_page
    sign_in(doctor, live_server, room_world.doctor_username)
    doctor.goto(live_server(f"/media/room/{room_world.public_id}"))
    doctor.wait_for_function("() => document.getElementById('local-video').videoWidth > 0")
    text = doctor.locator("#remote-placeholder").bounding_box()
    self_view = doctor.locator("#room-self").bounding_box()
    assert text and self_view and not overlap(text, self_view), (text, self_view)


def test_denied_camera_gets_clear_guidance_and_the_chat_still_works(
    app: Flask, room_world: RoomWorld, phone_page: Page, live_server: LiveServer
) -> None:
    page = phone_page
    # The patient said «Block» to the browser's prompt.
    page.add_init_script(
        """navigator.mediaDevices.getUserMedia = () =>
             Promise.reject(new DOMException("denied", "NotAllowedError"));"""
    )
    sign_in(page, live_server, room_world.patient_username)
    page.goto(live_server(f"/media/room/{room_world.public_id}"))
    expect(page.locator("#precall")).to_contain_text(
        "Браузеру не разрешено использовать камеру и микрофон"
    )
    expect(page.locator("#precall")).to_contain_text("Писать в чат можно")
    expect(page.locator("#chat-form")).to_be_visible()
    # No device at all reads differently.
    page.add_init_script(
        """navigator.mediaDevices.getUserMedia = () =>
             Promise.reject(new DOMException("none", "NotFoundError"));"""
    )
    page.reload()
    expect(page.locator("#precall")).to_contain_text("не найдены камера и микрофон")


def test_signing_out_elsewhere_ends_the_call_and_the_page_says_why(
    app: Flask, room_world: RoomWorld, phone_page: Page, live_server: LiveServer
) -> None:
    """Logout in another browser ends every session of the patient (issue 15, item 4): the
    media server closes the room page's socket, and the page stops the camera and asks the
    patient to sign in again, in Russian, instead of reconnecting for ever."""
    from tests.conftest import login

    page = phone_page
    sign_in(page, live_server, room_world.patient_username)
    page.goto(live_server(f"/media/room/{room_world.public_id}"))
    page.wait_for_function("() => !!window.oblakoRoom.sid")
    page.wait_for_function("() => document.getElementById('local-video').videoWidth > 0")
    elsewhere = app.test_client()
    login(elsewhere, room_world.patient_username)
    elsewhere.get("/logout/")
    expect(page.locator("#room-status")).to_have_text(
        "Сеанс завершён: войдите снова.", timeout=20_000
    )
    page.wait_for_function("() => window.oblakoRoom.fatal === true")
    assert page.evaluate("() => window.oblakoRoom.socket.connected") is False
    assert page.evaluate(
        "() => window.oblakoRoom.localStream.getTracks().every(t => t.readyState === 'ended')"
    )
    expect(page.locator("#btn-join")).to_be_hidden()


def test_an_older_participant_list_never_replaces_a_newer_one(
    room_world: RoomWorld, phone_page: Page, live_server: LiveServer
) -> None:
    """With several media processes, another process's older `room.state` can arrive after a
    newer one (media_server/rooms.py): the page keeps the highest-numbered list."""
    page = phone_page
    sign_in(page, live_server, room_world.patient_username)
    page.goto(live_server(f"/media/room/{room_world.public_id}"))
    page.wait_for_function("() => !!window.oblakoRoom.sid")
    kept, taken = page.evaluate(
        """() => {
          const room = window.oblakoRoom;
          const hear = (data) => room.socket.listeners("room.state").forEach((f) => f(data));
          const before = JSON.stringify(room.participants);
          hear({version: room.stateVersion - 1, participants: []});
          const kept = JSON.stringify(room.participants) === before && before !== "[]";
          hear({version: room.stateVersion + 1, participants: []});
          return [kept, room.participants.length === 0];
        }"""
    )
    assert kept and taken
