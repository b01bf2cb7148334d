"""Light, accessible, installable pages on a small phone (issue 17, items 6, 7 and 8).

Every patient page — the cabinet, documents, consultations, booking, the application, the
notifications, the profile and the consultation room — is opened at 360×740 as a patient on a
first visit (the browser's cache emptied) and again (the repeat visit): the bytes received, as
Chromium counts them (compressed bodies plus headers, tests/e2e/conftest.py transfer_bytes), stay
within 300 KB and 30 KB. Each page then passes axe-core with no critical and no serious
violation, and has lang="ru", one h1, a main landmark and a named menu button. The staff pages
that share the layout (the doctors' queue, day and consultation pages, the managers' referrals,
outbox and reports) pass the same axe check; the reports dashboard also gets the weight limits.

The weights are measured with service workers blocked: the pages' own requests, every one of
them on the network (a page the worker fetched would not be counted on the page). The worker
itself is checked in test_the_app_installs_and_shows_the_offline_page_without_network.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import timedelta
from typing import TYPE_CHECKING

import pytest
from flask import Flask, url_for
from playwright.sync_api import Page, expect

from tests.conftest import add_shift, patient_username, tomorrow_at
from tests.consultation_world import World, make_consultation
from tests.e2e.conftest import (
    DEFAULT_TIMEOUT_MS,
    PHONE,
    assert_axe_clean,
    assert_no_horizontal_overflow,
    assert_page_landmarks,
    clear_browser_cache,
    sign_in,
    transfer_bytes,
)
from tests.referral_tables import row, xlsx

if TYPE_CHECKING:
    from tests.e2e.conftest import LiveServer

pytestmark = [pytest.mark.e2e, pytest.mark.once]

SMALL_PHONE = {**PHONE, "viewport": {"width": 360, "height": 740}}
FIRST_VISIT_LIMIT = 300 * 1024
REPEAT_VISIT_LIMIT = 30 * 1024
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def _username(app: Flask, user_id: int) -> str:
    from app.extensions import db
    from models import OblakoUser

    with app.app_context():
        return db.session.get(OblakoUser, user_id).username


def _scheduled_soon(app: Flask, world: World) -> uuid.UUID:
    """A consultation with centre 1's doctor in five minutes: the room is open."""
    from models import utcnow

    return make_consultation(
        app,
        world,
        status="scheduled",
        doctor_id=world.doctors["doctor_c1"],
        scheduled_at=utcnow() + timedelta(minutes=5),
        duration_minutes=30,
    )


def _notify(app: Flask, user_id: int, text: str, link: str = "") -> None:
    from app.extensions import db
    from models import Notification

    with app.app_context():
        db.session.add(Notification(user_id=user_id, kind="info", text=text, link=link))
        db.session.commit()


def _context(browser, live_server: LiveServer, **options):
    context = browser.new_context(base_url=live_server.url, **{**SMALL_PHONE, **options})
    context.set_default_timeout(DEFAULT_TIMEOUT_MS)
    return context


def _weigh(page: Page, path: str) -> tuple[int, int]:
    clear_browser_cache(page)
    first = transfer_bytes(page, path)
    repeat = transfer_bytes(page, path)
    return first, repeat


def _check_pages(page: Page, paths: list[str], *, weigh: bool, landmarks: bool) -> list[str]:
    """Weighs (when asked) and checks every page, then fails with every problem found."""
    figures, problems = [], []
    for path in paths:
        if weigh:
            first, repeat = _weigh(page, path)
            figures.append(f"{path}: first {first / 1024:.1f} KB, repeat {repeat / 1024:.1f} KB")
            if first > FIRST_VISIT_LIMIT or repeat > REPEAT_VISIT_LIMIT:
                problems.append("over 300 KB first / 30 KB repeat: " + figures[-1])
        else:
            page.goto(path)
        assert not re.search(r"/login/?", page.url), f"{path} sent the user to sign in"
        # The patient's pages (landmarks checked) are read on phones: nothing wider than 360 px.
        patient_checks = (assert_page_landmarks, assert_no_horizontal_overflow)
        for check in (patient_checks if landmarks else ()) + (assert_axe_clean,):
            try:
                check(page)
            except AssertionError as exc:
                problems.append(f"{path}: {exc}")
    print("\n" + "\n".join(figures))
    assert not problems, "\n".join(problems)
    return figures


def test_every_patient_page_is_light_and_accessible_on_a_small_phone(
    app: Flask, live_server: LiveServer, browser, world: World
) -> None:
    consultation = _scheduled_soon(app, world)
    add_shift(app, world.doctors["duty"], tomorrow_at(10))
    _notify(
        app,
        world.users["patient"],
        "Консультация назначена",
        f"/cabinet/consultations/{consultation}",
    )
    context = _context(browser, live_server, service_workers="block")
    page = context.new_page()
    try:
        sign_in(page, live_server, patient_username(app, world.patient))
        paths = [
            "/cabinet/",
            "/cabinet/documents/",
            "/cabinet/documents/upload",
            "/cabinet/documents/readers",
            f"/cabinet/documents/{world.ecg}/",
            "/cabinet/consultations/",
            f"/cabinet/consultations/{consultation}",
            "/cabinet/booking/",
            "/cabinet/booking/?topic=cardiovascular",
            "/cabinet/applications/new",
            "/notifications/",
            "/profile/",
            "/profile/edit",
            "/account/password/",
        ]
        _check_pages(page, paths, weigh=True, landmarks=True)
    finally:
        context.close()


def test_the_room_is_light_and_accessible_on_a_small_phone(
    app: Flask, live_server: LiveServer, browser, world: World, media_server
) -> None:
    consultation = _scheduled_soon(app, world)
    previous = app.config.get("MEDIA_PUBLIC_URL", "")
    app.config["MEDIA_PUBLIC_URL"] = media_server.url
    context = _context(browser, live_server, service_workers="block")
    page = context.new_page()
    try:
        sign_in(page, live_server, patient_username(app, world.patient))
        path = f"/media/room/{consultation}"
        first, repeat = _weigh(page, path)
        print(f"\n{path}: first {first / 1024:.1f} KB, repeat {repeat / 1024:.1f} KB")
        assert first <= FIRST_VISIT_LIMIT and repeat <= REPEAT_VISIT_LIMIT, (first, repeat)
        expect(page.locator("#precall")).to_contain_text("Камера и микрофон работают")
        assert_page_landmarks(page)
        assert_axe_clean(page)
    finally:
        context.close()
        app.config["MEDIA_PUBLIC_URL"] = previous


def test_staff_pages_pass_axe_and_the_reports_dashboard_is_light(
    app: Flask, live_server: LiveServer, browser, world: World
) -> None:
    consultation = _scheduled_soon(app, world)
    make_consultation(app, world)  # a new application in the queue
    with app.test_request_context():
        outbox = url_for("OutboxView.list")
    pages = {
        "doctor_c1": (["/care/queue", f"/care/consultations/{consultation}"], False),
        "duty": (["/care/day"], False),
        "manager": (["/referrals/", outbox], False),
    }
    for actor, (paths, weigh) in pages.items():
        context = _context(browser, live_server, service_workers="block")
        page = context.new_page()
        try:
            sign_in(page, live_server, _username(app, world.users[actor]))
            _check_pages(page, paths, weigh=weigh, landmarks=False)
            if actor == "manager":
                # An uploaded referral table: its check page, one good row and one refused.
                page.goto("/referrals/")
                table = xlsx([row(), row(name="Петрова Ольга", phone="12")])
                page.set_input_files(
                    "#file",
                    files=[{"name": "направления.xlsx", "mimeType": XLSX, "buffer": table}],
                )
                page.locator("#upload-form [type=submit]").click()
                page.wait_for_url(re.compile(r"/referrals/[0-9a-f-]{36}$"))
                _check_pages(
                    page, [page.url.removeprefix(live_server.url)], weigh=False, landmarks=False
                )
                reports = [
                    "/reports/",
                    "/reports/consultations/",
                    "/reports/sla/",
                    "/reports/load/",
                    "/reports/cancellations/",
                    "/reports/referrals/",
                    "/reports/outbox/",
                ]
                _check_pages(page, reports[:1], weigh=True, landmarks=False)
                _check_pages(page, reports[1:], weigh=False, landmarks=False)
        finally:
            context.close()


def test_the_app_installs_and_shows_the_offline_page_without_network(
    app: Flask, live_server: LiveServer, browser, world: World
) -> None:
    context = _context(browser, live_server)
    page = context.new_page()
    try:
        sign_in(page, live_server, patient_username(app, world.patient))
        page.goto("/cabinet/")
        # The manifest, linked from the page: the service's name, a theme colour, PNG icons.
        href = page.locator("link[rel=manifest]").get_attribute("href")
        answer = page.request.get(href)
        assert answer.ok and answer.headers["content-type"].startswith("application/manifest+json")
        manifest = json.loads(answer.text())
        assert manifest["name"] == "Облако здоровья"
        assert manifest["display"] == "standalone" and manifest["start_url"] == "/"
        assert re.fullmatch(r"#[0-9a-f]{6}", manifest["theme_color"])
        theme = page.locator("meta[name=theme-color]").get_attribute("content")
        assert theme == manifest["theme_color"]
        sizes = set()
        for icon in manifest["icons"]:
            image = page.request.get(icon["src"])
            assert image.ok and image.headers["content-type"] == "image/png", icon
            assert image.body()[:8] == b"\x89PNG\r\n\x1a\n"
            sizes.add(icon["sizes"])
        assert {"192x192", "512x512"} <= sizes

        # The service worker takes the page; its cache holds the offline page alone.
        page.evaluate("() => navigator.serviceWorker.ready.then(() => true)")
        page.reload()
        page.wait_for_function("() => navigator.serviceWorker.controller !== null")
        cached = page.evaluate(
            """async () => {
              const urls = [];
              for (const name of await caches.keys()) {
                const cache = await caches.open(name);
                for (const request of await cache.keys()) urls.push(new URL(request.url).pathname);
              }
              return urls;
            }"""
        )
        assert cached == ["/offline"]

        # The network goes down: a page the patient opens shows the offline page.
        context.set_offline(True)
        try:
            page.goto("/cabinet/documents/")
            expect(page.locator("h1")).to_have_text("Нет связи")
            expect(page.locator("main")).to_contain_text("Проверьте мобильный интернет")
            assert_axe_clean(page)
        finally:
            context.set_offline(False)
        page.goto("/cabinet/documents/")
        expect(page.locator("h1")).not_to_have_text("Нет связи")
    finally:
        context.close()
