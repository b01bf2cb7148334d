"""A new patient on a phone: registers, confirms the phone with the SMS code, lands in the
cabinet, uploads a PDF, sees it listed.

Driven through headless Chromium against the live server, the way a patient does it: every
step is a tap or typing in a real page (the code is read from the outbox table, as staff read
it on the embedded default), with CSRF, cookies and a multipart upload as the browser
sends them. Afterwards the database and the storage are checked too, so the test cannot pass
on a page that merely looks right.
"""

from __future__ import annotations

import hashlib
import io
import re
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from flask import Flask
from playwright.sync_api import Page, expect

from tests.conftest import registration_code

if TYPE_CHECKING:
    from tests.e2e.conftest import LiveServer

pytestmark = [pytest.mark.e2e, pytest.mark.once]

CYRILLIC = re.compile(r"[А-Яа-яЁё]")

PATIENT = {
    "surname": "Соколова",
    "name": "Дарья",
    "patronymic": "Андреевна",
    "birth_date": date(1979, 4, 23),
    "sex": "female",
    # Typed the way people write it; the service stores +79141234567 (E.164) as the login.
    "phone": "+7 914 123-45-67",
    "phone_e164": "+79141234567",
    "email": "sokolova@example.org",
    "region": "Республика Саха (Якутия)",
    "timezone": "Asia/Yakutsk",
    "password": "Oblako2026vesna",
}
UPLOAD_NAME = "Выписка.pdf"

# The field ids WTForms gives the registration form (views/registration.py), in form order.
REGISTRATION_FIELDS = (
    "surname",
    "name",
    "patronymic",
    "birth_date",
    "sex",
    "phone",
    "email",
    "region",
    "timezone",
    "password",
    "password_confirm",
    "consent",
)
# What an untranslated page would show instead (the msgids).
ENGLISH_LABELS = {
    "Surname",
    "First name",
    "Patronymic",
    "Date of birth",
    "Sex",
    "Mobile phone",
    "E-mail (optional)",
    "Region",
    "Time zone",
    "Password",
    "Repeat the password",
    "Registration",
    "Register",
}


def make_pdf() -> bytes:
    """A real one-page PDF (fpdf2), which the upload's content check parses with pypdf.

    The text is ASCII on purpose: the core Helvetica font has no Cyrillic, and the file's
    content is not what this test is about — its Cyrillic *name* is.
    """
    from fpdf import FPDF
    from pypdf import PdfReader

    pdf = FPDF(format="A4")
    pdf.add_page()
    pdf.set_font("Helvetica", size=14)
    pdf.cell(text="Discharge summary - Oblako e2e test")
    data = bytes(pdf.output())
    assert len(PdfReader(io.BytesIO(data)).pages) == 1  # the fixture itself is a valid PDF
    return data


def assert_russian_form(page: Page) -> None:
    """Every label of the form is Russian: Cyrillic, and not the English original."""
    for field_id in REGISTRATION_FIELDS:
        label = page.locator(f"label[for='{field_id}']")
        if field_id == "consent":  # a checkbox sits inside its label (no `for`)
            label = page.locator("label", has=page.locator("#consent"))
        text = " ".join(label.first.inner_text().split()).rstrip(" *")
        assert CYRILLIC.search(text), f"label of {field_id!r} is not in Russian: {text!r}"
        assert text not in ENGLISH_LABELS, f"label of {field_id!r} is untranslated: {text!r}"
    heading = page.get_by_role("heading", level=1).first.inner_text()
    assert CYRILLIC.search(heading), f"the page heading is not in Russian: {heading!r}"
    button = page.locator("form button[type=submit]").last.inner_text().strip()
    assert button == "Зарегистрироваться", f"submit button: {button!r}"


@pytest.fixture
def catalogue(app: Flask) -> None:
    """The document types: reference data a deployment has before any patient arrives (the
    per-test clean database has only the roles)."""
    from app.catalogue import load_catalogue
    from app.extensions import db

    with app.app_context():
        load_catalogue()
        db.session.commit()


def test_new_patient_registers_on_a_phone_and_uploads_a_pdf(
    app: Flask, catalogue: None, live_server: LiveServer, phone_page: Page
) -> None:
    page = phone_page
    pdf_bytes = make_pdf()

    # --- registration ----------------------------------------------------------------------
    response = page.goto(live_server("/register/"))
    assert response is not None and response.status == 200, "the registration page must open"
    assert_russian_form(page)

    page.locator("#surname").fill(PATIENT["surname"])
    page.locator("#name").fill(PATIENT["name"])
    page.locator("#patronymic").fill(PATIENT["patronymic"])
    # An <input type=date> takes the ISO value whatever the locale shows.
    page.locator("#birth_date").fill(PATIENT["birth_date"].isoformat())
    page.locator("#sex").select_option(PATIENT["sex"])
    page.locator("#phone").fill(PATIENT["phone"])
    page.locator("#email").fill(PATIENT["email"])
    page.locator("#region").fill(PATIENT["region"])
    page.locator("#timezone").select_option(PATIENT["timezone"])
    page.locator("#password").fill(PATIENT["password"])
    page.locator("#password_confirm").fill(PATIENT["password"])
    page.locator("#consent").check()
    # tap(): touch events, as on a phone (the context has is_mobile and has_touch).
    page.locator("form[action$='/register/'] button[type=submit]").tap()

    # --- the code from the SMS -------------------------------------------------------------
    expect(page).to_have_url(re.compile(r"/register/code$"))
    expect(page.get_by_role("heading", name="Подтверждение телефона")).to_be_visible()
    code_input = page.locator("#code")
    expect(code_input).to_have_attribute("inputmode", "numeric")
    expect(code_input).to_have_attribute("autocomplete", "one-time-code")
    assert_no_patient_yet(app)
    code_input.fill(registration_code(app, PATIENT["phone_e164"]))
    page.locator("form[action$='/register/code'] button[type=submit]").tap()

    # --- the cabinet -----------------------------------------------------------------------
    expect(page).to_have_url(re.compile(r"/cabinet/?$"))
    tiles = page.locator(".oblako-cabinet-tiles")
    for label in ("Мои документы", "Консультации", "Уведомления", "Профиль"):
        expect(tiles.get_by_role("link", name=label)).to_be_visible()
    expect(page.get_by_text(f"{PATIENT['name']} {PATIENT['patronymic']}")).to_be_visible()

    # --- «Мои документы»: upload a PDF with a Cyrillic name ----------------------------------
    tiles.get_by_role("link", name="Мои документы").tap()
    expect(page).to_have_url(re.compile(r"/cabinet/documents/?$"))
    expect(page.get_by_role("heading", name="Мои документы")).to_be_visible()
    page.get_by_role("link", name="Загрузить документ").tap()
    expect(page).to_have_url(re.compile(r"/cabinet/documents/upload$"))

    page.locator("#file").set_input_files(
        files=[{"name": UPLOAD_NAME, "mimeType": "application/pdf", "buffer": pdf_bytes}]
    )
    page.locator("#document_type").select_option(label="Выписка")
    page.locator("form[action$='/cabinet/documents/upload'] button[type=submit]").tap()

    # Back on the list, the document is there under the name the patient gave it.
    expect(page).to_have_url(re.compile(r"/cabinet/documents/?$"))
    expect(page.get_by_text("Документ загружен.")).to_be_visible()
    row = page.locator("table tbody tr", has_text=UPLOAD_NAME)
    expect(row).to_have_count(1)
    expect(row).to_be_visible()
    expect(row).to_contain_text("Выписка")  # the document type, in Russian

    # --- what the server recorded ----------------------------------------------------------
    assert_stored(app, pdf_bytes)


def assert_no_patient_yet(app: Flask) -> None:
    """The form alone creates no account: the code step is what does."""
    from sqlalchemy import func, select

    from app.extensions import db
    from models import Patient

    with app.app_context():
        assert db.session.execute(select(func.count()).select_from(Patient)).scalar() == 0
        db.session.rollback()


def assert_stored(app: Flask, pdf_bytes: bytes) -> None:
    """The registration and the upload really happened, for this patient, intact."""
    from sqlalchemy import select

    from app.extensions import db
    from models import Consent, ConsentKind, MedicalDocument, Patient

    with app.app_context():
        patient = db.session.execute(
            select(Patient).where(Patient.phone == PATIENT["phone_e164"])
        ).scalar_one()
        assert (patient.surname, patient.name, patient.patronymic) == (
            PATIENT["surname"],
            PATIENT["name"],
            PATIENT["patronymic"],
        )
        assert patient.birth_date == PATIENT["birth_date"]
        assert (patient.region, patient.timezone) == (PATIENT["region"], PATIENT["timezone"])
        assert patient.user.username == PATIENT["phone_e164"]
        consent = db.session.execute(
            select(Consent).where(Consent.user_id == patient.user_id)
        ).scalar_one()
        assert consent.kind == ConsentKind.PERSONAL_DATA and consent.withdrawn_at is None

        doc = db.session.execute(
            select(MedicalDocument).where(MedicalDocument.patient_id == patient.id)
        ).scalar_one()
        assert doc.original_name == UPLOAD_NAME
        assert doc.content_type == "application/pdf"
        assert doc.size_bytes == len(pdf_bytes)
        assert doc.sha256 == hashlib.sha256(pdf_bytes).hexdigest()
        assert doc.uploaded_by_id == patient.user_id
        # Stored under a random key, never under the patient's file name.
        assert "Выписка" not in doc.storage_key
        stored = [p for p in Path(app.config["STORAGE_DIR"]).rglob("*") if p.is_file()]
        assert any(p.read_bytes() == pdf_bytes for p in stored), "the PDF is not in storage"
        db.session.rollback()


# --- layout on a phone -------------------------------------------------------------------------

# Measured in the page: how far the document is wider than the phone, and the leftmost edge of
# the main heading and form (negative = cut off at the left edge of the screen). window.innerWidth
# is no yardstick: a mobile browser widens its layout viewport to whatever the content needs.
LAYOUT_JS = """(phoneWidth) => {
  const left = [...document.querySelectorAll('h1, h2, form, table')]
    .filter((e) => !e.closest('.navbar'))
    .map((e) => Math.round(e.getBoundingClientRect().left));
  return {
    overflow: document.documentElement.scrollWidth - phoneWidth,
    minLeft: left.length ? Math.min(...left) : 0,
  };
}"""


def test_patient_pages_fit_a_phone_screen(
    app: Flask, catalogue: None, live_server: LiveServer, phone_page: Page, make_patient
) -> None:
    from tests.conftest import TEST_PASSWORD, patient_username

    """No page of the patient's path scrolls sideways or cuts text off on a 390 px phone.

    Known failures (reported to the lead, Nov 2026):
    - oblako.css narrows `.container` padding to 8px under 600px but keeps Bootstrap's -15px
      `.row` margins: every page is 7px wider than the phone;
    - documents.html / documents_upload.html put their content straight into `.row` without a
      `.col-xs-12`: headings and form start 7px left of the screen edge (cut off).
    """
    page = phone_page
    width = page.viewport_size["width"]
    problems: list[str] = []

    def measure(path: str) -> None:
        response = page.goto(live_server(path))
        assert response is not None and response.status == 200, path
        figures = page.evaluate(LAYOUT_JS, width)
        if figures["overflow"] > 0:
            problems.append(f"{path}: {figures['overflow']}px wider than the {width}px phone")
        if figures["minLeft"] < 0:
            problems.append(f"{path}: content cut off {-figures['minLeft']}px at the left edge")

    measure("/register/")
    username = patient_username(app, make_patient())
    page.goto(live_server("/login/"))
    page.locator("#username").fill(username)
    page.locator("#password").fill(TEST_PASSWORD)
    page.locator("form input[type=submit], form button[type=submit]").first.tap()
    expect(page).to_have_url(re.compile(r"/cabinet/?$"))
    for path in ("/cabinet/", "/cabinet/documents/", "/cabinet/documents/upload", "/profile/"):
        measure(path)
    assert not problems, "pages do not fit a phone:\n" + "\n".join(problems)
