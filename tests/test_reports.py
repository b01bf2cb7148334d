"""Managers' reports (issue 6): figures against hand-made fixtures, access per role, exports
(formula neutralisation, the manager's time zone, the audit trail), bad filters."""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from openpyxl import load_workbook
from sqlalchemy import event, select, update

from tests.conftest import login

MANAGER_TZ = "Asia/Vladivostok"  # UTC+10, no DST: a date moves to the next day in the evening


@dataclass
class World:
    now: datetime
    base: datetime
    c1: int
    c2: int
    d1: int
    d2: int
    manager: str
    admin: str
    doctor: str
    duty: str
    patient: str
    patient_user_id: int
    numbers: dict[str, str]


def _at(base: datetime, days: float) -> datetime:
    return base + timedelta(days=days)


@pytest.fixture
def world(app, make_center, make_doctor, make_staff, make_patient) -> World:
    """A known set of consultations.

    Service level (submitted `base` = 10 days ago unless said otherwise):
      centre_request: a in time (scheduled +2 d), b late (+4 d), c overdue (still requested),
        d waiting (submitted yesterday), e declined in time (+1 d), f withdrawn (cancelled by
        the patient +1 d), g cancelled by staff after the due time (+3.5 d) → overdue
      referral (4 days): h in time (+3.5 d), i late (+5 d)
      duty: j (not part of the service level), k missed
    → centre 2 in time of 5 counted (40 %), referral 1 of 2 (50 %), all 3 of 7 (42.9 %).
    """
    from app.extensions import db
    from models import Consultation, Doctor, OblakoUser, Patient

    now = datetime.now(UTC).replace(microsecond=0)
    base = now - timedelta(days=10)
    c1, c2 = make_center("Центр Север"), make_center("Центр Юг")
    d1, d2 = make_doctor(center_id=c1), make_doctor(center_id=c2)
    duty = make_doctor(is_duty=True)
    manager, admin = make_staff("Manager"), make_staff("Admin")
    p1 = make_patient(surname="Отчётова")
    p2 = make_patient(surname="Вторая")
    three, four = timedelta(days=3), timedelta(days=4)
    with app.app_context():
        patient = db.session.get(Patient, p1)
        staff_user = db.session.get(Doctor, d1).user
        db.session.execute(
            update(OblakoUser).where(OblakoUser.username == manager).values(timezone=MANAGER_TZ)
        )

        def make(key: str, **kw) -> Consultation:
            submitted = kw.pop("submitted_at", base)
            kind = kw.pop("kind", "centre_request")
            due = None
            if kind in ("centre_request", "referral") and submitted is not None:
                due = submitted + (three if kind == "centre_request" else four)
            c = Consultation(
                kind=kind,
                patient_id=kw.pop("patient_id", p1),
                center_id=kw.pop("center_id", c1),
                created_at=kw.pop("created_at", submitted or base),
                submitted_at=submitted,
                due_by=due,
                **kw,
            )
            db.session.add(c)
            return c

        made = {
            "a": make("a", status="scheduled", doctor_id=d1, scheduled_set_at=_at(base, 2),
                      scheduled_at=_at(base, 5)),
            "b": make("b", status="completed", doctor_id=d1, scheduled_set_at=_at(base, 4),
                      scheduled_at=_at(base, 6), completed_at=_at(base, 6.1)),
            "c": make("c", status="requested"),
            "d": make("d", status="requested", submitted_at=now - timedelta(days=1)),
            "e": make("e", status="rejected", rejected_at=_at(base, 1), reviewed_at=_at(base, 1)),
            "f": make("f", status="cancelled", cancelled_at=_at(base, 1),
                      cancelled_by_id=patient.user_id, cancel_reason="=HYPERLINK(\"http://x\")"),
            "g": make("g", status="cancelled", cancelled_at=_at(base, 3.5),
                      cancelled_by_id=staff_user.id, cancel_reason="+79001234567 звонил\x07"),
            "h": make("h", kind="referral", status="scheduled", doctor_id=d2, center_id=c2,
                      scheduled_set_at=_at(base, 3.5), scheduled_at=_at(base, 6)),
            "i": make("i", kind="referral", status="scheduled", doctor_id=d2, center_id=c2,
                      scheduled_set_at=_at(base, 5), scheduled_at=_at(base, 7), patient_id=p2),
            "j": make("j", kind="duty", status="completed", doctor_id=duty, center_id=None,
                      scheduled_set_at=_at(base, 0), scheduled_at=_at(base, 0.5),
                      completed_at=_at(base, 0.6)),
            "k": make("k", kind="duty", status="missed", doctor_id=duty, center_id=None,
                      scheduled_set_at=_at(base, 0), scheduled_at=_at(base, 1),
                      missed_at=_at(base, 1.1)),
        }  # fmt: skip
        db.session.commit()
        numbers = {k: c.label for k, c in made.items()}
        doctor_username = db.session.get(Doctor, d1).user.username
        duty_username = db.session.get(Doctor, duty).user.username
        patient_login = patient.phone
        patient_user_id = patient.user_id
    return World(
        now, base, c1, c2, d1, d2, manager, admin, doctor_username, duty_username,
        patient_login, patient_user_id, numbers,
    )  # fmt: skip


def period(w: World) -> str:
    start = (w.base - timedelta(days=2)).date().isoformat()
    end = (w.now + timedelta(days=2)).date().isoformat()
    return f"date_from={start}&date_to={end}"


def signed_in(app, username: str):
    client = app.test_client()
    assert login(client, username).status_code == 302
    return client


def report_urls(app) -> list[str]:
    urls = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint.split(".")[0].startswith("reports"):
            url = rule.rule.replace("<uuid:public_id>", "00000000-0000-4000-8000-000000000000")
            url = url.replace("<path:filename>", "admin/css/bootstrap4/admin.css")
            urls.append(url)
    return sorted(urls)


# ---------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Access
# ---------------------------------------------------------------------------------------------


def test_every_reports_url_is_gated(app, world):
    urls = report_urls(app)
    assert len(urls) >= 21
    outsiders = {
        "doctor": world.doctor,
        "duty doctor": world.duty,
        "patient": world.patient,
    }
    anonymous = app.test_client()
    for url in urls:
        response = anonymous.get(url)
        assert response.status_code == 302, url
        assert response.headers["Location"].startswith("/login/"), url
    for who, username in outsiders.items():
        client = signed_in(app, username)
        for url in urls:
            response = client.get(url)
            assert response.status_code == 403, f"{who} {url} {response.status_code}"
            assert "Центр Север" not in response.get_data(as_text=True)
    from app.extensions import db
    from models import AuditEvent

    with app.app_context():
        assert (
            db.session.execute(
                select(AuditEvent).where(AuditEvent.action == "report.export")
            ).first()
            is None
        )


@pytest.mark.parametrize("role", ["manager", "admin"])
def test_managers_and_admins_open_every_report(app, world, role):
    client = signed_in(app, getattr(world, role))
    for url in report_urls(app):
        if "<" in url:
            continue
        response = client.get(url)
        expected = 404 if "00000000-0000" in url else 200
        assert response.status_code == expected, f"{url} {response.status_code}"


@pytest.mark.no_db
def test_reports_are_read_only(app):
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith("reports"):
            assert rule.methods <= {"GET", "HEAD", "OPTIONS"}, rule


def test_main_menu_links_to_reports(app, world):
    manager = signed_in(app, world.manager).get("/notifications/").get_data(as_text=True)
    assert 'href="/reports/"' in manager
    doctor = signed_in(app, world.doctor).get("/notifications/").get_data(as_text=True)
    assert 'href="/reports/"' not in doctor


# ---------------------------------------------------------------------------------------------
# Exports
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Bad input and scale
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("date_from=31.02.2026", "не является датой"),
        ("date_from=garbage", "не является датой"),
        ("date_from=2026-05-02&date_to=2026-05-01", "Период начинается после"),
        ("kind=nonsense", "неизвестное значение"),
        ("status=deleted", "неизвестное значение"),
        ("centre=not-a-uuid", "неизвестное значение"),
        ("centre=00000000-0000-4000-8000-000000000000", "неизвестное значение"),
        ("page=-1", "Номер страницы"),
        ("colour=red", "Неизвестный фильтр"),
    ],
)
def test_bad_filters_get_a_message_not_a_500(app, world, query, message):
    client = signed_in(app, world.manager)
    for url in ("/reports/consultations/", "/reports/consultations/export.xlsx"):
        response = client.get(f"{url}?{query}")
        assert response.status_code == 400, (url, query)
        assert message in response.get_data(as_text=True), (url, query)


def test_every_report_refuses_bad_filters_politely(app, world):
    client = signed_in(app, world.manager)
    for url in report_urls(app):
        if "static" in url or "00000000" in url:
            continue
        for query in ("colour=red", "date_to=2026-13-45", "page=abc"):
            response = client.get(f"{url}?{query}")
            assert response.status_code == 400, (url, query, response.status_code)
            assert 'id="report-error"' in response.get_data(as_text=True), (url, query)


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
