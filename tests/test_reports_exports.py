"""Managers' reports' exports: CSV and XLSX neutralise formulas, use the manager's time zone
(summer time too), split XLSX sheets at Excel's row limit and leave an audit trail."""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest
from openpyxl import load_workbook
from sqlalchemy import select, update

from tests.reports_world import MANAGER_TZ, World, period, signed_in, stage_world


@pytest.fixture
def world(app, make_center, make_doctor, make_staff, make_patient) -> World:
    """The known consultations of tests/reports_world.py."""
    return stage_world(app, make_center, make_doctor, make_staff, make_patient)


def test_csv_neutralises_formulas_and_uses_the_managers_time(app, world):
    client = signed_in(app, world.manager)
    response = client.get(f"/reports/cancellations/export.csv?{period(world)}")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/csv")
    assert "attachment" in response.headers["Content-Disposition"]
    text = response.get_data().decode("utf-8")
    assert text.startswith("\ufeff")
    rows = list(csv.reader(io.StringIO(text[1:]), delimiter=";"))
    header, body = rows[0], rows[1:]
    assert header[:3] == ["Номер", "Вид", "Статус"]
    by_number = {r[0]: r for r in body}
    assert by_number[world.numbers["f"]][9] == '\'=HYPERLINK("http://x")'
    assert by_number[world.numbers["g"]][9].startswith("'+7900")
    assert by_number[world.numbers["f"]][7] == "Пациент"
    cancelled_local = (world.base + timedelta(days=1)).astimezone(ZoneInfo(MANAGER_TZ))
    assert by_number[world.numbers["f"]][6] == cancelled_local.strftime("%Y-%m-%d %H:%M")


def test_xlsx_writes_text_never_formulas(app, world):
    client = signed_in(app, world.manager)
    response = client.get(f"/reports/cancellations/export.xlsx?{period(world)}")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/vnd.openxmlformats")
    workbook = load_workbook(io.BytesIO(response.get_data()))
    sheet = workbook.active
    rows = list(sheet.iter_rows())
    assert [c.value for c in rows[0]][:3] == ["Номер", "Вид", "Статус"]
    by_number = {r[0].value: r for r in rows[1:]}
    f_reason = by_number[world.numbers["f"]][9]
    assert f_reason.value == '=HYPERLINK("http://x")' and f_reason.data_type == "s"
    g_reason = by_number[world.numbers["g"]][9]
    assert g_reason.value == "+79001234567 звонил" and g_reason.data_type == "s"  # \x07 dropped
    assert g_reason.quotePrefix
    # the formula check openpyxl itself makes on reading
    for row in rows:
        for cell in row:
            assert cell.data_type != "f", cell.coordinate
    moment = by_number[world.numbers["f"]][6].value
    local = (world.base + timedelta(days=1)).astimezone(ZoneInfo(MANAGER_TZ))
    assert moment == local.replace(tzinfo=None)


def test_every_report_exports_in_both_formats_with_audit(app, world):
    from app.extensions import db
    from models import AuditEvent, OblakoUser

    client = signed_in(app, world.manager)
    for report in ("consultations", "sla", "load", "cancellations", "referrals", "outbox"):
        for fmt in ("csv", "xlsx"):
            response = client.get(f"/reports/{report}/export.{fmt}?{period(world)}")
            assert response.status_code == 200, (report, fmt)
            response.get_data()
            response.close()
    consultations = client.get(
        f"/reports/consultations/export.csv?{period(world)}&kind=referral"
    ).get_data()
    assert consultations.decode("utf-8-sig").count("\r\n") == 3  # header + h + i
    with app.app_context():
        manager_id = db.session.execute(
            select(OblakoUser.id).where(OblakoUser.username == world.manager)
        ).scalar_one()
        events = (
            db.session.execute(
                select(AuditEvent)
                .where(AuditEvent.action == "report.export")
                .order_by(AuditEvent.id)
            )
            .scalars()
            .all()
        )
    assert len(events) == 13
    assert {e.actor_id for e in events} == {manager_id}
    assert {e.outcome for e in events} == {"ok"}
    last = events[-1]
    assert last.object_id == "consultations.csv"
    assert last.detail["rows"] == 2
    assert last.detail["filters"]["kind"] == "referral"
    assert last.detail["filters"]["tz"] == MANAGER_TZ
    xlsx_consultations = next(e for e in events if e.object_id == "consultations.xlsx")
    assert xlsx_consultations.detail["rows"] == 11


def test_sla_export_delay_and_a_zone_with_summer_time(app, world):
    """The delay comes from the database; a zone whose offset changes (Berlin) is converted
    value by value in Python rather than by a fixed offset in SQL."""
    from app.extensions import db
    from models import OblakoUser

    client = signed_in(app, world.manager)
    data = client.get(f"/reports/sla/export.csv?{period(world)}").get_data().decode("utf-8-sig")
    rows = {r[0]: r for r in csv.reader(io.StringIO(data), delimiter=";")}
    assert rows[world.numbers["b"]][9] == "24.0"  # scheduled a day after the due time
    assert rows[world.numbers["i"]][9] == "24.0"
    assert float(rows[world.numbers["c"]][9]) == pytest.approx(7 * 24, abs=0.2)
    with app.app_context():
        db.session.execute(
            update(OblakoUser)
            .where(OblakoUser.username == world.manager)
            .values(timezone="Europe/Berlin")
        )
        db.session.commit()
    data = client.get(f"/reports/sla/export.csv?{period(world)}").get_data().decode("utf-8-sig")
    rows = {r[0]: r for r in csv.reader(io.StringIO(data), delimiter=";")}
    submitted = world.base.astimezone(ZoneInfo("Europe/Berlin")).strftime("%Y-%m-%d %H:%M")
    assert rows[world.numbers["b"]][5] == submitted


def test_xlsx_starts_a_new_sheet_at_excels_row_limit(app, world, monkeypatch):
    from app.reports import exports

    monkeypatch.setattr(exports, "XLSX_MAX_ROWS", 5)  # header + 4 rows a sheet
    client = signed_in(app, world.manager)
    response = client.get(f"/reports/consultations/export.xlsx?{period(world)}")
    workbook = load_workbook(io.BytesIO(response.get_data()))
    assert len(workbook.worksheets) == 3  # 11 rows: 4 + 4 + 3
    numbers = []
    for sheet in workbook.worksheets:
        rows = list(sheet.iter_rows(values_only=True))
        assert rows[0][0] == "Номер"
        numbers += [r[0] for r in rows[1:]]
    assert sorted(numbers) == sorted(world.numbers.values())


def test_an_interrupted_csv_export_is_audited_as_such(app, world, monkeypatch):
    """The client goes away after the first chunk: the export's audit event still appears,
    with the rows sent so far and the outcome «error»."""
    from app.extensions import db
    from app.reports import exports
    from models import AuditEvent

    monkeypatch.setattr(exports, "STREAM_CHUNK", 2)
    client = signed_in(app, world.manager)
    response = client.get(f"/reports/consultations/export.csv?{period(world)}", buffered=False)
    chunks = iter(response.response)
    next(chunks)  # the header
    next(chunks)  # two rows
    response.close()
    with app.app_context():
        event = db.session.execute(
            select(AuditEvent).where(AuditEvent.action == "report.export")
        ).scalar_one()
    assert event.outcome == "error"
    assert 0 < event.detail["rows"] < 11
