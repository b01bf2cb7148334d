"""The patient's lists on a small phone (issue 17, item 1): «Консультации» and «Мои документы»
as cards at 360×740, each with its status, time, doctor and centre, and the next action on
screen — no sideways scrolling anywhere on the page."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest
from flask import Flask
from playwright.sync_api import Page, expect

from tests.conftest import add_shift, login, patient_username, tomorrow_at
from tests.consultation_world import make_consultation
from tests.e2e.conftest import assert_no_horizontal_overflow, sign_in

if TYPE_CHECKING:
    from tests.consultation_world import World
    from tests.e2e.conftest import LiveServer

pytestmark = [pytest.mark.e2e, pytest.mark.once]

SMALL_PHONE = {"width": 360, "height": 740}
LONG_CENTRE = "Федеральный центр сердечно-сосудистой хирургии имени академика Б. А. Королёва"


def in_viewport(page: Page, locator) -> None:
    """The element is laid out inside the screen's width (it may be further down the page)."""
    expect(locator).to_be_visible()
    box = locator.bounding_box()
    assert box is not None
    assert box["x"] >= 0 and box["x"] + box["width"] <= SMALL_PHONE["width"], box


def test_consultations_and_documents_fit_a_small_phone(
    app: Flask, world: World, phone_page: Page, live_server: LiveServer
) -> None:
    from app.extensions import db
    from models import Doctor, MedicalCenter

    with app.app_context():
        db.session.get(MedicalCenter, world.centre1).name = LONG_CENTRE
        db.session.commit()
        doctor_id = world.doctors["doctor_c1"]
        doctor_name = db.session.get(Doctor, doctor_id).full_name
    soon = datetime.now(UTC) + timedelta(minutes=5)
    scheduled = make_consultation(
        app, world, status="scheduled", doctor_id=doctor_id, scheduled_at=soon
    )
    needs = make_consultation(app, world, status="needs_documents")
    page = phone_page
    page.set_viewport_size(SMALL_PHONE)
    sign_in(page, live_server, patient_username(app, world.patient))

    page.goto(live_server("/cabinet/consultations/"))
    assert_no_horizontal_overflow(page)
    card = page.locator(f"tr[data-consultation='{scheduled}']")
    for text in ("Назначена", doctor_name, LONG_CENTRE):
        expect(card).to_contain_text(text)
    in_viewport(page, card.locator(".consultation-status"))
    in_viewport(page, card.locator(".consultation-join"))
    in_viewport(page, card.locator(".consultation-cancel"))
    expect(card.locator(".consultation-join")).to_have_text("Войти в консультацию")
    other = page.locator(f"tr[data-consultation='{needs}']")
    in_viewport(page, other.locator(".consultation-add-documents"))
    expect(other.locator(".consultation-join")).to_have_count(0)

    # «Добавить документы» leads to the consultation's form for it.
    other.locator(".consultation-add-documents").click()
    expect(page.locator("#add-documents")).to_be_visible()
    assert_no_horizontal_overflow(page)

    page.goto(live_server("/cabinet/documents/"))
    assert_no_horizontal_overflow(page)
    row = page.locator("tr.document-row", has_text="Заключение.pdf")
    for label in ("Размер", "Загружен", "Файл"):
        in_viewport(page, row.locator(f"td[data-label^='{label}']"))
    for action in (".document-view", ".document-download", ".document-delete"):
        in_viewport(page, row.locator(action))

    # «Кто открывал мои документы»: the doctor's look at her ECG, as a card.
    doctor = app.test_client()
    with app.app_context():
        doctor_user = db.session.get(Doctor, doctor_id).user.username
    login(doctor, doctor_user)
    assert doctor.get(f"/staff/documents/{world.ecg}/").status_code == 200
    with page.expect_navigation():  # the next page, not the one it leaves
        page.get_by_role("link", name="Кто открывал мои документы").click()
    assert_no_horizontal_overflow(page)
    reading = page.locator("tr.reading-row").first
    expect(reading).to_contain_text(doctor_name)
    in_viewport(page, reading.locator(".reading-organisation"))
    expect(reading.locator(".reading-organisation")).to_have_text(LONG_CENTRE)


def test_booking_by_topic_fits_a_small_phone(
    app: Flask, make_patient, make_doctor, phone_page: Page, live_server: LiveServer
) -> None:
    add_shift(app, make_doctor(is_duty=True), tomorrow_at(6), slots=6, topic_codes="lifestyle")
    page = phone_page
    page.set_viewport_size(SMALL_PHONE)
    sign_in(page, live_server, patient_username(app, make_patient()))
    page.goto(live_server("/cabinet/booking/"))
    assert_no_horizontal_overflow(page)
    with page.expect_navigation():  # the next page, not the one it leaves
        page.get_by_role("link", name="Здоровый образ жизни").click()
    assert_no_horizontal_overflow(page)
    slots = page.locator("details.oblako-day[open] a.oblako-slot")
    expect(slots).to_have_count(6)
    in_viewport(page, slots.last)
    with page.expect_navigation():  # the next page, not the one it leaves
        slots.first.click()
    assert_no_horizontal_overflow(page)
    expect(page.get_by_label("Только звук (при слабом интернете)")).not_to_be_checked()
    expect(page.get_by_label("Видеосвязь")).to_be_checked()
