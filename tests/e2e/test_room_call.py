"""The consultation room in two real browsers against a real media server (issue 5): the
patient waits, the doctor lets them in, video both ways (WebRTC statistics), a dropped socket,
chat both ways, the end; and a busy chat that never gets its reader cut off."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from flask import Flask
from playwright.sync_api import Page, expect

from tests.e2e.conftest import enter_room_from_consultation_page, sign_in
from tests.e2e.room_world import RoomWorld, frames, open_room, wait_for_frames

if TYPE_CHECKING:
    from tests.e2e.conftest import LiveServer

pytestmark = [pytest.mark.e2e, pytest.mark.once]


@pytest.fixture
def room_world(
    app: Flask, make_patient, make_center, make_doctor, media_server
) -> Iterator[RoomWorld]:
    """A consultation whose room is open: tests/e2e/room_world.py."""
    yield from open_room(app, make_patient, make_center, make_doctor, media_server)


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
