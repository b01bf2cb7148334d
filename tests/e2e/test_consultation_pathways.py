"""The two consultation pathways end to end, with two people acting in two browsers.

The patient uses a phone-sized context (phone_page), the doctor a desktop one (desk_page): two
contexts of one Chromium, so two separate sessions against the same live server, each seeing
what the other did only through the server (notifications, the queue, statuses).

Pathway 1 — an application to a medical centre: a refusal naming the missing documents, the
application, a request for documents, the upload, scheduling, the start, the conclusion and its
PDF. Pathway 2 — a duty doctor by schedule: booking a slot, cancelling it, the slot free again,
another booking.

What the pages showed is checked in the pages; what the server recorded is checked in the
database as well, so a page that merely looks right cannot pass.
"""

from __future__ import annotations

import io
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import pytest
from babel.dates import format_datetime
from flask import Flask
from playwright.sync_api import Page, expect

from tests.conftest import add_shift, patient_username
from tests.e2e.conftest import pdf_text, sign_in

if TYPE_CHECKING:
    from tests.e2e.conftest import LiveServer

pytestmark = pytest.mark.e2e

UUID_RE = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
CONSULTATION_URL = re.compile(rf"/cabinet/consultations/{UUID_RE}$")

# The patient lives six hours east of the doctor: every time is shown in the reader's zone.
PATIENT_TZ = "Asia/Yakutsk"
DOCTOR_TZ = "Europe/Moscow"  # create_doctor's default
SURNAME = "Соколова"


def make_pdf(text: str = "Oblako e2e test") -> bytes:
    """A real one-page PDF (fpdf2), ASCII text: the core font has no Cyrillic."""
    from fpdf import FPDF

    pdf = FPDF(format="A4")
    pdf.add_page()
    pdf.set_font("Helvetica", size=14)
    pdf.cell(text=text)
    return bytes(pdf.output())


def ru_datetime(moment: datetime, tz_name: str, fmt: str = "d MMMM y, HH:mm") -> str:
    return format_datetime(moment, fmt, tzinfo=ZoneInfo(tz_name), locale="ru")


def flash(page: Page):
    """The page's flashed messages (FAB renders them as Bootstrap alerts)."""
    return page.locator(".alert")


# --- Pathway 1: an application to a cardiology centre ----------------------------------------


@dataclass
class CentreWorld:
    centre_name: str
    i48_label: str  # as the disease select shows it
    patient_username: str
    patient_id: int
    doctor_username: str
    doctor_name: str


@pytest.fixture
def centre_world(app: Flask, make_patient, make_center, make_doctor) -> CentreWorld:
    """A cardiology centre with I48 in its catalogue (needs a doctor's conclusion and an ECG),
    its doctor, and a patient whose «Мои документы» hold an ECG but no doctor's conclusion."""
    from sqlalchemy import select

    from app.catalogue import load_catalogue
    from app.documents.upload import store_document
    from app.extensions import db
    from models import Disease, Doctor, MedicalCenter, Patient

    centre_id = make_center("Кардиоцентр «Сердце»", profile="cardiology")
    doctor_id = make_doctor(center_id=centre_id)
    patient_id = make_patient(surname=SURNAME, timezone=PATIENT_TZ)
    with app.app_context():
        types = load_catalogue()
        i48 = db.session.execute(select(Disease).where(Disease.icd10_code == "I48")).scalar_one()
        i10 = db.session.execute(select(Disease).where(Disease.icd10_code == "I10")).scalar_one()
        centre = db.session.get(MedicalCenter, centre_id)
        centre.diseases.extend([i48, i10])
        patient = db.session.get(Patient, patient_id)
        store_document(
            patient,
            by=patient.user,
            stream=io.BytesIO(make_pdf("ECG")),
            filename="ЭКГ от 1 ноября.pdf",
            document_type=types["ecg"],
        )
        doctor = db.session.get(Doctor, doctor_id)
        world = CentreWorld(
            centre_name="Кардиоцентр «Сердце»",
            i48_label=f"{i48.icd10_code} {i48.name}",
            patient_username=patient.phone,
            patient_id=patient_id,
            doctor_username=doctor.user.username,
            doctor_name=doctor.full_name,
        )
        db.session.commit()
    return world


def test_application_to_a_centre_from_refusal_to_the_conclusion_pdf(
    app: Flask,
    live_server: LiveServer,
    centre_world: CentreWorld,
    phone_page: Page,
    desk_page: Page,
) -> None:
    w = centre_world
    patient, doctor = phone_page, desk_page
    sign_in(patient, live_server, w.patient_username)
    expect(patient).to_have_url(re.compile(r"/cabinet/?$"))
    tiles = patient.locator(".oblako-cabinet-tiles")

    # --- «Новая заявка»: step 1, the centre; step 2, a disease whose documents are not all there
    tiles.get_by_role("link", name="Новая заявка").tap()
    patient.get_by_role("link", name=re.compile(w.centre_name)).tap()
    expect(patient.locator("#applicant-name")).to_contain_text(SURNAME)
    patient.locator("#disease").select_option(label=w.i48_label)
    checklist = patient.locator("#checklist .checklist-item:visible")
    expect(checklist).to_have_count(2)
    expect(checklist.filter(has_text="Заключение врача")).to_contain_text("не хватает")
    patient.locator("label", has_text="ЭКГ от 1 ноября.pdf").locator("input").check()
    expect(checklist.filter(has_text="ЭКГ")).to_contain_text("есть")
    expect(patient.locator("#missing-summary")).to_have_text("Ещё не хватает: Заключение врача.")
    patient.locator("#complaints").fill("Перебои в работе сердца, одышка при ходьбе")
    patient.get_by_role("button", name="Отправить заявку").tap()

    # The form says what is missing before sending (the server would refuse it too).
    problem = patient.locator("#form-problem")
    expect(problem).to_be_visible()
    expect(problem).to_contain_text("Заключение врача")
    expect(problem).not_to_contain_text("ЭКГ")  # the ECG was attached: only what is missing
    assert count_consultations(app, w.patient_id) == 0, "a refused application was recorded"

    # --- the same form, now with a diagnosis of her own (no checklist applies) --------------
    patient.locator("#disease").select_option(label="Нет в списке")
    patient.locator("#diagnosis_text").fill("Пароксизмальная тахикардия")
    expect(patient.locator("#complaints")).to_have_value(
        "Перебои в работе сердца, одышка при ходьбе"
    )
    patient.get_by_role("button", name="Отправить заявку").tap()
    expect(patient).to_have_url(CONSULTATION_URL)
    expect(flash(patient).filter(has_text="Заявка отправлена")).to_be_visible()
    expect(patient.locator("#status")).to_have_text("Заявка отправлена")
    public_id = uuid.UUID(patient.url.rsplit("/", 1)[1])
    number = consultation_number(app, public_id)

    # --- the doctor: «Заявки», the application, a request for a document --------------------
    sign_in(doctor, live_server, w.doctor_username)
    open_queue_item(doctor, public_id, expect_status="Заявка отправлена")
    expect(doctor.locator("#patient-name")).to_contain_text(SURNAME)
    expect(doctor.get_by_text("Пароксизмальная тахикардия")).to_be_visible()
    doctor.locator("#message").fill(
        "Приложите, пожалуйста, заключение кардиолога по месту жительства."
    )
    doctor.get_by_role("button", name="Запросить документы").click()
    expect(flash(doctor).filter(has_text="Пациенту отправлен запрос документов")).to_be_visible()
    expect(doctor.locator("#status")).to_have_text("Нужны документы")

    # --- the patient: one unread notification, it leads to the consultation ----------------
    patient.goto(live_server("/cabinet/"))
    bell = tiles.get_by_role("link", name=re.compile("Уведомления"))
    expect(bell.locator(".badge")).to_have_text("1")
    bell.tap()
    item = patient.locator(
        ".list-group-item", has_text=f"Врач просит дополнить документы по заявке {number}"
    )
    expect(item).to_have_count(1)
    item.get_by_role("link", name="Открыть").tap()
    expect(patient).to_have_url(re.compile(rf"/cabinet/consultations/{public_id}$"))
    expect(patient.locator("#status")).to_have_text("Нужны документы")
    expect(patient.locator("#staff-message")).to_contain_text("заключение кардиолога")

    # ...and uploads the document from the consultation itself.
    patient.locator("#file").set_input_files(
        files=[
            {
                "name": "Заключение кардиолога.pdf",
                "mimeType": "application/pdf",
                "buffer": make_pdf("Cardiologist's conclusion"),
            }
        ]
    )
    patient.locator("#file_type").select_option(label="Заключение врача")
    patient.get_by_role("button", name="Добавить к консультации").tap()
    expect(flash(patient).filter(has_text="Документы добавлены к консультации")).to_be_visible()
    expect(patient.locator("#status")).to_have_text("Заявка отправлена")
    expect(
        patient.get_by_role("link", name=re.compile("Заключение кардиолога.pdf"))
    ).to_be_visible()
    patient.goto(live_server("/cabinet/"))
    expect(
        tiles.get_by_role("link", name=re.compile("Уведомления")).locator(".badge")
    ).to_have_count(0)

    # --- the doctor: back in the queue; scheduled ~10 minutes from now, doctor's clock -------
    open_queue_item(doctor, public_id, expect_status="Заявка отправлена")
    expect(doctor.get_by_text("Заключение кардиолога.pdf")).to_be_visible()
    start_local = (datetime.now(ZoneInfo(DOCTOR_TZ)) + timedelta(minutes=10)).replace(
        second=0, microsecond=0
    )
    starts_at = start_local.astimezone(UTC)
    form = doctor.locator("#schedule-form")
    form.locator("#day").fill(start_local.date().isoformat())
    form.locator("#at").fill(start_local.strftime("%H:%M"))
    form.locator("#duration").fill("30")
    form.get_by_role("button", name="Назначить").click()
    expect(flash(doctor).filter(has_text="назначена")).to_be_visible()
    expect(doctor.locator("#status")).to_have_text("Назначена")
    expect(doctor.locator("#scheduled-at .doctor-time")).to_contain_text(
        ru_datetime(starts_at, DOCTOR_TZ)
    )
    expect(doctor.locator("#scheduled-at .patient-time")).to_contain_text(
        ru_datetime(starts_at, PATIENT_TZ)
    )

    # --- the patient: the notification carries the date in her own zone ---------------------
    patient.goto(live_server("/cabinet/"))
    expect(
        tiles.get_by_role("link", name=re.compile("Уведомления")).locator(".badge")
    ).to_have_text("1")
    tiles.get_by_role("link", name=re.compile("Уведомления")).tap()
    scheduled = patient.locator(".list-group-item", has_text=f"Консультация {number} назначена на")
    expect(scheduled).to_contain_text(ru_datetime(starts_at, PATIENT_TZ))
    expect(scheduled).to_contain_text("UTC+9")  # her zone, named
    scheduled.get_by_role("link", name="Открыть").tap()
    expect(patient.locator("#status")).to_have_text("Назначена")
    expect(patient.locator("#scheduled-at")).to_contain_text(ru_datetime(starts_at, PATIENT_TZ))

    # --- the doctor starts the consultation and issues the conclusion ------------------------
    doctor.get_by_role("button", name="Начать консультацию").click()
    expect(flash(doctor).filter(has_text="Консультация началась")).to_be_visible()
    expect(doctor.locator("#status")).to_have_text("Идёт")
    doctor.get_by_role("link", name=re.compile(r"Заключение$")).click()
    doctor.locator("#complaints_history").fill(
        "Перебои в работе сердца в течение двух месяцев, одышка при ходьбе."
    )
    doctor.locator("#findings").fill(
        "ЭКГ: синусовый ритм, единичные наджелудочковые экстрасистолы."
    )
    doctor.locator("#diagnosis").fill("Пароксизмальная наджелудочковая тахикардия")
    doctor.locator("#icd10_code").fill("I47.1")
    doctor.locator("#recommendations").fill("Суточное мониторирование ЭКГ по Холтеру, контроль АД.")
    doctor.locator("#in_person_visit_needed").check()
    doctor.locator("#next_steps").fill("Повторная консультация с результатами мониторирования.")
    doctor.get_by_role("button", name="Выдать заключение").click()
    expect(flash(doctor).filter(has_text="Заключение выдано")).to_be_visible()
    expect(doctor.get_by_text("Версия 1")).to_be_visible()

    # --- the patient downloads the conclusion's PDF ------------------------------------------
    patient.reload()
    expect(patient.locator("#status")).to_have_text("Проведена")
    with patient.expect_download() as download_info:
        patient.get_by_role("link", name="Заключение врача (PDF)").tap()
    download = download_info.value
    assert download.suggested_filename.endswith(".pdf"), download.suggested_filename
    text = pdf_text(Path(download.path()).read_bytes())
    assert SURNAME in text, f"the patient's surname is not in the PDF:\n{text}"
    assert "Заключение" in text or "ЗАКЛЮЧЕНИЕ" in text, text
    assert "I47.1" in text, text
    assert "Холтеру" in text, text

    assert_pathway1_recorded(app, public_id, starts_at)
    assert not live_server.errors, "\n".join(live_server.errors)


def open_queue_item(doctor: Page, public_id: uuid.UUID, *, expect_status: str) -> None:
    """«Консультации» → «Заявки» in the navbar, then the application's row."""
    doctor.locator(".navbar").get_by_role("link", name="Консультации").click()
    doctor.locator(".navbar").get_by_role("link", name="Заявки").click()
    expect(doctor).to_have_url(re.compile(r"/care/queue"))
    row = doctor.locator(f"#queue tr[data-consultation='{public_id}']")
    expect(row).to_contain_text(expect_status)
    row.get_by_role("link").first.click()
    expect(doctor).to_have_url(re.compile(rf"/care/consultations/{public_id}$"))


def count_consultations(app: Flask, patient_id: int) -> int:
    from sqlalchemy import func, select

    from app.extensions import db
    from models import Consultation

    with app.app_context():
        n = db.session.execute(
            select(func.count()).where(Consultation.patient_id == patient_id)
        ).scalar_one()
        db.session.rollback()
        return n


def consultation_number(app: Flask, public_id: uuid.UUID) -> str:
    from sqlalchemy import select

    from app.extensions import db
    from models import Consultation

    with app.app_context():
        c = db.session.execute(
            select(Consultation).where(Consultation.public_id == public_id)
        ).scalar_one()
        number = str(c)
        db.session.rollback()
        return number


def assert_pathway1_recorded(app: Flask, public_id: uuid.UUID, starts_at: datetime) -> None:
    from sqlalchemy import select

    from app.extensions import db
    from models import Conclusion, Consultation, ConsultationStatus

    with app.app_context():
        c = db.session.execute(
            select(Consultation).where(Consultation.public_id == public_id)
        ).scalar_one()
        assert c.status == ConsultationStatus.COMPLETED
        assert c.disease_id is None and c.diagnosis_text == "Пароксизмальная тахикардия"
        assert c.scheduled_at == starts_at
        assert c.started_at is not None and c.completed_at is not None
        names = {d.original_name for d in c.documents}
        assert names == {"ЭКГ от 1 ноября.pdf", "Заключение кардиолога.pdf"}, names
        conclusions = list(
            db.session.execute(
                select(Conclusion).where(Conclusion.consultation_id == c.id)
            ).scalars()
        )
        assert [(x.version, x.icd10_code, x.in_person_visit_needed) for x in conclusions] == [
            (1, "I47.1", True)
        ]
        db.session.rollback()


# --- Pathway 2: a duty doctor by schedule --------------------------------------------------------


@dataclass
class DutyWorld:
    patient_username: str
    patient_id: int
    doctor_name: str
    slot_times: list[str]  # tomorrow's slots as the patient's clock shows them


@pytest.fixture
def duty_world(app: Flask, make_patient, make_doctor) -> DutyWorld:
    """A duty doctor on shift tomorrow 10:00–12:00 Moscow time, cut into 30-minute slots."""
    from app.catalogue import load_catalogue
    from app.extensions import db
    from models import Doctor

    doctor_id = make_doctor(is_duty=True)
    patient_id = make_patient(surname=SURNAME, timezone=PATIENT_TZ)
    moscow = ZoneInfo(DOCTOR_TZ)
    tomorrow = datetime.now(moscow).date() + timedelta(days=1)
    starts = datetime.combine(tomorrow, time(10, 0), tzinfo=moscow).astimezone(UTC)
    with app.app_context():
        load_catalogue()
    slots = add_shift(
        app, doctor_id, starts, slots=4, topics="Профилактика сердечно-сосудистых заболеваний"
    )
    yakutsk = ZoneInfo(PATIENT_TZ)
    with app.app_context():
        world = DutyWorld(
            patient_username=patient_username(app, patient_id),
            patient_id=patient_id,
            doctor_name=db.session.get(Doctor, doctor_id).full_name,
            slot_times=[
                (starts + timedelta(minutes=30 * n)).astimezone(yakutsk).strftime("%H:%M")
                for n in range(len(slots))
            ],
        )
    assert len(world.slot_times) == 4
    return world


def test_duty_booking_cancel_frees_the_slot_and_another_is_booked(
    app: Flask, live_server: LiveServer, duty_world: DutyWorld, phone_page: Page
) -> None:
    w = duty_world
    page = phone_page
    first, second = w.slot_times[0], w.slot_times[1]  # 16:00 and 16:30 in Yakutsk
    sign_in(page, live_server, w.patient_username)
    expect(page).to_have_url(re.compile(r"/cabinet/?$"))

    # --- «Запись к дежурному врачу» from the phone's collapsed menu --------------------------
    open_booking_from_menu(page)
    panel = page.locator("details.oblako-day[open]")
    slots = panel.locator("a.oblako-slot")
    expect(slots).to_have_count(len(w.slot_times))
    for i, at in enumerate(w.slot_times):
        expect(slots.nth(i)).to_contain_text(at)
    expect(slots.first).to_contain_text(w.doctor_name.split()[0])
    expect(page.locator("#booking-doctors")).to_contain_text(
        f"{w.doctor_name}, Кардиолог — Профилактика сердечно-сосудистых заболеваний"
    )

    # --- book the first slot with a question ------------------------------------------------
    slots.filter(has_text=first).tap()
    expect(page).to_have_url(re.compile(rf"/cabinet/booking/{UUID_RE}\?topic=cardiovascular$"))
    expect(page.locator("form")).to_be_visible()
    page.locator("#question").fill("Можно ли заниматься бегом при повышенном давлении?")
    page.get_by_role("button", name="Записаться").tap()
    expect(page).to_have_url(re.compile(r"/cabinet/consultations/?$"))
    expect(flash(page).filter(has_text="Вы записаны к дежурному врачу")).to_be_visible()
    rows = page.locator("table tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("Назначена")
    expect(rows.first).to_contain_text(w.doctor_name)
    expect(rows.first).to_contain_text(first)

    # --- open it and cancel it with a reason -------------------------------------------------
    rows.first.get_by_role("link").first.tap()
    expect(page).to_have_url(CONSULTATION_URL)
    expect(page.get_by_text("Можно ли заниматься бегом при повышенном давлении?")).to_be_visible()
    page.locator("#reason").fill("Не получится в это время, запишусь на другое")
    page.get_by_role("button", name="Отменить консультацию").tap()
    expect(flash(page).filter(has_text="Консультация отменена")).to_be_visible()
    expect(page.locator("#status")).to_have_text("Отменена")

    # --- the first slot is free again; book the second one -----------------------------------
    open_booking_from_menu(page)
    slots = page.locator("details.oblako-day[open] a.oblako-slot")
    expect(slots).to_have_count(len(w.slot_times))  # nothing is held
    slots.filter(has_text=second).tap()
    page.locator("#question").fill("Повторно: вопрос о физической нагрузке.")
    page.get_by_role("button", name="Записаться").tap()
    expect(page).to_have_url(re.compile(r"/cabinet/consultations/?$"))
    expect(flash(page).filter(has_text="Вы записаны к дежурному врачу")).to_be_visible()
    expect(page.locator("table tbody tr")).to_have_count(2)
    booked = page.locator("table tbody tr", has_text="Назначена")
    expect(booked).to_have_count(1)
    expect(booked).to_contain_text(second)
    expect(page.locator("table tbody tr", has_text="Отменена")).to_contain_text(first)

    # The list now offers every slot but the second one: the first is bookable again.
    open_booking_from_menu(page)
    slots = page.locator("details.oblako-day[open] a.oblako-slot")
    expect(slots).to_have_count(len(w.slot_times) - 1)
    expect(slots.filter(has_text=second)).to_have_count(0)

    assert_pathway2_recorded(app, w.patient_id)
    assert not live_server.errors, "\n".join(live_server.errors)


def open_booking_from_menu(page: Page) -> None:
    """The navbar is collapsed on a phone: the toggle, «Личный кабинет», the item, a topic."""
    navbar = page.locator(".navbar")
    navbar.locator(".navbar-toggle").tap()
    navbar.get_by_role("link", name="Личный кабинет").tap()
    navbar.get_by_role("link", name="Запись к дежурному врачу").tap()
    expect(page).to_have_url(re.compile(r"/cabinet/booking/?$"))
    expect(page.get_by_role("heading", name="Запись к дежурному врачу")).to_be_visible()
    # A topic first (issue 17, item 3); the shift names none, so it takes every topic.
    page.get_by_role("link", name="Сердце и сосуды").tap()
    expect(page).to_have_url(re.compile(r"/cabinet/booking/\?topic=cardiovascular$"))


def assert_pathway2_recorded(app: Flask, patient_id: int) -> None:
    from sqlalchemy import select

    from app.extensions import db
    from models import Consultation, ConsultationKind, ConsultationStatus, Slot

    with app.app_context():
        rows = db.session.execute(
            select(Consultation, Slot)
            .join(Slot, Consultation.slot_id == Slot.id)
            .where(Consultation.patient_id == patient_id)
            .order_by(Slot.starts_at)
        ).all()
        assert [(c.kind, c.status) for c, _ in rows] == [
            (ConsultationKind.DUTY, ConsultationStatus.CANCELLED),
            (ConsultationKind.DUTY, ConsultationStatus.SCHEDULED),
        ]
        cancelled, booked = rows[0][0], rows[1][0]
        assert cancelled.cancel_reason == "Не получится в это время, запишусь на другое"
        assert cancelled.question == "Можно ли заниматься бегом при повышенном давлении?"
        assert booked.scheduled_at == rows[1][1].starts_at
        db.session.rollback()
