"""Pathway 3 end to end: the manager imports the treating physicians' table, the patients get
their credentials by SMS, one of them signs in, uploads documents, and the centre's doctor
schedules the consultation.

Three people in three browser contexts of one Chromium: the manager and the doctor on desktops,
the patient on a phone. Each sees what the others did only through the live server. The SMS is
read where the service leaves it (the outbox table; the manager's «Исходящие сообщения» screen
lists it), and the patient signs in with exactly the login and password it carries.

What the pages showed is checked in the pages; what the server recorded is checked in the
database as well.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import pytest
from babel.dates import format_datetime
from flask import Flask
from playwright.sync_api import Page, expect

from tests.conftest import TEST_PASSWORD
from tests.e2e.conftest import ARTIFACTS, DEFAULT_TIMEOUT_MS, DESKTOP, _artifact_name
from tests.referral_tables import invitation

if TYPE_CHECKING:
    from tests.e2e.conftest import LiveServer

pytestmark = pytest.mark.e2e

UUID_RE = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"

# The template's first row as issue 4 spells it (not read from app.referrals: this is the check).
TEMPLATE_HEADERS = [
    "ФИО",
    "дата рождения",
    "пол",
    "телефон",
    "e-mail",
    "СНИЛС",
    "код МКБ-10",
    "заболевание из перечня",
    "центр",
    "направившая медицинская организация",
    "лечащий врач",
    "примечание",
]
CENTRE = "Кардиоцентр «Сердце»"
ICD10 = "I48"
# Imported patients have no time zone of their own: the service's default (Moscow) applies.
ZONE = "Europe/Moscow"
NEW_PASSWORD = "Oblako2025vesna"

# Three patients; the phones are written as people write them, the outbox has them in E.164.
PATIENTS = [
    ("Смирнова Ольга Викторовна", "12.04.1961", "ж", "+7 913 555-01-01", "+79135550101"),
    ("Кузнецов Андрей Павлович", "03.11.1958", "м", "8 (913) 555-01-02", "+79135550102"),
    ("Лебедева Ирина Сергеевна", "27.07.1970", "ж", "79135550103", "+79135550103"),
]


def make_pdf(text: str) -> bytes:
    """A real one-page PDF (fpdf2), ASCII text: the core font has no Cyrillic."""
    from fpdf import FPDF

    pdf = FPDF(format="A4")
    pdf.add_page()
    pdf.set_font("Helvetica", size=14)
    pdf.cell(text=text)
    return bytes(pdf.output())


def ru_datetime(moment: datetime, tz_name: str, fmt: str = "d MMMM y, HH:mm") -> str:
    return format_datetime(moment, fmt, tzinfo=ZoneInfo(tz_name), locale="ru")


def sign_in(page: Page, live_server: LiveServer, username: str, password: str) -> None:
    page.goto(live_server("/login/"))
    submit_sign_in(page, username, password)


def submit_sign_in(page: Page, username: str, password: str) -> None:
    page.locator("#username").fill(username)
    page.locator("#password").fill(password)
    page.locator("form input[type=submit], form button[type=submit]").first.click()
    expect(page).not_to_have_url(re.compile(r"/login/?$"))


def flash(page: Page):
    """The page's flashed messages (FAB renders them as Bootstrap alerts)."""
    return page.locator(".alert")


@pytest.fixture
def desk(request: pytest.FixtureRequest, browser, live_server: LiveServer):
    """Desktop browsers (own contexts, own cookies) made on demand; a screenshot of each on
    failure. The manager and the doctor each get one."""
    opened: list[tuple[str, object, Page]] = []

    def open_desk(who: str) -> Page:
        context = browser.new_context(base_url=live_server.url, **DESKTOP)
        context.set_default_timeout(DEFAULT_TIMEOUT_MS)
        page = context.new_page()
        opened.append((who, context, page))
        return page

    yield open_desk
    report = getattr(request.node, "rep_call", None)
    for who, context, page in opened:
        if report is not None and report.failed:
            ARTIFACTS.mkdir(exist_ok=True)
            stem = ARTIFACTS / f"{_artifact_name(request.node.nodeid)}_{who}"
            try:
                page.screenshot(path=f"{stem}.png", full_page=True)
                Path(f"{stem}.html").write_text(page.content(), encoding="utf-8")
                print(f"\n[e2e] {who}'s page: {stem}.png / .html (url: {page.url})")
            except Exception as exc:  # a dead page must not hide the test's own failure
                print(f"\n[e2e] could not save the {who}'s page: {exc}")
        context.close()


@dataclass
class ReferralWorld:
    manager_username: str
    doctor_username: str
    disease_name: str


@pytest.fixture
def referral_world(app: Flask, make_center, make_doctor, make_staff) -> ReferralWorld:
    """The catalogue, a cardiology centre taking I48 and I10, its doctor, and a manager."""
    from sqlalchemy import select

    from app.catalogue import load_catalogue
    from app.extensions import db
    from models import Disease, Doctor, MedicalCenter

    centre_id = make_center(CENTRE, profile="cardiology")
    doctor_id = make_doctor(center_id=centre_id)
    manager = make_staff("Manager")
    with app.app_context():
        load_catalogue()
        i48 = db.session.execute(select(Disease).where(Disease.icd10_code == ICD10)).scalar_one()
        i10 = db.session.execute(select(Disease).where(Disease.icd10_code == "I10")).scalar_one()
        centre = db.session.get(MedicalCenter, centre_id)
        centre.diseases.extend([i48, i10])
        world = ReferralWorld(
            manager_username=manager,
            doctor_username=db.session.get(Doctor, doctor_id).user.username,
            disease_name=i48.name,
        )
        db.session.commit()
    return world


def filled_table(headers: list[str], disease_name: str) -> bytes:
    """The manager's file: the template's header row and three valid rows."""
    from openpyxl import Workbook

    wb = Workbook()
    ws = wb.active
    ws.title = "Направления"
    ws.append(headers)
    for full_name, born, sex, phone, _e164 in PATIENTS:
        ws.append(
            [
                full_name,
                born,
                sex,
                phone,
                "",
                "",
                ICD10,
                disease_name,
                CENTRE,
                "ГБУЗ «Районная больница №2»",
                "Петров П. П.",
                "",
            ]
        )
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()


def test_referral_import_to_a_scheduled_consultation(
    app: Flask,
    live_server: LiveServer,
    referral_world: ReferralWorld,
    desk: Callable[[str], Page],
    phone_page: Page,
) -> None:
    w = referral_world
    manager = desk("manager")

    # --- the manager: «Направления» → «Импорт направлений», the template ----------------------
    sign_in(manager, live_server, w.manager_username, TEST_PASSWORD)
    manager.locator(".navbar").get_by_role("link", name="Направления").click()
    manager.locator(".navbar").get_by_role("link", name="Импорт направлений").click()
    expect(manager).to_have_url(re.compile(r"/referrals/?$"))
    with manager.expect_download() as download_info:
        manager.get_by_role("link", name="Скачать шаблон (XLSX)").click()
    download = download_info.value
    assert download.suggested_filename.endswith(".xlsx"), download.suggested_filename
    headers = template_headers(Path(download.path()).read_bytes())
    assert headers == TEMPLATE_HEADERS, headers

    # --- upload the filled table: a preview of three valid rows -------------------------------
    manager.locator("#file").set_input_files(
        files=[
            {
                "name": "направления-кардиология.xlsx",
                "mimeType": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                "buffer": filled_table(headers, w.disease_name),
            }
        ]
    )
    manager.get_by_role("button", name="Загрузить и проверить").click()
    expect(manager).to_have_url(re.compile(rf"/referrals/{UUID_RE}$"))
    import_url = manager.url
    expect(flash(manager).filter(has_text="Таблица проверена: готово строк — 3.")).to_be_visible()
    rows = manager.locator("#rows tbody tr")
    expect(rows).to_have_count(3)
    expect(manager.locator("#rows tr.danger")).to_have_count(0)
    expect(manager.locator("#rows .row-error")).to_have_count(0)
    for full_name, *_rest in PATIENTS:
        expect(rows.filter(has_text=full_name)).to_contain_text("Ждёт импорта")
    assert count_referral_patients(app) == 0  # nothing is imported before the confirmation

    # --- confirm; the progress reaches 100 % ---------------------------------------------------
    manager.get_by_role("button", name=re.compile("Подтвердить и импортировать")).click()
    bar = manager.locator("#import-progress .progress-bar")
    expect(bar).to_have_attribute("aria-valuenow", "100")
    expect(manager.locator("#import-progress-text")).to_have_text("3 / 3")
    expect(manager.locator("#import-status")).to_have_text("Импортирована")
    for full_name, *_rest in PATIENTS:
        row = rows.filter(has_text=full_name)
        expect(row).to_contain_text("Создана учётная запись")
        expect(row).to_contain_text("Приглашён")

    # --- the outbox: exactly one SMS per patient, credentials but no diagnosis -----------------
    manager.locator(".navbar").get_by_role("link", name="Исходящие сообщения").click()
    expect(manager).to_have_url(re.compile(r"/outbox/"))
    for *_rest, e164 in PATIENTS:
        expect(manager.locator("table tr", has_text=e164)).to_have_count(1)
    sms = invitation_sms(app)
    assert sorted(sms) == sorted(p[-1] for p in PATIENTS), sms
    credentials = {}
    for phone, body in sms.items():
        match = invitation(body)
        assert match["url"] == live_server("/login/"), body
        assert match["link"].startswith(live_server("/s/")), body
        assert match["login"] == phone, body
        assert ICD10 not in body and w.disease_name.lower() not in body.lower(), body
        credentials[phone] = match["password"]
    assert len(set(credentials.values())) == 3  # every patient has an own password

    # --- the first patient: signs in with the SMS's credentials on her phone -------------------
    full_name, _born, _sex, _written, login = PATIENTS[0]
    patient = phone_page
    patient.goto(invitation(sms[login])["url"])  # she types them (the link: test_sms_taps)
    submit_sign_in(patient, login, credentials[login])
    expect(patient).to_have_url(re.compile(r"/account/password/?$"))
    expect(patient.get_by_text("Теперь придумайте свой пароль")).to_be_visible()
    patient.goto(live_server("/cabinet/"))  # nothing else opens before the change
    expect(patient).to_have_url(re.compile(r"/account/password/?$"))

    # The consent is asked for and required; the password just typed is not asked again.
    consent = patient.locator("#consent")
    expect(consent).to_be_visible()
    expect(patient.locator("#current_password")).to_have_count(0)
    patient.locator("#new_password").fill(NEW_PASSWORD)
    patient.locator("#confirm_password").fill(NEW_PASSWORD)
    patient.get_by_role("button", name="Сменить пароль").tap()
    expect(patient.get_by_text("дайте согласие на обработку персональных данных")).to_be_visible()
    patient.locator("#new_password").fill(NEW_PASSWORD)
    patient.locator("#confirm_password").fill(NEW_PASSWORD)
    patient.locator("#consent").check()
    patient.get_by_role("button", name="Сменить пароль").tap()
    expect(flash(patient).filter(has_text="Пароль изменён")).to_be_visible()
    expect(patient).not_to_have_url(re.compile(r"/account/password/?$"))

    # --- the referral consultation waits for her documents; she uploads a PDF -----------------
    patient.goto(live_server("/cabinet/"))
    tiles = patient.locator(".oblako-cabinet-tiles")
    tiles.get_by_role("link", name="Консультации").tap()
    listed = patient.locator("table tbody tr")
    expect(listed).to_have_count(1)
    expect(listed).to_contain_text("Ожидает документов")
    expect(listed).to_contain_text(CENTRE)
    listed.get_by_role("link").first.tap()
    expect(patient).to_have_url(re.compile(rf"/cabinet/consultations/{UUID_RE}$"))
    public_id = patient.url.rsplit("/", 1)[1]
    expect(patient.locator("#status")).to_have_text("Ожидает документов")
    expect(patient.locator("#awaiting-documents")).to_be_visible()
    patient.locator("#file").set_input_files(
        files=[
            {
                "name": "Выписка из карты.pdf",
                "mimeType": "application/pdf",
                "buffer": make_pdf("Discharge summary"),
            }
        ]
    )
    patient.locator("#file_type").select_option(label="Заключение врача")
    patient.get_by_role("button", name="Добавить к консультации").tap()
    expect(flash(patient).filter(has_text="Документы добавлены к консультации")).to_be_visible()
    expect(patient.locator("#status")).to_have_text("Заявка отправлена")
    expect(patient.get_by_role("link", name=re.compile("Выписка из карты.pdf"))).to_be_visible()

    # --- the centre's doctor: the referral in «Заявки», due in four days; schedules it ---------
    doctor = desk("doctor")
    sign_in(doctor, live_server, w.doctor_username, TEST_PASSWORD)
    doctor.locator(".navbar").get_by_role("link", name="Консультации").click()
    doctor.locator(".navbar").get_by_role("link", name="Заявки").click()
    expect(doctor).to_have_url(re.compile(r"/care/queue"))
    expect(doctor.locator("#queue tbody tr")).to_have_count(1)  # the others await documents
    row = doctor.locator(f"#queue tr[data-consultation='{public_id}']")
    expect(row).to_contain_text("Смирнова")
    expect(row).to_contain_text(ICD10)
    expect(row).to_contain_text("Заявка отправлена")
    row.get_by_role("link").first.click()
    expect(doctor).to_have_url(re.compile(rf"/care/consultations/{public_id}$"))
    expect(doctor.get_by_text("Выписка из карты.pdf")).to_be_visible()
    start_local = (datetime.now(ZoneInfo(ZONE)) + timedelta(days=1)).replace(
        hour=11, minute=30, second=0, microsecond=0
    )
    starts_at = start_local.astimezone(UTC)
    form = doctor.locator("#schedule-form")
    form.locator("#day").fill(start_local.date().isoformat())
    form.locator("#at").fill(start_local.strftime("%H:%M"))
    form.locator("#duration").fill("30")
    form.get_by_role("button", name="Назначить").click()
    expect(flash(doctor).filter(has_text="назначена")).to_be_visible()
    expect(doctor.locator("#status")).to_have_text("Назначена")

    # --- the patient: one unread notification with the date; the consultation is scheduled -----
    patient.goto(live_server("/cabinet/"))
    bell = tiles.get_by_role("link", name=re.compile("Уведомления"))
    expect(bell.locator(".badge")).to_have_text("1")
    bell.tap()
    note = patient.locator(".list-group-item", has_text="назначена на")
    expect(note).to_have_count(1)
    expect(note).to_contain_text(ru_datetime(starts_at, ZONE))
    note.get_by_role("link", name="Открыть").tap()
    expect(patient).to_have_url(re.compile(rf"/cabinet/consultations/{public_id}$"))
    expect(patient.locator("#status")).to_have_text("Назначена")
    expect(patient.locator("#scheduled-at")).to_contain_text(ru_datetime(starts_at, ZONE))

    # --- the manager's tracking follows the row ------------------------------------------------
    manager.goto(import_url)
    expect(rows.filter(has_text=full_name)).to_contain_text("Назначена")
    for other, *_rest in PATIENTS[1:]:
        expect(rows.filter(has_text=other)).to_contain_text("Приглашён")

    assert_referral_recorded(app, login, public_id, starts_at)
    assert not live_server.errors, "\n".join(live_server.errors)


def template_headers(data: bytes) -> list[str]:
    from openpyxl import load_workbook

    wb = load_workbook(io.BytesIO(data), read_only=True)
    try:
        first = next(wb.worksheets[0].iter_rows(min_row=1, max_row=1, values_only=True))
        return [str(v) for v in first if v is not None]
    finally:
        wb.close()


def count_referral_patients(app: Flask) -> int:
    from sqlalchemy import func, select

    from app.extensions import db
    from models import Patient, PatientSource

    with app.app_context():
        n = db.session.execute(
            select(func.count()).where(Patient.source == PatientSource.REFERRAL)
        ).scalar_one()
        db.session.rollback()
        return n


def invitation_sms(app: Flask) -> dict[str, str]:
    """Every SMS in the outbox by recipient; fails on a second SMS to anyone."""
    from sqlalchemy import select

    from app.extensions import db
    from models import OutboundChannel, OutboundMessage

    with app.app_context():
        messages = db.session.execute(
            select(OutboundMessage.recipient, OutboundMessage.body).where(
                OutboundMessage.channel == OutboundChannel.SMS
            )
        ).all()
        db.session.rollback()
    recipients = [recipient for recipient, _body in messages]
    assert len(recipients) == len(set(recipients)), recipients
    return dict(messages)


def assert_referral_recorded(app: Flask, login: str, public_id: str, starts_at: datetime) -> None:
    from sqlalchemy import select

    from app.extensions import db
    from models import (
        Consent,
        ConsentKind,
        Consultation,
        ConsultationKind,
        ConsultationStatus,
        Patient,
        PatientSource,
        ReferralImport,
        ReferralImportRow,
    )

    with app.app_context():
        imp = db.session.execute(select(ReferralImport)).scalar_one()
        assert (imp.status, imp.valid_rows, imp.imported_rows) == ("done", 3, 3)
        outcomes = db.session.execute(
            select(ReferralImportRow.outcome).where(ReferralImportRow.import_id == imp.id)
        ).scalars()
        assert sorted(outcomes) == ["imported"] * 3
        patients = list(
            db.session.execute(
                select(Patient).where(Patient.source == PatientSource.REFERRAL)
            ).scalars()
        )
        assert sorted(p.phone for p in patients) == sorted(p[-1] for p in PATIENTS)
        consultations = list(
            db.session.execute(
                select(Consultation).where(Consultation.kind == ConsultationKind.REFERRAL)
            ).scalars()
        )
        assert len(consultations) == 3
        by_phone = {c.patient.phone: c for c in consultations}
        c = by_phone[login]
        assert str(c.public_id) == public_id
        assert c.status == ConsultationStatus.SCHEDULED
        assert c.scheduled_at == starts_at
        assert c.submitted_at is not None and c.due_by == c.submitted_at + timedelta(days=4)
        assert [d.original_name for d in c.documents] == ["Выписка из карты.pdf"]
        for phone, other in by_phone.items():
            if phone != login:
                assert other.status == ConsultationStatus.AWAITING_DOCUMENTS
        user = c.patient.user
        assert not user.must_change_password and user.password_expires_at is None
        assert user.last_login is not None
        consents = db.session.execute(
            select(Consent.kind).where(Consent.user_id == user.id)
        ).scalars()
        assert list(consents) == [ConsentKind.PERSONAL_DATA]
        db.session.rollback()
