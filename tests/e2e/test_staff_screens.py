"""Flask-AppBuilder's staff screens in a real browser under the strict CSP (issue 15, item 7).

FAB's list, search and action widgets were wired by inline scripts; our template overrides move
them to app/static/oblako/fab.js. Here an Admin uses each of them — a search filter, a row's
delete button and its confirmation, an action on the checked rows, an action on a shown record,
select2 and the date picker of a form — and the page reports no CSP violation (conftest).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pytest
from flask import Flask
from playwright.sync_api import expect
from sqlalchemy import select

from tests.conftest import TEST_PASSWORD
from tests.e2e.conftest import DEFAULT_TIMEOUT_MS

if TYPE_CHECKING:
    from tests.e2e.conftest import LiveServer

pytestmark = [pytest.mark.e2e, pytest.mark.once]

DESKTOP = {"viewport": {"width": 1280, "height": 900}, "locale": "ru-RU"}


def _names(app: Flask, model, column) -> set[str]:
    from app.extensions import db

    with app.app_context():
        return set(db.session.execute(select(column)).scalars())


def test_admin_uses_fab_lists_actions_and_pickers(
    app: Flask, live_server: LiveServer, browser, make_staff, make_center, make_doctor
) -> None:
    from flask_appbuilder.security.sqla.models import Role

    from app.extensions import db
    from models import MedicalCenter, OblakoUser

    admin = make_staff("Admin")
    make_center("Центр Альфа")
    make_center("Центр Бета")
    make_doctor(is_duty=True)
    with app.app_context():
        admin_id = db.session.execute(
            select(OblakoUser.id).where(OblakoUser.username == admin)
        ).scalar_one()

    context = browser.new_context(base_url=live_server.url, **DESKTOP)
    context.set_default_timeout(DEFAULT_TIMEOUT_MS)
    page = context.new_page()
    try:
        page.goto("/login/")
        page.fill("#username", admin)
        page.fill("#password", TEST_PASSWORD)
        page.locator("form [type=submit]").click()
        page.wait_for_url(re.compile(r"^(?!.*/login/).*$"))

        # Search: "Add filter" → the centre's name → only that centre is listed.
        page.goto("/centres/list/")
        page.locator("a.accordion-toggle").first.click()  # the collapsed "Search" panel
        page.locator("#filter_form .dropdown-toggle").click()
        page.locator("#filter_form a.filter[name=name]").click()
        page.locator("#filter_form table.filters input[type=text]").fill("Центр Альфа")
        page.locator("#filter_form [type=submit]").click()
        page.wait_for_url(re.compile(r"_flt_"))
        table = page.locator("table.table-hover").last
        expect(table).to_contain_text("Центр Альфа")
        expect(table).not_to_contain_text("Центр Бета")

        # A row's delete button asks first, then deletes.
        page.goto("/centres/list/")
        page.locator("tr", has_text="Центр Бета").locator("[data-fab-delete]").click()
        expect(page.locator("#modal-confirm")).to_be_visible()
        page.locator("#modal-confirm-ok").click()
        expect(page.locator("tr", has_text="Центр Бета")).to_have_count(0)
        assert _names(app, MedicalCenter, MedicalCenter.name) == {"Центр Альфа"}

        # An action on the checked rows, with its confirmation: copy a role (the built-in roles
        # of the matrix have no checkbox; the database's own do).
        roles_before = _names(app, Role, Role.name)
        page.goto("/roles/list/")
        page.locator("input.action_check").first.check()
        page.locator(".btn-group", has_text="Действия").locator(".dropdown-toggle").first.click()
        page.locator("[data-fab-multiple-action=copyrole]").click()
        expect(page.locator("#modal-confirm")).to_be_visible()
        # FAB's OK link is href="#": wait for the form's POST, not the hash navigation.
        with page.expect_response(re.compile(r"/roles/action_post")):
            page.locator("#modal-confirm-ok").click()
        page.wait_for_load_state()
        assert len(_names(app, Role, Role.name) - roles_before) == 1

        # An action on the shown record: reset this user's password.
        page.goto(f"/users/show/{admin_id}")
        page.locator("[data-fab-single-action]").first.click()
        page.wait_for_url(re.compile(r"/resetpassword/form"))

        # A form: select2 opens its list, the date picker its calendar.
        page.goto("/duty-shifts/add")
        page.locator(".select2-container").first.click()
        expect(page.locator(".select2-results").first).to_be_visible()
        page.keyboard.press("Escape")
        page.locator("#starts_at").click()
        expect(page.locator(".datepicker-dropdown").first).to_be_visible()
    finally:
        context.close()
