"""A sound-only consultation (issue 17, item 3): the room asks the phone for the microphone
alone — no camera track is ever taken — and says the consultation is by sound only."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from typing import TYPE_CHECKING

import pytest
from flask import Flask
from playwright.sync_api import Page, expect

from tests.conftest import patient_username
from tests.e2e.conftest import assert_no_horizontal_overflow, sign_in

if TYPE_CHECKING:
    from tests.e2e.conftest import LiveServer

pytestmark = [pytest.mark.e2e, pytest.mark.once]

TRACKS_JS = """() => {
  const s = document.getElementById("local-video").srcObject;
  return s ? [s.getAudioTracks().length, s.getVideoTracks().length] : null;
}"""


@pytest.mark.parametrize(("mode", "tracks"), [("audio", [1, 0]), ("video", [1, 1])])
def test_the_room_asks_for_what_the_mode_needs(
    app: Flask,
    make_patient,
    make_doctor,
    media_server,
    phone_page: Page,
    live_server: LiveServer,
    mode: str,
    tracks: list[int],
) -> None:
    from app.extensions import db
    from models import Consultation, utcnow

    doctor_id = make_doctor(is_duty=True)
    patient_id = make_patient(surname="Тихонова")
    with app.app_context():
        c = Consultation(
            public_id=uuid.uuid4(),
            kind="duty",
            status="scheduled",
            mode=mode,
            topic="lifestyle",
            patient_id=patient_id,
            doctor_id=doctor_id,
            question="Можно ли мне бегать?",
            scheduled_at=utcnow() + timedelta(minutes=5),
            duration_minutes=30,
        )
        db.session.add(c)
        db.session.commit()
        public_id = c.public_id
    previous = app.config.get("MEDIA_PUBLIC_URL", "")
    app.config["MEDIA_PUBLIC_URL"] = media_server.url
    try:
        page = phone_page
        page.set_viewport_size({"width": 360, "height": 740})
        sign_in(page, live_server, patient_username(app, patient_id))
        page.goto(live_server(f"/cabinet/consultations/{public_id}"))
        expect(page.locator("#consultation-mode")).to_have_attribute("data-mode", mode)
        assert_no_horizontal_overflow(page)
        page.locator("#join-room").click()
        expect(page).to_have_url(re.compile(r"/media/room/"))
        expect(page.locator("#room")).to_have_attribute("data-mode", mode)
        page.wait_for_function(f"() => {{ const t = ({TRACKS_JS})(); return t !== null; }}")
        assert page.evaluate(TRACKS_JS) == tracks
        if mode == "audio":
            expect(page.locator("#precall")).to_have_text(
                "Микрофон работает. Эта консультация — только со звуком."
            )
            expect(page.locator("#btn-camera")).to_be_hidden()
        else:
            expect(page.locator("#precall")).to_contain_text("Камера и микрофон работают")
    finally:
        app.config["MEDIA_PUBLIC_URL"] = previous
