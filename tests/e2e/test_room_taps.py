"""Issue 17, item 10 (the room's pathway): taps on a phone from the "consultation scheduled"
notification to being admitted to the video room, counted by TapCounter (clicks and form
submissions; typing excluded). The target: at most 3."""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import pytest
from flask import Flask
from playwright.sync_api import Page, expect

from tests.conftest import patient_username
from tests.e2e.conftest import TapCounter, sign_in

if TYPE_CHECKING:
    from tests.e2e.conftest import LiveServer

# Taps in the browser; the database only stages a scheduled consultation: runs once, on SQLite.
pytestmark = [pytest.mark.e2e, pytest.mark.once]

DOCTOR_TZ = "Europe/Moscow"  # create_doctor's default
MAX_TAPS = 3


def test_from_the_scheduled_notification_to_the_call_in_three_taps(
    app: Flask,
    make_patient,
    make_center,
    make_doctor,
    media_server,
    phone_page: Page,
    desk_page: Page,
    live_server: LiveServer,
) -> None:
    from app.consultations.transitions import schedule_consultation
    from app.extensions import db
    from models import Consultation, OblakoUser, Patient

    centre = make_center("Кардиоцентр «Пульс»")
    make_doctor(username="taps_doctor", center_id=centre)
    patient_id = make_patient(surname="Тапова", name="Нина")
    # The doctor schedules it (the real transition: it writes the patient's notification),
    # a few minutes ahead so that the room is already open.
    start = (datetime.now(ZoneInfo(DOCTOR_TZ)) + timedelta(minutes=5)).replace(microsecond=0)
    with app.app_context():
        c = Consultation(
            public_id=uuid.uuid4(),
            kind="centre_request",
            status="requested",
            patient_id=patient_id,
            center_id=centre,
            complaints="Перебои в работе сердца",
        )
        db.session.add(c)
        db.session.flush()
        doctor_user = db.session.query(OblakoUser).filter_by(username="taps_doctor").one()
        schedule_consultation(
            c, by=doctor_user, day=start.date(), at=start.time(), duration_minutes=30
        )
        db.session.commit()
        public_id = c.public_id
        number = str(c)
        username = patient_username(app, patient_id)
        assert db.session.get(Patient, patient_id).user_id
    previous = app.config.get("MEDIA_PUBLIC_URL", "")
    app.config["MEDIA_PUBLIC_URL"] = media_server.url
    try:
        patient, doctor = phone_page, desk_page
        sign_in(patient, live_server, username)
        taps = TapCounter(patient.context)  # counts from the next page on
        patient.goto(live_server("/notifications/"))
        note = patient.locator(".list-group-item", has_text=f"Консультация {number} назначена на")
        expect(note).to_have_count(1)

        note.get_by_role("link", name="Открыть").tap()  # 1
        patient.locator("#join-room").tap()  # 2
        expect(patient).to_have_url(re.compile(r"/media/room/"))
        expect(patient.locator("#precall")).to_contain_text("Камера и микрофон работают")
        patient.locator("#btn-join").tap()  # 3
        expect(patient.locator("#room-status")).to_contain_text("врач скоро пригласит вас")

        sign_in(doctor, live_server, "taps_doctor")
        doctor.goto(live_server(f"/media/room/{public_id}"))
        doctor.locator("#btn-join").click()
        doctor.locator("#waiting-list button.admit").click()
        patient.wait_for_function("() => window.oblakoRoom.state === 'admitted'")
        report = taps.report("scheduled notification → admitted to the room")
        assert 0 < taps.count <= MAX_TAPS, report
    finally:
        app.config["MEDIA_PUBLIC_URL"] = previous
