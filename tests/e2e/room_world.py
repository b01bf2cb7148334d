"""The consultation room's world for test_room_{call,page,relay,recovery}.py: a centre
consultation whose room is open, its pages pointed at a real media server (`open_room`), and the
steps they share: counting decoded video frames, joining and letting the patient in."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from flask import Flask
from playwright.sync_api import Page

from tests.conftest import patient_username
from tests.e2e.conftest import enter_room_from_consultation_page, sign_in, wait_until

if TYPE_CHECKING:
    from tests.e2e.conftest import LiveServer

FRAMES_JS = "() => window.oblakoRoom.inboundVideoFrames()"


@dataclass
class RoomWorld:
    public_id: uuid.UUID
    consultation_id: int
    patient_username: str
    patient_name: str
    doctor_username: str


def open_room(
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


def join_and_admit(patient: Page, doctor: Page, w: RoomWorld, live_server: LiveServer) -> None:
    sign_in(patient, live_server, w.patient_username)
    enter_room_from_consultation_page(patient, live_server(f"/cabinet/consultations/{w.public_id}"))
    patient.locator("#btn-join").click()
    sign_in(doctor, live_server, w.doctor_username)
    enter_room_from_consultation_page(doctor, live_server(f"/care/consultations/{w.public_id}"))
    doctor.locator("#btn-join").click()
    doctor.locator("#waiting-list button.admit").click()
