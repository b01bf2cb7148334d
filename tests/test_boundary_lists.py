"""Bad paging, sorting and filter parameters on every list are a 400 with a Russian message.

The lists are discovered from the app: every Flask-AppBuilder CRUD view registered in the
appbuilder (FAB's user and role screens included), and every parameterless GET route of a FAB
view (the project's own list pages, the documents API). Each is asked, as a role the permission
matrix lets see it, with the values a fuzz found to give 500 (or an English FAB message) on
SQLite or PostgreSQL: never a 500, and a bad value is a 400 whose text is Russian.
"""

from __future__ import annotations

import re
from urllib.parse import urlencode

import pytest
from flask import Flask

from app.permissions import ADMIN, DOCTOR, DUTY_DOCTOR, MANAGER, PATIENT, ROLE_MATRIX

TWENTY_DIGITS = "9" * 20
CYRILLIC = re.compile("[а-яё]{4,}", re.IGNORECASE)
FAB_PAGE_VALUES = ["abc", "1.5", TWENTY_DIGITS, "-1", "²", " "]
SIZE_VALUES = ["-5", "0", "abc", TWENTY_DIGITS, "1000"]
OWN_PAGE_VALUES = ["abc", "1.5", TWENTY_DIGITS, "-1", "0", "²"]
SKIPPED = ("OblakoAuthDBView.", "LocaleView.", "UtilView.", "SecurityApi.")


def may(role: str, view_name: str, permission: str) -> bool:
    return any(
        re.match(v, view_name) and re.match(p, permission) for v, p in ROLE_MATRIX.get(role, [])
    )


def role_for(view, method: str) -> str:
    """The least privileged role that may call `method` of `view`."""
    permission = "can_" + view.method_permission_name.get(method, method)
    name = view.class_permission_name
    for role in (PATIENT, DUTY_DOCTOR, DOCTOR, MANAGER, ADMIN):
        if may(role, name, permission):
            return role
    return ADMIN


def fab_view(app: Flask, endpoint: str):
    from flask_appbuilder.baseviews import AbstractViewApi

    owner = getattr(app.view_functions[endpoint], "__self__", None)
    return owner if isinstance(owner, AbstractViewApi) else None


def crud_lists(app: Flask) -> list:
    views = [
        v
        for v in app.appbuilder.baseviews
        if hasattr(v, "datamodel") and getattr(v, "_filters", None) is not None
    ]
    listed = [v for v in views if f"{v.endpoint}.list" in app.view_functions]
    assert len(listed) >= 10, [v.__class__.__name__ for v in listed]
    return listed


def own_list_routes(app: Flask) -> list[tuple[str, object]]:
    routes = []
    for rule in app.url_map.iter_rules():
        if "GET" not in (rule.methods or ()) or rule.arguments or rule.endpoint.startswith(SKIPPED):
            continue
        view = fab_view(app, rule.endpoint)
        if view is not None and not hasattr(view, "datamodel"):
            routes.append((rule.rule, view, rule.endpoint.rsplit(".", 1)[1]))
    assert any(r[0] == "/cabinet/documents/" for r in routes), routes
    return routes


def assert_refused(response, what) -> None:
    assert response.status_code == 400, (what, response.status_code)
    body = response.get_json()["message"] if response.is_json else response.get_data(as_text=True)
    assert CYRILLIC.search(body), (what, body[:300])
    assert "An error occurred" not in body, what


def assert_no_500(response, what) -> None:
    assert response.status_code < 500, (what, response.status_code)
    body = response.get_data(as_text=True)
    assert "An error occurred" not in body, what
    if response.status_code == 400:
        assert CYRILLIC.search(body), (what, body[:300])


def get(client, url: str, params: dict):
    return client.get(f"{url}?{urlencode(params)}")


def test_every_fab_list_refuses_bad_paging_and_sorting(app, role_client):
    for view in crud_lists(app):
        name = view.__class__.__name__
        client = role_client(role_for(view, "list"))
        with app.test_request_context():
            from flask import url_for

            url = url_for(f"{view.endpoint}.list")
        assert client.get(url).status_code == 200, name
        ok = get(client, url, {f"page_{name}": "0", f"psize_{name}": "25"})
        assert ok.status_code == 200, name
        for value in FAB_PAGE_VALUES:
            assert_refused(get(client, url, {f"page_{name}": value}), (name, "page", value))
        for value in SIZE_VALUES:
            assert_refused(get(client, url, {f"psize_{name}": value}), (name, "psize", value))
        for column in ("unknown", "user.password", "password"):
            params = {f"_oc_{name}": column, f"_od_{name}": "asc"}
            assert_refused(get(client, url, params), (name, "order", column))
        if view.order_columns:
            column = view.order_columns[0]
            params = {f"_oc_{name}": column, f"_od_{name}": "desc"}
            assert get(client, url, params).status_code == 200, (name, column)
            params[f"_od_{name}"] = "sideways"
            assert_refused(get(client, url, params), (name, "direction"))
        # The show page reads the same paging arguments (for its related lists).
        assert_refused(get(client, url.replace("/list/", "/show/1"), {f"page_{name}": "x"}), name)


def test_every_fab_filter_takes_only_values_it_can_use(app, role_client):
    """Every search column, every filter index and one past the last, with values of every
    shape: a value the filter cannot put into SQL is a 400, a usable one the list."""
    values = ["abc", "", TWENTY_DIGITS, "1.5", "y"]
    for view in crud_lists(app):
        name = view.__class__.__name__
        client = role_client(role_for(view, "list"))
        url = f"/{view.route_base.strip('/')}/list/"
        for column, filters in view._filters.get_search_filters().items():
            if len(filters) < 10:  # FAB reads one digit: "_flt_10_x" is no filter at all
                assert_refused(get(client, url, {f"_flt_{len(filters)}_{column}": "x"}), column)
            indexes = range(len(filters))
            if view.datamodel.is_string(column) or view.datamodel.is_text(column):
                indexes = (0, len(filters) - 1)  # any text is a usable value: spare the CPU
            for index in indexes:
                for value in values:
                    what = (name, column, index, value)
                    assert_no_500(get(client, url, {f"_flt_{index}_{column}": value}), what)
        assert_refused(get(client, url, {"_flt_0_no_such_column": "x"}), (name, "column"))


@pytest.mark.parametrize(
    ("view_name", "column", "value"),
    [
        ("UserDBModelView", "active", ""),  # PostgreSQL: boolean = character varying
        ("UserDBModelView", "active", "n"),
        ("DoctorView", "center", "abc"),  # PostgreSQL: ApplyFilterException: DataError
        ("DoctorView", "center", TWENTY_DIGITS),
        ("SlotView", "starts_at", "not a date"),
    ],
)
def test_the_filters_the_review_found(app, role_client, view_name, column, value):
    view = next(v for v in crud_lists(app) if v.__class__.__name__ == view_name)
    client = role_client(role_for(view, "list"))
    url = f"/{view.route_base.strip('/')}/list/"
    assert_refused(get(client, url, {f"_flt_0_{column}": value}), (view_name, column, value))
    assert (
        get(client, url, {f"_flt_0_{column}": "y" if column == "active" else "1"}).status_code < 500
    )


def test_every_own_list_page_refuses_a_bad_page(app, role_client):
    for path, view, method in own_list_routes(app):
        client = role_client(role_for(view, method))
        for value in OWN_PAGE_VALUES:
            assert_refused(get(client, path, {"page": value}), (path, value))
        for value in SIZE_VALUES:
            assert_refused(get(client, path, {"page_size": value}), (path, value))
    patient = role_client(PATIENT)
    assert patient.get("/cabinet/documents/?page=2").status_code == 200
    api = patient.get(f"/api/v1/my/documents/?page={TWENTY_DIGITS}")
    assert api.status_code == 400
    assert CYRILLIC.search(api.get_json()["message"])


def test_the_reports_parse_the_page_number_by_the_same_rule(app, role_client):
    """Flask-AppBuilder's lists and the reports (Flask-Admin) share app.boundary.parse_page:
    a Unicode digit such as «²» passed str.isdigit() there and failed in int() (a 500)."""
    manager = role_client(MANAGER)
    for value in ("²", TWENTY_DIGITS, "-1", "abc"):
        response = manager.get(f"/reports/consultations/?page={value}")
        assert response.status_code == 400, value
        assert 'id="report-error"' in response.get_data(as_text=True)
