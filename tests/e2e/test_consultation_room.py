"""The consultation room in two real browsers against a real media server (issue 5).

The patient on a phone-sized context, the doctor on a desktop one, both with Chromium's fake
camera and microphone. The patient joins and waits; the doctor sees them waiting and admits them;
both then receive the other's video — counted from RTCPeerConnection.getStats() (inbound-rtp
framesDecoded growing on both sides), not from the look of the page. The doctor starts the
consultation from the room, chat messages cross both ways (and are stored once each), the doctor
ends it and lands on the conclusion form while the patient's page says it has ended.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

import pytest
from flask import Flask
from playwright.sync_api import Page, expect

from tests.conftest import patient_username
from tests.e2e.conftest import enter_room_from_consultation_page, sign_in, wait_until

if TYPE_CHECKING:
    from tests.e2e.conftest import LiveServer

pytestmark = [pytest.mark.e2e, pytest.mark.once]

FRAMES_JS = "() => window.oblakoRoom.inboundVideoFrames()"
RELAY_AUDIO_JS = """async () => {
  const a = {packets: 0, samples: 0, concealed: 0};
  for (const sub of Object.values(window.oblakoRoom.relay.subs)) {
    (await sub.pc.getStats()).forEach(s => {
      if (s.type === "inbound-rtp" && s.kind === "audio") {
        a.packets += s.packetsReceived || 0;
        a.samples += s.totalSamplesReceived || 0;
        a.concealed += s.concealedSamples || 0;
      }
    });
  }
  return a;
}"""


@dataclass
class RoomWorld:
    public_id: uuid.UUID
    consultation_id: int
    patient_username: str
    patient_name: str
    doctor_username: str


@pytest.fixture
def room_world(
    app: Flask, make_patient, make_center, make_doctor, media_server
) -> Iterator[RoomWorld]:
    """A centre consultation starting in five minutes (the room is open), and the web app
    pointing the pages at the test's real media server."""
    from app.extensions import db
    from models import Consultation, Patient, utcnow

    centre = make_center("Кардиоцентр «Пульс»")
    doctor_id = make_doctor(username="room_doctor", center_id=centre)
    patient_id = make_patient(surname="Звонкова", name="Вера")
    with app.app_context():
        c = Consultation(
            public_id=uuid.uuid4(),
            kind="centre_request",
            status="scheduled",
            patient_id=patient_id,
            center_id=centre,
            doctor_id=doctor_id,
            complaints="Перебои в работе сердца",
            scheduled_at=utcnow() + timedelta(minutes=5),
            duration_minutes=30,
        )
        db.session.add(c)
        db.session.commit()
        patient = db.session.get(Patient, patient_id)
        world = RoomWorld(
            public_id=c.public_id,
            consultation_id=c.id,
            patient_username=patient_username(app, patient_id),
            patient_name=patient.full_name,
            doctor_username="room_doctor",
        )
    previous = app.config.get("MEDIA_PUBLIC_URL", "")
    app.config["MEDIA_PUBLIC_URL"] = media_server.url
    try:
        yield world
    finally:
        app.config["MEDIA_PUBLIC_URL"] = previous
    # The pages are closed by now (their fixtures were set up later): whatever they had on the
    # relay must be closed too, or it would stay open for the life of the media process.
    peers = media_server.server.peers

    async def settle() -> int:
        for _ in range(200):
            if peers.peer_count() == 0:
                return 0
            await asyncio.sleep(0.05)
        return peers.peer_count()

    assert media_server.thread.call(settle, timeout=15) == 0, "relay connections left open"


def frames(page: Page) -> int:
    return int(page.evaluate(FRAMES_JS))


def wait_for_frames(page: Page, more_than: int, timeout_ms: int = 20_000) -> int:
    """Video frames decoded from the page's inbound streams (WebRTC statistics)."""
    return int(wait_until(page, FRAMES_JS, lambda n: n > more_than, timeout_ms))


def test_patient_waits_doctor_admits_video_both_ways_and_chat(
    app: Flask,
    room_world: RoomWorld,
    phone_page: Page,
    desk_page: Page,
    live_server: LiveServer,
) -> None:
    from sqlalchemy import select

    from app.extensions import db
    from models import ChatMessage, Consultation

    w = room_world
    patient, doctor = phone_page, desk_page

    # The patient joins from the cabinet and waits.
    sign_in(patient, live_server, w.patient_username)
    enter_room_from_consultation_page(patient, live_server(f"/cabinet/consultations/{w.public_id}"))
    patient.wait_for_function("() => window.oblakoRoom.micLevel > 0", timeout=10_000)
    patient.locator("#btn-join").click()
    expect(patient.locator("#remote-placeholder")).to_have_text(
        "Пожалуйста, подождите: врач скоро пригласит вас."
    )

    # Before the start the chat of a centre consultation is closed: a message the patient
    # writes now is kept, marked as not sent, and goes by itself once the doctor starts.
    expect(patient.locator("#chat-closed")).to_be_visible()
    patient.locator("#chat-input").fill("Я на месте.")
    patient.locator("#chat-send").click()
    early = patient.locator("#chat-messages .chat-message.failed")
    expect(early).to_have_count(1)
    expect(early.locator(".chat-state")).to_contain_text("сообщение уйдёт, как только врач")
    expect(early.locator("button.chat-resend")).to_have_text("Отправить ещё раз")

    # The doctor joins from the care page and sees the patient waiting; letting them in starts
    # the consultation: one action (ConclusionView.start, then room.admit).
    sign_in(doctor, live_server, w.doctor_username)
    enter_room_from_consultation_page(doctor, live_server(f"/care/consultations/{w.public_id}"))
    doctor.locator("#btn-join").click()
    waiting = doctor.locator("#waiting-list .waiting-participant")
    expect(waiting).to_have_count(1)
    expect(waiting).to_contain_text(w.patient_name)
    expect(waiting.locator("button.admit")).to_have_text("Впустить и начать консультацию")
    waiting.locator("button.admit").click()
    expect(waiting).to_have_count(0)
    expect(doctor.locator("#btn-end")).to_be_visible()
    expect(doctor.locator("#btn-start")).to_be_hidden()
    with app.app_context():
        status = db.session.execute(
            select(Consultation.status).where(Consultation.id == w.consultation_id)
        ).scalar_one()
    assert status == "in_progress"

    # The room is told (consultation.state): the patient's page drops its «closed» notice and
    # sends the kept message; the sockets stay as they are (the database decides each send).
    expect(patient.locator("#chat-closed")).to_be_hidden()
    expect(doctor.locator("#chat-messages .chat-body").last).to_have_text("Я на месте.")
    expect(patient.locator("#chat-messages .chat-message.failed")).to_have_count(0)
    expect(patient.locator("#chat-messages .chat-state")).to_have_count(0)

    # Video both ways: decoded frames keep growing on each side.
    first_patient = wait_for_frames(patient, 0)
    first_doctor = wait_for_frames(doctor, 0)
    wait_for_frames(patient, first_patient + 10)
    wait_for_frames(doctor, first_doctor + 10)
    expect(patient.locator("#remote-videos video")).to_have_count(1)
    expect(doctor.locator("#remote-videos video")).to_have_count(1)

    # The patient's signalling socket drops (and stays down): the doctor's page says so, in
    # Russian, and keeps the media connection that still flows: same `pc`, frames growing.
    peer_ids = "() => Object.values(window.oblakoRoom.peers).map(p => p.id)"
    before = doctor.evaluate(peer_ids)
    old_sid = patient.evaluate("() => window.oblakoRoom.sid")
    patient.evaluate(
        "() => { window.oblakoRoom.socket.io.reconnection(false); "
        "window.oblakoRoom.socket.io.engine.close(); }"
    )
    expect(doctor.locator("#room-status")).to_have_text(
        "У пациента прервалась связь. Ждём, когда он вернётся…"
    )
    expect(patient.locator("#room-status")).to_contain_text("чат временно недоступен")
    wait_for_frames(doctor, frames(doctor) + 10)
    wait_for_frames(patient, frames(patient) + 10)
    assert doctor.evaluate(peer_ids) == before

    # Back: admitted again at once, the doctor's page says so and the same connection goes on.
    patient.evaluate(
        "() => { window.oblakoRoom.socket.io.reconnection(true); "
        "window.oblakoRoom.socket.connect(); }"
    )
    patient.wait_for_function(
        f"() => window.oblakoRoom.sid && window.oblakoRoom.sid !== {old_sid!r}", timeout=15_000
    )
    expect(doctor.locator("#room-status")).to_have_text("Пациент снова на связи.")
    expect(waiting).to_have_count(0)  # re-admitted without the doctor doing anything
    patient.wait_for_function("() => window.oblakoRoom.state === 'admitted'")
    assert doctor.evaluate(peer_ids) == before
    wait_for_frames(doctor, frames(doctor) + 10)

    # Chat both ways.
    doctor.locator("#chat-input").fill("Здравствуйте! <b>Как</b> вы себя чувствуете?")
    doctor.locator("#chat-send").click()
    expect(patient.locator("#chat-messages .chat-body").last).to_have_text(
        "Здравствуйте! <b>Как</b> вы себя чувствуете?"
    )
    assert patient.locator("#chat-messages b").count() == 0  # text, never HTML
    patient.locator("#chat-input").fill("Спасибо, лучше, но бывают перебои.")
    patient.locator("#chat-send").click()
    expect(doctor.locator("#chat-messages .chat-body").last).to_have_text(
        "Спасибо, лучше, но бывают перебои."
    )
    expect(patient.locator("#chat-messages .chat-message.pending")).to_have_count(0)
    # Names written the same way everywhere: the chat names each person as the title does.
    doctor_name = patient.locator("#room-doctor").inner_text()
    for page, name in ((doctor, w.patient_name), (patient, w.patient_name)):
        own = page.locator(".chat-message", has_text="Спасибо, лучше").locator(".chat-author")
        expect(own).to_have_text(name)
    expect(doctor.locator("#room-patient")).to_have_text(w.patient_name)
    expect(
        patient.locator(".chat-message", has_text="Здравствуйте!").locator(".chat-author")
    ).to_have_text(doctor_name)
    with app.app_context():
        bodies = list(
            db.session.execute(
                select(ChatMessage.body)
                .where(ChatMessage.consultation_id == w.consultation_id)
                .order_by(ChatMessage.id)
            ).scalars()
        )
    assert bodies == [
        "Я на месте.",
        "Здравствуйте! <b>Как</b> вы себя чувствуете?",
        "Спасибо, лучше, но бывают перебои.",
    ]

    # Video still flows.
    wait_for_frames(patient, frames(patient) + 5)

    # The doctor ends it: everyone is told, the doctor goes on to the conclusion.
    doctor.on("dialog", lambda dialog: dialog.accept())
    doctor.locator("#btn-end").click()
    expect(doctor).to_have_url(re.compile(rf"/care/consultations/{w.public_id}/conclusion"))
    expect(patient.locator("#room-status")).to_have_text("Консультация завершена. Спасибо!")
    assert not live_server.errors, live_server.errors


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


def test_a_guest_joins_by_a_one_time_link_and_three_talk_through_the_relay(
    app: Flask,
    room_world: RoomWorld,
    phone_page: Page,
    desk_page: Page,
    browser,
    live_server: LiveServer,
) -> None:
    from sqlalchemy import select

    from app.extensions import db
    from models import ChatMessage
    from tests.e2e.conftest import DEFAULT_TIMEOUT_MS, DESKTOP

    w = room_world
    patient, doctor = phone_page, desk_page
    join_and_admit(patient, doctor, w, live_server)
    wait_for_frames(patient, 0)

    # The doctor invites an interpreter; the link is shown once.
    doctor.locator("#invite-form #name").fill("Анна Переводчикова")
    doctor.locator("#invite-form #role").select_option("interpreter")
    doctor.locator("#invite-form button[type=submit]").click()
    link = doctor.locator("#invite-link")
    expect(link).to_have_value(re.compile(r"/media/guest/join/[A-Za-z0-9_-]{40,}$"))
    url = link.input_value()
    # Listed at once with its «Отозвать», and revoked in place: no reload drops the call.
    doctor.evaluate("() => { window.notReloaded = true; }")
    invites = doctor.locator("#invite-list li")
    expect(invites).to_have_count(1)
    expect(invites).to_contain_text("Анна Переводчикова — Переводчик, ссылка ещё не открыта")
    doctor.locator("#invite-form #name").fill("Иван Родственников")
    doctor.locator("#invite-form button[type=submit]").click()
    expect(invites).to_have_count(2)
    invites.nth(1).locator("button", has_text="Отозвать").click()
    expect(invites).to_have_count(1)
    expect(doctor.locator("#room-status")).to_have_text(
        "Приглашение для Иван Родственников отозвано."
    )
    assert doctor.evaluate("() => window.notReloaded") is True
    with app.app_context():
        from models import MediaInvite

        revoked = db.session.execute(
            select(MediaInvite.guest_name).where(MediaInvite.revoked_at.is_not(None))
        ).scalars()
        assert list(revoked) == ["Иван Родственников"]

    context = browser.new_context(base_url=live_server.url, **DESKTOP)
    context.set_default_timeout(DEFAULT_TIMEOUT_MS)
    try:
        guest = context.new_page()
        guest.goto(url.replace("http://localhost/", live_server("/")))
        expect(guest).to_have_url(re.compile(r"/media/guest/room$"))
        expect(guest.locator("#precall")).to_contain_text("Камера и микрофон работают")
        guest.locator("#btn-join").click()
        waiting = doctor.locator("#waiting-list .waiting-participant")
        expect(waiting).to_contain_text("Анна Переводчикова (Гость)")
        waiting.locator("button.admit").click()

        # Three admitted: everyone publishes to the relay and receives the other two from it.
        expect(guest.locator("#remote-videos video")).to_have_count(2, timeout=30_000)
        expect(patient.locator("#remote-videos video")).to_have_count(2, timeout=30_000)
        wait_for_frames(guest, 10, timeout_ms=40_000)
        wait_for_frames(patient, 10, timeout_ms=40_000)

        # Letting the patient in started the consultation: now everyone chats, the guest too
        # (its socket was opened before: the database, not its token, decides each send).
        expect(doctor.locator("#btn-end")).to_be_visible()
        guest.locator("#chat-input").fill("Перевожу: пациентка спрашивает о таблетках.")
        guest.locator("#chat-send").click()
        for page in (doctor, patient):
            line = page.locator("#chat-messages .chat-message").last
            expect(line.locator(".chat-body")).to_have_text(
                "Перевожу: пациентка спрашивает о таблетках.", timeout=20_000
            )
            expect(line.locator(".chat-author")).to_have_text("Анна Переводчикова")
        doctor.locator("#chat-input").fill("Принимать утром, после еды.")
        doctor.locator("#chat-send").click()
        expect(guest.locator("#chat-messages .chat-body").last).to_have_text(
            "Принимать утром, после еды.", timeout=20_000
        )
        expect(guest.locator("#chat-messages .chat-message.pending")).to_have_count(0)
        with app.app_context():
            rows = db.session.execute(
                select(ChatMessage.author_id, ChatMessage.invite_id, ChatMessage.body)
                .where(ChatMessage.consultation_id == w.consultation_id)
                .order_by(ChatMessage.id)
            ).all()
        assert [(r.author_id is None, r.invite_id is not None, r.body) for r in rows] == [
            (True, True, "Перевожу: пациентка спрашивает о таблетках."),
            (False, False, "Принимать утром, после еды."),
        ]

        # The link worked once: a second visitor gets nothing.
        second = context.new_page()
        context.clear_cookies()
        second.goto(url.replace("http://localhost/", live_server("/")))
        expect(second.locator("#invite-unavailable")).to_be_visible()
    finally:
        context.close()


def test_the_doctor_records_with_both_consents_and_the_pages_publish(
    app: Flask,
    room_world: RoomWorld,
    phone_page: Page,
    desk_page: Page,
    live_server: LiveServer,
) -> None:
    import av
    from sqlalchemy import select

    from app.extensions import db
    from app.recordings import recording_path
    from models import Consent, Consultation, Doctor, Patient, Recording

    w = room_world
    patient, doctor = phone_page, desk_page
    join_and_admit(patient, doctor, w, live_server)
    wait_for_frames(doctor, 0)
    # «Вы на консультации» above the buttons goes after 3 s and moves them up: click once settled.
    # Frames can be counted before the track event that announces the call: wait for it first.
    doctor.wait_for_function(ANNOUNCED)
    expect(doctor.locator("#room-status")).to_be_hidden(timeout=15_000)

    # Without consents the server refuses, and the doctor reads why.
    record = doctor.locator("#btn-record")
    expect(record).to_have_text(re.compile("Начать запись"))
    record.click()
    expect(doctor.locator("#room-status")).to_contain_text("согласие и пациента, и врача")

    with app.app_context():
        c = db.session.get(Consultation, w.consultation_id)
        users = [
            db.session.get(Patient, c.patient_id).user_id,
            db.session.get(Doctor, c.doctor_id).user_id,
        ]
        for user_id in users:
            db.session.add(
                Consent(user_id=user_id, consultation_id=c.id, kind="recording", policy_version="1")
            )
        db.session.commit()
    record.click()
    expect(patient.locator("#recording-badge")).to_be_visible()
    expect(record).to_have_text(re.compile("Остановить запись"))
    # The refusal no longer holds: it is not left beside «Идёт запись».
    expect(doctor.locator("#room-status")).not_to_contain_text("согласие и пациента, и врача")
    # Both pages publish to the recorder while the call itself stays browser-to-browser.
    for page in (patient, doctor):
        page.wait_for_function(
            "() => window.oblakoRoom.relay.pub && "
            "['connected', 'completed'].includes(window.oblakoRoom.relay.pub.iceConnectionState)",
            timeout=20_000,
        )
    # The relay forwards what a page sends as it is: the page caps its video for everybody.
    cap = patient.evaluate(
        "() => window.oblakoRoom.relay.pub.getSenders()"
        ".find(s => s.track && s.track.kind === 'video').getParameters().encodings[0].maxBitrate"
    )
    assert cap == app.config["MEDIA_RELAY_VIDEO_KBPS"] * 1000
    patient.wait_for_timeout(3000)
    record.click()
    # Both pages learn at once that the recording stopped; the file is saved after the
    # recorder has encoded what it queued, and the doctor's button comes back when it is.
    expect(patient.locator("#recording-badge")).to_be_hidden()
    expect(record).to_have_text(re.compile("Начать запись"))
    expect(record).to_be_enabled(timeout=45_000)
    expect(doctor.locator("#room-status")).not_to_contain_text("Что-то пошло не так")
    with app.app_context():
        recordings = list(
            db.session.execute(
                select(Recording).where(Recording.consultation_id == w.consultation_id)
            ).scalars()
        )
        paths = [recording_path(r) for r in recordings]
    assert recordings and all(r.size_bytes > 0 for r in recordings)
    # Chromium's own VP8, muxed as it came: every participant's video plays from a key frame.
    with av.open(str(paths[-1])) as container:
        assert len(container.streams.video) == 2
        for index in range(2):
            container.seek(0)
            pictures = [f for f in container.decode(video=index)]
            assert len(pictures) > 30 and pictures[0].key_frame, (index, len(pictures))
    wait_for_frames(patient, frames(patient) + 5)  # the call went on throughout


def join_and_admit(patient: Page, doctor: Page, w: RoomWorld, live_server: LiveServer) -> None:
    sign_in(patient, live_server, w.patient_username)
    enter_room_from_consultation_page(patient, live_server(f"/cabinet/consultations/{w.public_id}"))
    patient.locator("#btn-join").click()
    sign_in(doctor, live_server, w.doctor_username)
    enter_room_from_consultation_page(doctor, live_server(f"/care/consultations/{w.public_id}"))
    doctor.locator("#btn-join").click()
    doctor.locator("#waiting-list button.admit").click()


PEER_IDS = "() => Object.values(window.oblakoRoom.peers).map(p => p.id)"
ANNOUNCED = "() => Object.values(window.oblakoRoom.peers).some(p => p.announced)"


def wait_for_new_call(patient: Page, doctor: Page, old_pc: str) -> None:
    """A new peer connection (a new `pc` id) replaced `old_pc` on both sides and is up."""
    for page in (doctor, patient):
        page.wait_for_function(
            f"() => {{ const ids = ({PEER_IDS})(); return ids.length === 1 && ids[0] !== "
            f"{old_pc!r} && ['connected', 'completed'].includes("
            "Object.values(window.oblakoRoom.peers)[0].pc.iceConnectionState); }",
            timeout=60_000,
        )


def test_the_call_comes_back_by_itself_when_the_media_path_breaks(
    app: Flask,
    room_world: RoomWorld,
    phone_page: Page,
    desk_page: Page,
    live_server: LiveServer,
) -> None:
    """The socket stays up, the media path goes: first the patient's end of the peer
    connection, then the doctor's. Nobody clicks anything; a new peer connection is negotiated
    and frames flow again (counted on the new connection only)."""
    w = room_world
    patient, doctor = phone_page, desk_page
    join_and_admit(patient, doctor, w, live_server)
    wait_for_frames(patient, 10)
    wait_for_frames(doctor, 10)
    sids = [page.evaluate("() => window.oblakoRoom.sid") for page in (patient, doctor)]

    # The patient's end goes: the doctor's page sees ICE drop and offers a new connection.
    old_pc = doctor.evaluate(PEER_IDS)[0]
    patient.evaluate("() => window.oblakoRoom.peers.doctor.pc.close()")
    wait_for_new_call(patient, doctor, old_pc)
    wait_for_frames(patient, 10)
    wait_for_frames(doctor, 10)
    # Meanwhile the doctor's page said so (its socket never noticed anything), then said the
    # patient was back (the page's own log of what it showed, in order).
    said = [
        line.split(" ", 3)[3]
        for line in doctor.evaluate("() => window.oblakoRoom.log")
        if line.split(" ")[1:2] == ["status"] and len(line.split(" ", 3)) == 4
    ]
    lost = "У пациента прервалась связь. Ждём, когда он вернётся…"
    assert lost in said and "Пациент снова на связи." in said[said.index(lost) :], said

    # The doctor's end goes: only the patient's page notices, and asks for a new connection.
    old_pc = doctor.evaluate(PEER_IDS)[0]
    doctor.evaluate("() => Object.values(window.oblakoRoom.peers)[0].pc.close()")
    wait_for_new_call(patient, doctor, old_pc)
    wait_for_frames(patient, 10)
    wait_for_frames(doctor, 10)

    # A connection that was up and breaks gets its ICE restarted on the same connection
    # first (a network back after a few seconds resumes the very same call): asked for here
    # as the patient's page asks when only its end notices.
    restarts = "() => window.oblakoRoom.log.filter(l => l.includes(' ice restart ')).length"
    answered = "() => window.oblakoRoom.log.filter(l => l.includes(' restart offer ')).length"
    before = (doctor.evaluate(restarts), patient.evaluate(answered))
    same = doctor.evaluate(PEER_IDS)
    patient.evaluate(
        "() => { const p = window.oblakoRoom.peers.doctor; window.oblakoRoom.socket.emit("
        "'signal', {to: p.remote, kind: 'restart', pc: p.id}, () => {}); }"
    )
    doctor.wait_for_function(f"() => ({restarts})() > {before[0]}")
    patient.wait_for_function(f"() => ({answered})() > {before[1]}")
    wait_for_frames(patient, frames(patient) + 10)
    wait_for_frames(doctor, frames(doctor) + 10)
    assert doctor.evaluate(PEER_IDS) == same == patient.evaluate(PEER_IDS)

    # The signalling sockets never dropped: this was the media path coming back by itself.
    assert [page.evaluate("() => window.oblakoRoom.sid") for page in (patient, doctor)] == sids
    expect(doctor.locator("#remote-videos video")).to_have_count(1)
    expect(patient.locator("#remote-videos video")).to_have_count(1)


def test_a_busy_chat_never_gets_the_reader_cut_off(
    app: Flask,
    room_world: RoomWorld,
    desk_page: Page,
    live_server: LiveServer,
    media_server,
) -> None:
    """55 messages arrive at once (eleven senders, five each): the reading page marks them read
    without tripping the server's flood limit (50 events in 5 s per connection), so it keeps
    its connection, shows every message, and its read mark reaches the newest one."""
    import asyncio

    from sqlalchemy import select

    from app.extensions import db
    from models import ChatRead, Consultation, Doctor, Patient, utcnow
    from tests.media_fixtures import MediaClient, run

    w = room_world
    with app.app_context():
        c = db.session.get(Consultation, w.consultation_id)
        c.status, c.started_at = "in_progress", utcnow()
        db.session.commit()
        patient_user = db.session.get(Patient, c.patient_id).user_id
        doctor_user = db.session.get(Doctor, c.doctor_id).user_id

    doctor = desk_page
    sign_in(doctor, live_server, w.doctor_username)
    doctor.goto(live_server(f"/media/room/{w.public_id}"))
    doctor.wait_for_function("() => !!window.oblakoRoom.sid")
    sid = doctor.evaluate("() => window.oblakoRoom.sid")

    senders = [
        MediaClient(
            media_server.url,
            lambda: media_server.token(w.consultation_id, patient_user, "patient"),
        )
        for _ in range(11)
    ]

    async def burst():
        for sender in senders:
            await sender.connect()
        acks = await asyncio.gather(
            *(
                sender.call("chat.send", {"client_msg_id": f"busy-{i}-{j}", "body": f"#{i}-{j}"})
                for i, sender in enumerate(senders)
                for j in range(5)
            )
        )
        for sender in senders:
            await sender.close()
        return acks

    acks = run(burst())
    assert all(a["ok"] for a in acks), acks
    newest = max(a["message"]["id"] for a in acks)
    expect(doctor.locator("#chat-messages .chat-message")).to_have_count(55, timeout=20_000)
    doctor.wait_for_function(f"() => window.oblakoRoom.readMarked === {newest}", timeout=20_000)
    assert doctor.evaluate("() => window.oblakoRoom.socket.connected") is True
    assert doctor.evaluate("() => window.oblakoRoom.sid") == sid  # never cut off, never rejoined
    expect(doctor.locator("#room-status")).to_be_hidden()
    with app.app_context():
        mark = db.session.execute(
            select(ChatRead.last_read_id).where(
                ChatRead.user_id == doctor_user, ChatRead.consultation_id == w.consultation_id
            )
        ).scalar()
    assert mark == newest


# Both pages drop the ICE candidates the other side trickles: browser-to-browser cannot connect
# (as with UDP blocked and no TURN), while the relay's connections, whose candidates travel in
# the SDP (aiortc does not trickle), still can.
NO_DIRECT_PATH = """RTCPeerConnection.prototype.addIceCandidate = function () {
  return Promise.resolve();
};"""


def test_the_call_goes_through_the_relay_when_browser_to_browser_fails(
    app: Flask,
    room_world: RoomWorld,
    phone_page: Page,
    desk_page: Page,
    live_server: LiveServer,
) -> None:
    w = room_world
    patient, doctor = phone_page, desk_page
    for page in (patient, doctor):
        page.add_init_script(NO_DIRECT_PATH)
    join_and_admit(patient, doctor, w, live_server)

    # Two direct tries do not connect; both pages switch to the relay by themselves.
    for page in (patient, doctor):
        page.wait_for_function("() => window.oblakoRoom.relayFallback", timeout=60_000)
        page.wait_for_function(
            "() => window.oblakoRoom.relay.pub && ['connected', 'completed']"
            ".includes(window.oblakoRoom.relay.pub.iceConnectionState)",
            timeout=30_000,
        )
    wait_for_frames(patient, 10, timeout_ms=40_000)
    wait_for_frames(doctor, 10, timeout_ms=40_000)
    # The voice too: the relay forwards the page's Opus packets, and the other page plays them
    # (samples decoded from packets, not concealment of missing ones).
    for page in (patient, doctor):
        audio = wait_until(page, RELAY_AUDIO_JS, lambda a: a["packets"] > 100, 20_000)
        assert audio["concealed"] < 0.2 * audio["samples"], audio
    for page in (patient, doctor):
        assert page.evaluate("() => Object.keys(window.oblakoRoom.peers).length") == 0
        assert page.evaluate("() => Object.keys(window.oblakoRoom.relay.subs).length") == 1
        expect(page.locator("#remote-videos video")).to_have_count(1)


def test_the_call_outlives_a_media_server_restart(
    app: Flask,
    room_world: RoomWorld,
    phone_page: Page,
    desk_page: Page,
    live_server: LiveServer,
    media_process_factory,
) -> None:
    """Issue 18, item 5 (the room's side): a real media server process dies mid-call. The call,
    browser to browser, goes on and both pages say the chat is unavailable meanwhile; when the
    process is back the pages reconnect by themselves, the patient is let straight back in (not
    into the waiting room) and the chat works again, over the very same media connection."""
    media = media_process_factory(origins=live_server.url)
    app.config["MEDIA_PUBLIC_URL"] = media.url  # room_world restores the thread's URL after
    w = room_world
    patient, doctor = phone_page, desk_page
    join_and_admit(patient, doctor, w, live_server)
    wait_for_frames(patient, 0)
    wait_for_frames(doctor, 0)
    before = doctor.evaluate(PEER_IDS)
    patient_pc = patient.evaluate(PEER_IDS)

    media.kill()
    for page in (patient, doctor):
        expect(page.locator("#room-status")).to_contain_text(
            "чат временно недоступен, звонок продолжается"
        )
    wait_for_frames(patient, frames(patient) + 10)
    wait_for_frames(doctor, frames(doctor) + 10)

    media.start()  # the same port, as run.py or systemd restarts it
    for page in (patient, doctor):
        page.wait_for_function(
            "() => window.oblakoRoom.socket.connected && window.oblakoRoom.state === 'admitted'",
            timeout=30_000,
        )
    expect(doctor.locator("#waiting-list .waiting-participant")).to_have_count(0)
    expect(patient.locator("#room-status")).not_to_contain_text("подождите")
    patient.locator("#chat-input").fill("Я снова на связи.")
    patient.locator("#chat-send").click()
    expect(doctor.locator("#chat-messages .chat-body").last).to_have_text("Я снова на связи.")
    assert doctor.evaluate(PEER_IDS) == before
    assert patient.evaluate(PEER_IDS) == patient_pc
    wait_for_frames(doctor, frames(doctor) + 10)
