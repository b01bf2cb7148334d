"""Managers' reports, their figures against hand-made consultations: service level, counts,
doctors' load, cancellations, the dashboard, referral imports, the outbox; queries per page."""

from __future__ import annotations

import csv
import io
import re
from datetime import datetime, timedelta

import pytest
from sqlalchemy import event, update

from tests.reports_world import World, period, signed_in, stage_world


@pytest.fixture
def world(app, make_center, make_doctor, make_staff, make_patient) -> World:
    """The known consultations of tests/reports_world.py."""
    return stage_world(app, make_center, make_doctor, make_staff, make_patient)


def test_service_level_figures(app, world):
    from app.reports.filters import parse_filters
    from app.reports.service_level import sla_report

    with app.test_request_context():
        f = parse_filters(
            "sla",
            {"date_from": (world.base - timedelta(days=1)).date().isoformat()},
            tz="Europe/Moscow",
        )
        report = sla_report(f, now=world.now)
    lines = {line.kind: line for line in report.lines}
    centre, referral = lines["centre_request"], lines["referral"]
    assert centre.counts == {"in_time": 2, "late": 1, "overdue": 2, "waiting": 1, "withdrawn": 1}
    assert centre.share == pytest.approx(40.0)
    assert referral.counts == {"in_time": 1, "late": 1}
    assert referral.share == pytest.approx(50.0)
    assert report.overall.share == pytest.approx(300 / 7)
    # answered: a (2 d), b (4 d), e (1 d) → 56 h on average
    assert centre.average_hours == pytest.approx(56.0)
    # the overdue list: late ones and unanswered past due, most overdue first
    listed = {r[0] for r in report.page.rows}
    assert listed == {world.numbers[k] for k in ("b", "c", "g", "i")}


def test_service_level_page_and_scope(app, world):
    client = signed_in(app, world.manager)
    html = client.get(f"/reports/sla/?{period(world)}").get_data(as_text=True)
    assert "42.9" in html and "40.0" in html and "50.0" in html
    for key in ("b", "c", "g", "i"):
        assert world.numbers[key] in html
    assert world.numbers["a"] not in html
    everything = client.get(f"/reports/sla/?{period(world)}&scope=all").get_data(as_text=True)
    assert all(world.numbers[k] in everything for k in "abcdefghi")
    assert world.numbers["j"] not in everything  # duty bookings make no promise


def test_consultation_counts_and_filters(app, world):
    client = signed_in(app, world.manager)
    html = client.get(f"/reports/consultations/?{period(world)}").get_data(as_text=True)
    assert 'id="consultations-total">11<' in html
    from app.extensions import db
    from models import MedicalCenter

    with app.app_context():
        c2 = db.session.get(MedicalCenter, world.c2).public_id
    only_c2 = client.get(f"/reports/consultations/?{period(world)}&centre={c2}")
    assert 'id="consultations-total">2<' in only_c2.get_data(as_text=True)
    cancelled = client.get(f"/reports/consultations/?{period(world)}&status=cancelled")
    text = cancelled.get_data(as_text=True)
    assert 'id="consultations-total">2<' in text
    assert world.numbers["f"] in text and world.numbers["a"] not in text


def test_doctor_load(app, world):
    from app.reports.filters import parse_filters
    from app.reports.queries import load_report

    with app.test_request_context():
        f = parse_filters("load", {"date_from": world.base.date().isoformat()}, tz="UTC")
        page = load_report(f)
    by_doctor = {r[0]: r for r in page.rows}
    assert page.total == 3
    # columns: public_id, name, centre, scheduled, in_progress, completed, cancelled, missed, total
    from app.extensions import db
    from models import Doctor

    with app.app_context():
        d1 = db.session.get(Doctor, world.d1).public_id
        d2 = db.session.get(Doctor, world.d2).public_id
    assert tuple(by_doctor[d1][3:]) == (1, 0, 1, 0, 0, 2)
    assert tuple(by_doctor[d2][3:]) == (2, 0, 0, 0, 0, 2)


def test_cancellations_by_who(app, world):
    from app.reports.filters import parse_filters
    from app.reports.queries import cancellations_report

    with app.test_request_context():
        f = parse_filters("cancellations", {"date_from": world.base.date().isoformat()}, tz="UTC")
        report = cancellations_report(f)
    assert report.by_who == {"patient": 1, "staff": 1, "missed": 1}
    assert report.total == 3
    rows = {r[0]: r for r in report.page.rows}
    assert rows[world.numbers["g"]][8]  # the staff member who cancelled is named
    assert rows[world.numbers["f"]][8] == ""  # a patient never is


def test_dashboard_charts(app, world):
    client = signed_in(app, world.admin)
    response = client.get("/reports/")
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert html.count("<svg") == 4 and 'role="img"' in html
    charts = re.findall(r"<svg.*?</svg>", html, flags=re.S)
    assert len(charts) == 4 and not any("<script" in c for c in charts)  # no JS
    for address in re.findall(r'(?:src|href)="([^"]+)"', html):
        assert not address.startswith(("http:", "https:", "//")), address  # nothing external
    from app.reports.dashboard import dashboard

    with app.test_request_context():
        data = dashboard("Europe/Moscow", now=world.now)
    assert [sum(data.by_kind[k]) for k in ("centre_request", "referral", "duty")] == [7, 2, 2]
    assert (sum(data.cancelled), sum(data.missed)) == (2, 1)
    assert sum(data.sla_counted) == 7
    shares = [s for s in data.sla_share if s is not None]
    assert len(shares) == 1 and shares[0] == pytest.approx(300 / 7)  # all in one week
    assert {name for name, _total, _done in data.load} and len(data.load) == 3


def test_referral_progress(app, world, make_patient):
    from app.extensions import db
    from app.reports.filters import parse_filters
    from app.reports.queries import referrals_report
    from models import Consultation, OblakoUser, Patient, ReferralImport, ReferralImportRow

    invited = make_patient(surname="Приглашённая", phone="+79990000001")
    with app.app_context():
        imp = ReferralImport(file_sha256="0" * 64, original_name="направления.xlsx", total_rows=3)
        db.session.add(imp)
        db.session.flush()
        patient = db.session.get(Patient, invited)
        c = Consultation(
            kind="referral", status="scheduled", patient_id=invited, center_id=world.c1,
            submitted_at=world.base, due_by=world.base + timedelta(days=4),
            scheduled_set_at=world.base + timedelta(days=1),
            scheduled_at=world.base + timedelta(days=2),
        )  # fmt: skip
        db.session.add(c)
        db.session.flush()
        db.session.add_all(
            [
                ReferralImportRow(
                    import_id=imp.id, row_number=2, outcome="imported", patient_id=invited,
                    data={"consultation_id": c.id},
                ),
                ReferralImportRow(import_id=imp.id, row_number=3, outcome="invalid", data={}),
                ReferralImportRow(import_id=imp.id, row_number=4, outcome="pending", data={}),
            ]
        )  # fmt: skip
        db.session.execute(
            update(OblakoUser)
            .where(OblakoUser.id == patient.user_id)
            .values(last_login=datetime.now(), must_change_password=False)
        )
        db.session.commit()
        public_id = imp.public_id
    with app.test_request_context():
        f = parse_filters("referrals", {}, tz="UTC")
        page = referrals_report(f)
    (row,) = page.rows
    # rows, imported, invalid, activated, documents, scheduled, completed
    assert tuple(row[4:]) == (3, 1, 1, 1, 1, 1, 0)
    client = signed_in(app, world.manager)
    detail = client.get(f"/reports/referrals/{public_id}/").get_data(as_text=True)
    assert "Приглашённая" in detail and "+79990000001" in detail
    data = client.get(f"/reports/referrals/export.csv?import={public_id}").get_data()
    rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig")), delimiter=";"))
    assert rows[0][3:5] == ["Пациент", "Телефон"]
    assert rows[1][3].startswith("Приглашённая") and rows[1][4] == "'+79990000001"
    assert rows[1][6:8] == ["Да", "Да"]
    assert len(rows) == 4


def test_personal_data_columns_follow_the_role(app, world):
    """Only PERSONAL_DATA_ROLES get names and phones: another role's export has no such
    columns (the reports are open to Manager and Admin only, both allowed today)."""
    from app.reports.export_columns import build_export
    from app.reports.filters import parse_filters

    class Role:
        def __init__(self, name: str) -> None:
            self.name = name

    class Someone:
        is_authenticated = True
        id = None

        def __init__(self, role: str) -> None:
            self.roles = [Role(role)]

    with app.test_request_context():
        f = parse_filters("referrals", {}, tz="UTC")
        manager = build_export("referrals", f, user=Someone("Manager"))
        other = build_export("referrals", f, user=Someone("Statistician"))
        assert "Пациент" in [str(c.label) for c in manager.columns]
        assert "Пациент" not in [str(c.label) for c in other.columns]
        assert "Телефон" not in [str(c.label) for c in other.columns]
        outbox = build_export("outbox", f, user=Someone("Statistician"))
        assert "Получатель" not in [str(c.label) for c in outbox.columns]


def test_outbox_delivery(app, world):
    from app.extensions import db
    from models import OutboundMessage

    with app.app_context():
        db.session.add_all(
            [
                OutboundMessage(channel="sms", recipient="+79000000001", body="секрет-код 1",
                                status="sent"),
                OutboundMessage(channel="sms", recipient="+79000000002", body="секрет-код 2",
                                status="failed", attempts=5, last_error="=timeout"),
                OutboundMessage(channel="email", recipient="a@example.org", body="x",
                                status="queued"),
            ]
        )  # fmt: skip
        db.session.commit()
    client = signed_in(app, world.manager)
    html = client.get("/reports/outbox/").get_data(as_text=True)
    assert "+79000000002" in html and "=timeout" in html
    assert "секрет-код" not in html  # message bodies (passwords) never appear
    data = client.get("/reports/outbox/export.csv").get_data().decode("utf-8-sig")
    assert "секрет-код" not in data
    rows = list(csv.reader(io.StringIO(data), delimiter=";"))
    assert len(rows) == 4 and "'=timeout" in rows[2]


def test_queries_per_page_do_not_grow_with_rows(app, world, make_patient):
    from app.extensions import db
    from models import Consultation

    client = signed_in(app, world.manager)

    def statements(url: str) -> int:
        seen: list[str] = []

        def count(*_args) -> None:
            seen.append("q")

        with app.app_context():
            engine = db.engine
        event.listen(engine, "before_cursor_execute", count)
        try:
            assert client.get(url).status_code == 200
        finally:
            event.remove(engine, "before_cursor_execute", count)
        return len(seen)

    pages = [f"/reports/{r}/?{period(world)}" for r in ("consultations", "sla", "load")]
    pages += [f"/reports/cancellations/?{period(world)}", "/reports/"]
    before = [statements(u) for u in pages]
    extra = make_patient()
    with app.app_context():
        db.session.add_all(
            Consultation(
                kind="centre_request", status="cancelled", patient_id=extra, center_id=world.c1,
                doctor_id=world.d1, submitted_at=world.base, due_by=world.base + timedelta(days=3),
                created_at=world.base, cancelled_at=world.base + timedelta(hours=i),
                scheduled_at=world.base + timedelta(days=1),
            )
            for i in range(120)
        )  # fmt: skip
        db.session.commit()
    after = [statements(u) for u in pages]
    assert after == before
