"""Managers' reports in a real browser: the manager goes from the main menu to the reports
workspace (Flask-Admin, Bootstrap 4), filters the consultations report, exports it as XLSX,
and the downloaded file holds exactly the rows the filters chose — dates in the manager's own
time zone, a formula-looking text kept as text.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import pytest
from flask import Flask
from openpyxl import load_workbook
from playwright.sync_api import Page, expect
from sqlalchemy import select, update

from tests.conftest import TEST_PASSWORD
from tests.e2e.conftest import DEFAULT_TIMEOUT_MS

if TYPE_CHECKING:
    from tests.e2e.conftest import LiveServer

pytestmark = pytest.mark.e2e

MANAGER_TZ = "Asia/Yekaterinburg"  # UTC+5
DESKTOP = {"viewport": {"width": 1280, "height": 900}, "locale": "ru-RU", "timezone_id": MANAGER_TZ}


@dataclass
class ReportWorld:
    manager: str
    centre_public_id: str
    wanted: dict[str, datetime]  # number → created_at (UTC) of the rows the filter selects
    other: list[str]


@pytest.fixture
def report_world(app: Flask, make_center, make_doctor, make_staff, make_patient) -> ReportWorld:
    from app.extensions import db
    from models import Consultation, MedicalCenter, OblakoUser

    north, south = make_center("Центр Северный"), make_center("Центр Южный")
    make_doctor(center_id=north)
    manager = make_staff("Manager")
    patient = make_patient(surname="Браузерова")
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    with app.app_context():
        db.session.execute(
            update(OblakoUser).where(OblakoUser.username == manager).values(timezone=MANAGER_TZ)
        )
        made = []
        for i, (centre, kind, status) in enumerate(
            [
                (north, "centre_request", "requested"),
                (north, "centre_request", "cancelled"),
                (north, "referral", "requested"),
                (south, "centre_request", "requested"),
                (north, "centre_request", "scheduled"),
            ]
        ):
            created = now - timedelta(days=2, hours=i)
            c = Consultation(
                kind=kind, status=status, patient_id=patient, center_id=centre,
                created_at=created, submitted_at=created, due_by=created + timedelta(days=3),
                complaints="=1+1" if i == 0 else "",
            )  # fmt: skip
            db.session.add(c)
            made.append((c, centre, kind))
        db.session.commit()
        centre_public_id = str(
            db.session.execute(
                select(MedicalCenter.public_id).where(MedicalCenter.id == north)
            ).scalar_one()
        )
        wanted = {
            c.label: c.created_at
            for c, centre, kind in made
            if centre == north and kind == "centre_request"
        }
        other = [
            c.label
            for c, centre, kind in made
            if not (centre == north and kind == "centre_request")
        ]
    return ReportWorld(manager, centre_public_id, wanted, other)


def test_manager_filters_and_exports_xlsx(
    app: Flask, live_server: LiveServer, browser, report_world: ReportWorld
) -> None:
    w = report_world
    context = browser.new_context(base_url=live_server.url, **DESKTOP)
    context.set_default_timeout(DEFAULT_TIMEOUT_MS)
    page: Page = context.new_page()
    try:
        page.goto(live_server("/login/"))
        page.locator("#username").fill(w.manager)
        page.locator("#password").fill(TEST_PASSWORD)
        page.locator("form input[type=submit], form button[type=submit]").first.click()
        expect(page).not_to_have_url(re.compile(r"/login/?$"))

        # The main menu (FAB) leads to the reports workspace (Flask-Admin).
        page.locator(".navbar").get_by_role("link", name="Отчёты").first.click()
        expect(page).to_have_url(re.compile(r"/reports/?$"))
        expect(page.locator("svg.report-chart")).to_have_count(4)
        page.locator(".navbar").get_by_role("link", name="Консультации").click()
        expect(page).to_have_url(re.compile(r"/reports/consultations/"))

        today = datetime.now(ZoneInfo(MANAGER_TZ)).date()
        page.locator("#f-date_from").fill((today - timedelta(days=7)).isoformat())
        page.locator("#f-date_to").fill(today.isoformat())
        page.locator("#f-centre").select_option(w.centre_public_id)
        page.locator("#f-kind").select_option("centre_request")
        page.locator("#apply-filters").click()
        expect(page.locator("#consultations-total")).to_have_text(str(len(w.wanted)))
        rows = page.locator("#report-rows tbody tr")
        expect(rows).to_have_count(len(w.wanted))
        for number in w.wanted:
            expect(page.locator("#report-rows")).to_contain_text(number)
        for number in w.other:
            expect(page.locator("#report-rows")).not_to_contain_text(number)

        with page.expect_download() as download_info:
            page.locator("#export-xlsx").click()
        download = download_info.value
        assert download.suggested_filename.endswith(".xlsx"), download.suggested_filename
        with open(download.path(), "rb") as fh:
            workbook = load_workbook(io.BytesIO(fh.read()))
    finally:
        context.close()

    sheet = workbook.active
    table = [[cell.value for cell in row] for row in sheet.iter_rows()]
    header, body = table[0], table[1:]
    assert header[:3] == ["Номер", "Вид", "Статус"], header
    assert {row[0] for row in body} == set(w.wanted)
    created_col = header.index("Создано")
    zone = ZoneInfo(MANAGER_TZ)
    for row in body:
        assert row[1] == "Заявка в центр", row
        assert row[3] == "Центр Северный"
        expected = w.wanted[row[0]].astimezone(zone).replace(tzinfo=None)
        assert row[created_col] == expected, (row[created_col], expected)

    from app.extensions import db
    from models import AuditEvent

    with app.app_context():
        event = db.session.execute(
            select(AuditEvent).where(AuditEvent.action == "report.export")
        ).scalar_one()
        assert event.object_id == "consultations.xlsx"
        assert event.detail["rows"] == len(w.wanted)
        assert event.detail["filters"]["centre"] == w.centre_public_id
