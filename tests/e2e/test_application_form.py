"""«Новая заявка» on a small phone (issue 17, item 2): the checklist names what is missing, she
adds it right there (two pages of a conclusion at once), the form says when all is there and
the application goes with every file — no detour through «Мои документы», nothing retyped."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pytest
from flask import Flask
from playwright.sync_api import Page, expect
from sqlalchemy import select

from tests.conftest import make_image, make_pdf, patient_username
from tests.e2e.conftest import assert_no_horizontal_overflow, sign_in

if TYPE_CHECKING:
    from tests.consultation_world import World
    from tests.e2e.conftest import LiveServer

pytestmark = [pytest.mark.e2e, pytest.mark.once]

COMPLAINTS = "Перебои в работе сердца по ночам, одышка при подъёме по лестнице"


def test_missing_documents_are_added_on_the_checklist(
    app: Flask, world: World, phone_page: Page, live_server: LiveServer
) -> None:
    from app.extensions import db
    from models import Consultation, Disease

    with app.app_context():
        i48 = db.session.get(Disease, world.disease_i48)
        label = f"{i48.icd10_code} {i48.name}"
    page = phone_page
    page.set_viewport_size({"width": 360, "height": 740})
    # The other patient has an ECG in «Мои документы» but no doctor's conclusion.
    sign_in(page, live_server, patient_username(app, world.other_patient))
    page.goto(live_server(f"/cabinet/applications/new?centre={world.centre1_public}"))
    expect(page.locator("#checklist")).to_be_hidden()
    page.locator("#disease").select_option(label=label)
    assert_no_horizontal_overflow(page)

    lines = page.locator("#checklist .checklist-item:visible")
    expect(lines).to_have_count(2)
    conclusion = lines.filter(has_text="Заключение врача")
    ecg = lines.filter(has_text="ЭКГ")
    # Her ECG is ticked for her (the newest of its type); the conclusion is missing.
    expect(ecg).to_contain_text("есть")
    expect(ecg).to_contain_text("Чужое.pdf")
    expect(conclusion).to_contain_text("не хватает")
    expect(page.locator("#missing-summary")).to_have_text("Ещё не хватает: Заключение врача.")
    photo = conclusion.locator('input[name^="photo-"]')
    expect(photo).to_have_attribute("capture", "environment")

    page.locator("#complaints").fill(COMPLAINTS)
    page.get_by_role("button", name="Отправить заявку").tap()
    expect(page.locator("#form-problem")).to_contain_text("Ещё не хватает: Заключение врача.")
    expect(conclusion.locator('input[name^="files-"]')).to_be_focused()

    # Two pages of the conclusion at once, on its own line.
    conclusion.locator('input[name^="files-"]').set_input_files(
        files=[
            {"name": "Заключение стр1.pdf", "mimeType": "application/pdf", "buffer": make_pdf()},
            {"name": "Заключение стр2.png", "mimeType": "image/png", "buffer": make_image("PNG")},
        ]
    )
    expect(conclusion).to_contain_text("есть")
    expect(conclusion).to_contain_text("Заключение стр1.pdf, Заключение стр2.png")
    expect(page.locator("#missing-summary")).to_have_text("Все нужные документы есть.")
    expect(page.locator("#complaints")).to_have_value(COMPLAINTS)
    assert_no_horizontal_overflow(page)

    page.get_by_role("button", name="Отправить заявку").tap()
    expect(page).to_have_url(re.compile(r"/cabinet/consultations/[0-9a-f-]{36}$"))
    expect(page.locator(".alert", has_text="Заявка отправлена")).to_be_visible()
    assert_no_horizontal_overflow(page)
    with app.app_context():
        c = db.session.execute(
            select(Consultation).where(Consultation.patient_id == world.other_patient)
        ).scalar_one()
        assert sorted(d.original_name for d in c.documents) == [
            "Заключение стр1.pdf",
            "Заключение стр2.png",
            "Чужое.pdf",
        ]
        assert c.complaints == COMPLAINTS
    assert not live_server.errors, "\n".join(live_server.errors)
