"""Managers' reports, who gets in: every reports URL gated per role, managers and admins open
every report, read-only routes, the menu link; bad filters get a message, never a 500."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from tests.reports_world import World, report_urls, signed_in, stage_world


@pytest.fixture
def world(app, make_center, make_doctor, make_staff, make_patient) -> World:
    """The known consultations of tests/reports_world.py."""
    return stage_world(app, make_center, make_doctor, make_staff, make_patient)


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
