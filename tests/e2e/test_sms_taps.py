"""Issue 17, items 4 and 10: from the referral SMS to her documents on the referral, on a phone,
in at most 6 taps — counted, not assumed.

The import runs as the worker runs it (services, the sign-in address of the live server); the
SMS is read where the service leaves it (the outbox). The patient, on a phone-sized Chromium,
taps the SMS link, «Войти», ticks the consent, saves her own password (typing is not a tap),
picks a file (not a tap either) and adds it to the referral. TapCounter counts what the pages
saw: clicks and form submissions; the count is printed for the integrator's report.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pytest
from flask import Flask
from playwright.sync_api import Page, expect
from sqlalchemy import select

from tests.conftest import make_pdf
from tests.e2e.conftest import PHONE, TapCounter
from tests.referral_tables import invitation, row, xlsx

if TYPE_CHECKING:
    from tests.e2e.conftest import LiveServer

pytestmark = [pytest.mark.e2e, pytest.mark.once]

UUID_RE = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
MAX_TAPS = 6  # issue 17, item 10
NEW_PASSWORD = "Vesna2026sad"
FILE_NAME = "Выписка из карты.pdf"


def import_one_referral(app: Flask, manager: str, sign_in_url: str) -> tuple[str, str]:
    """A centre's table of one row, validated and imported: (her phone, the SMS she got)."""
    from app.extensions import db
    from app.referrals.importer import run_import
    from app.referrals.validation import validate_upload
    from models import OblakoUser, OutboundChannel, OutboundMessage

    with app.app_context():
        user = db.session.execute(
            select(OblakoUser).where(OblakoUser.username == manager)
        ).scalar_one()
        imp = validate_upload(user, "направления.xlsx", xlsx([row()]))
        db.session.commit()
        run_import(imp.id, sign_in_url=sign_in_url)
        message = db.session.execute(
            select(OutboundMessage).where(OutboundMessage.channel == OutboundChannel.SMS)
        ).scalar_one()
        return message.recipient, message.body


def documents_of(app: Flask, public_id: str) -> list[str]:
    import uuid

    from app.extensions import db
    from models import Consultation

    with app.app_context():
        c = db.session.execute(
            select(Consultation).where(Consultation.public_id == uuid.UUID(public_id))
        ).scalar_one()
        names = [d.original_name for d in c.documents]
        db.session.rollback()
        return names


def test_referral_sms_to_her_documents_in_six_taps_or_fewer(
    app: Flask, live_server: LiveServer, catalogue, make_staff, phone_page: Page, browser
) -> None:
    phone, body = import_one_referral(app, make_staff("Manager"), live_server("/login/"))
    sms = invitation(body)
    assert sms["login"] == phone and sms["url"] == live_server("/login/")
    assert sms["link"].startswith(live_server("/s/"))

    page = phone_page
    taps = TapCounter(page.context)

    # 1. The link in the SMS.
    taps.open(page, sms["link"])
    expect(page.locator("h1")).to_have_text("Вход в «Облако здоровья»")
    # 2. «Войти»: signed in, on her own password (the one from the SMS is not asked).
    page.get_by_role("button", name="Войти").tap()
    expect(page).to_have_url(re.compile(r"/account/password/?$"))
    expect(page.locator("#current_password")).to_have_count(0)
    page.locator("#new_password").fill(NEW_PASSWORD)
    page.locator("#confirm_password").fill(NEW_PASSWORD)
    # 3. The consent; 4. save: on to the referral that waits for her documents.
    page.locator("#consent").check()
    page.get_by_role("button", name="Сменить пароль").tap()
    expect(page).to_have_url(re.compile(rf"/cabinet/consultations/{UUID_RE}$"))
    public_id = page.url.rsplit("/", 1)[1]
    expect(page.locator("#awaiting-documents")).to_be_visible()
    # Picking the file is not a tap; 5. adding it to the referral is.
    page.locator("#file").set_input_files(
        files=[{"name": FILE_NAME, "mimeType": "application/pdf", "buffer": make_pdf()}]
    )
    page.get_by_role("button", name="Добавить к консультации").tap()
    expect(page.get_by_role("link", name=re.compile(re.escape(FILE_NAME)))).to_be_visible()
    assert documents_of(app, public_id) == [FILE_NAME]

    page.evaluate("0")  # every tap the pages reported has reached the counter
    report = taps.report("referral SMS link → her documents on the referral")
    assert [t.kind for t in taps.taps].count("open") == 1, report
    assert taps.count <= MAX_TAPS, report

    # The same link again, on another phone: used once, it says so in Russian and offers the
    # sign-in with phone and password.
    other = browser.new_context(base_url=live_server.url, **PHONE)
    try:
        again = other.new_page()
        response = again.goto(sms["link"])
        assert response is not None and response.status == 410
        expect(again.locator("#sign-in-link-refused")).to_contain_text("По этой ссылке уже входили")
        again.get_by_role("link", name="Войти по телефону и паролю").tap()
        expect(again).to_have_url(re.compile(r"/login/?$"))
        expect(again.get_by_label("Телефон (логин)")).to_be_visible()
    finally:
        other.close()
    assert not live_server.errors, "\n".join(live_server.errors)


def test_tap_counter_counts_clicks_and_submissions_not_typing(
    live_server: LiveServer, phone_page: Page
) -> None:
    """The counter itself: typing is no tap, a label's click (and the click it passes to its
    field) is one, the Enter key that submits a form is one, a submit button's click and the
    submission it causes are one."""
    page = phone_page
    taps = TapCounter(page.context)
    taps.open(page, live_server("/login/"))  # 1
    page.locator("#username").fill("+79990000000")
    page.locator("#password").fill("Wrong-password-1")
    page.evaluate("0")
    assert taps.count == 1, taps.report("typing")
    page.locator("label[for=username]").click()  # 2: the label, and the field it focuses
    # 3: the Enter key submits (the browser does it as a click of the form's button)
    page.locator("#password").press("Enter")
    expect(page.locator(".alert")).to_be_visible()
    page.locator("#username").fill("+79990000000")
    page.locator("#password").fill("Wrong-password-1")
    page.get_by_role("button", name="Войти").tap()  # 4: the button and its submission
    expect(page.locator(".alert")).to_be_visible()
    page.evaluate("0")
    report = taps.report("tap counter self-check")
    assert [t.kind for t in taps.taps] == ["open", "click", "click", "click"], report
    assert [t.what for t in taps.taps[1:]] == [
        "label «Телефон (логин)»",
        "button «Войти»",
        "button «Войти»",
    ], report
