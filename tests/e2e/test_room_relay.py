"""The consultation room through the media server's relay, in real browsers: a guest by a
one-time link makes three, the doctor records with both consents (the pages publish to the
recorder), and the call falls back to the relay when browser-to-browser cannot connect."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from flask import Flask
from playwright.sync_api import Page, expect

from tests.e2e.conftest import wait_until
from tests.e2e.room_world import RoomWorld, frames, join_and_admit, open_room, wait_for_frames

if TYPE_CHECKING:
    from tests.e2e.conftest import LiveServer

pytestmark = [pytest.mark.e2e, pytest.mark.once]

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
ANNOUNCED = "() => Object.values(window.oblakoRoom.peers).some(p => p.announced)"


@pytest.fixture
def room_world(
    app: Flask, make_patient, make_center, make_doctor, media_server
) -> Iterator[RoomWorld]:
    """A consultation whose room is open: tests/e2e/room_world.py."""
    yield from open_room(app, make_patient, make_center, make_doctor, media_server)


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
