"""No NUL or control character gets past the request boundary, into any form or API field.

The forms are discovered from the app: every parameterless page of a Flask-AppBuilder view, the
add page of every CRUD view and the edit page of its first row, opened by every role and by a
visitor; every POST form found there is filled (plausible values, so that validation passes and
rows are written) with NUL, control characters and C1 characters inside every field, file names
included, and posted. Never a 500; afterwards no text column of any table holds such a
character, while the cleaned values were stored.
"""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from itertools import count
from urllib.parse import urljoin

from flask import Flask
from sqlalchemy import String, Text, select

from app.permissions import ADMIN, DOCTOR, DUTY_DOCTOR, MANAGER, PATIENT
from tests.conftest import TEST_PASSWORD, csrf_token

DIRT = "\x00\x01\x07\x1b\x7f\x85"
BAD = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]|\r(?!\n)")

SKIPPED_ACTIONS = (
    "/logout",
    "/lang/",
    "/login",
)
_n = count(1)


class Forms(HTMLParser):
    """The POST forms of a page: action and fields (name → kind, value, options)."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict] = []
        self.form: dict | None = None
        self.select: str | None = None
        self.textarea: str | None = None

    def handle_starttag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.form = {"method": a.get("method", "get").lower(), "action": a.get("action", "")}
            self.form["fields"] = {}
            self.forms.append(self.form)
        elif self.form is None or not a.get("name"):
            return
        elif tag == "input":
            kind = a.get("type", "text").lower()
            if kind in ("submit", "button", "image", "reset"):
                return
            if kind in ("checkbox", "radio") and a["name"] in self.form["fields"]:
                return
            self.form["fields"][a["name"]] = (kind, a.get("value", ""), [])
        elif tag == "select":
            self.select = a["name"]
            self.form["fields"][a["name"]] = ("select", "", [])
        elif tag == "option" and self.select:
            self.form["fields"][self.select][2].append(a.get("value", ""))
        elif tag == "textarea":
            self.form["fields"][a["name"]] = ("textarea", "", [])

    def handle_endtag(self, tag):
        if tag == "form":
            self.form = None
        elif tag == "select":
            self.select = None


def plausible(name: str, kind: str, value: str, options: list[str]) -> str:
    n = next(_n)
    low = name.lower()
    if kind == "select":
        return next((o for o in options if o and o != "__None"), value)
    if kind in ("checkbox", "radio"):
        return value or "y"
    if value and kind in ("hidden", "number", "date", "datetime-local"):
        return value
    if "phone" in low:
        return f"+7912{5000000 + n:07d}"
    if "email" in low:
        return f"dirt{n}@example.org"
    if "password" in low:
        return TEST_PASSWORD
    if "birth" in low or kind == "date":
        return "1980-01-02"
    if low.endswith(("_at", "starts", "ends", "date")) or "start" in low or "day" in low:
        tomorrow = datetime.now(UTC) + timedelta(days=2)
        return tomorrow.strftime("%Y-%m-%d 10:00")
    if "minutes" in low or "slot" in low or kind == "number":
        return "30"
    if "timezone" in low:
        return value or "Europe/Moscow"
    if "code" in low:
        return f"Z{n % 100:02d}.{n % 10}"
    return value or f"Текст{n}"


def dirty(value: str, textarea: bool) -> str:
    """`value` with control characters inside (and at the end, a lone CR and a line break
    for a text area): cleaned, it is the value again (plus the line break)."""
    if not value:
        return DIRT
    middle = len(value) // 2 or 1
    tail = "\r\nвторая строка\tтабуляция" if textarea else ""
    return value[:1] + DIRT + value[1:middle] + "\r" + value[middle:] + DIRT + tail


def pdf_bytes() -> bytes:
    from pypdf import PdfWriter

    writer = PdfWriter()
    writer.add_blank_page(width=200, height=200)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def fill(fields: dict) -> dict:
    data: dict = {}
    for name, (kind, value, options) in fields.items():
        if name == "csrf_token":
            data[name] = value
        elif kind == "file":
            data[name] = (io.BytesIO(pdf_bytes()), f"до{DIRT}кумент\r\n.pdf")
        else:
            value = plausible(name, kind, value, options)
            data[name] = dirty(value, kind == "textarea")
    return data


def pages(app: Flask) -> list[str]:
    from flask_appbuilder.baseviews import AbstractViewApi

    urls = []
    for rule in app.url_map.iter_rules():
        owner = getattr(app.view_functions[rule.endpoint], "__self__", None)
        if not isinstance(owner, AbstractViewApi) or "GET" not in (rule.methods or ()):
            continue
        if rule.arguments or rule.rule.startswith(("/api/", "/logout", "/lang")):
            continue
        urls.append(rule.rule)
    return urls


def edit_pages(client, app: Flask) -> list[str]:
    urls = []
    for view in app.appbuilder.baseviews:
        if not hasattr(view, "datamodel") or f"{view.endpoint}.list" not in app.view_functions:
            continue
        base = f"/{view.route_base.strip('/')}"
        urls.append(f"{base}/add")
        listing = client.get(f"{base}/list/").get_data(as_text=True)
        if match := re.search(rf'href="{re.escape(base)}/edit/(\d+)', listing):
            urls.append(f"{base}/edit/{match.group(1)}")
    return urls


def post_every_form(client, urls: list[str], seen: set) -> int:
    posted = 0
    for url in urls:
        page = client.get(url)
        assert page.status_code < 500, (url, page.status_code)
        if page.status_code != 200 or "html" not in page.content_type:
            continue
        parser = Forms()
        parser.feed(page.get_data(as_text=True))
        for form in parser.forms:
            action = urljoin(url, form["action"] or url).removeprefix("http://localhost")
            if form["method"] != "post" or action.startswith(SKIPPED_ACTIONS) or action in seen:
                continue
            seen.add(action)
            response = client.post(action, data=fill(form["fields"]))
            assert response.status_code < 500, (url, action, response.status_code)
            posted += 1
    return posted


def stored_texts(app: Flask) -> list[tuple[str, str, str]]:
    from app.extensions import db
    from models import Model

    found = []
    with app.app_context():
        for table in Model.metadata.sorted_tables:
            for column in table.columns:
                if not isinstance(column.type, String | Text):
                    continue
                for value in db.session.execute(select(column).where(column.isnot(None))).scalars():
                    found.append((table.name, column.name, value))
    return found


def test_every_form_is_cleaned_of_control_characters(app, role_client, make_center):
    make_center()  # a row to edit and to choose in the forms
    seen: set[str] = set()
    visitor = app.test_client()
    posted = post_every_form(visitor, pages(app), seen)
    for role in (PATIENT, DUTY_DOCTOR, DOCTOR, MANAGER, ADMIN):
        client = role_client(role)
        urls = pages(app) + edit_pages(client, app)
        # The own password last: changing it ends the session the other forms need.
        urls.sort(key=lambda u: "password" in u)
        posted += post_every_form(client, urls, set(seen))
    assert posted >= 20, posted

    texts = stored_texts(app)
    dirty_values = [(t, c, v) for t, c, v in texts if BAD.search(v)]
    assert not dirty_values, dirty_values[:10]
    assert sum("Текст" in v for _, _, v in texts) >= 5  # the cleaned values were stored
    assert any("вторая строка" in v for _, _, v in texts)  # a text area keeps its lines


def test_a_nul_in_a_form_field_is_stored_without_it(app, role_client):
    from app.extensions import db
    from models import MedicalCenter

    client = role_client(MANAGER)
    token = csrf_token(client, "/centres/add")
    form = {
        "csrf_token": token,
        "name": "Центр\x00 №\x1b[31m1\tА\r\nБ",
        "profile": "cardio\x00logy",
        "region": "Москва\x07",
        "active": "y",
    }
    response = client.post("/centres/add", data=form)
    assert response.status_code in (302, 303), response.status_code
    with app.app_context():
        centre = db.session.execute(select(MedicalCenter)).scalar_one()
        assert (centre.name, centre.profile, centre.region) == (
            "Центр №[31m1 А Б",
            "cardiology",
            "Москва",
        )


def test_json_and_query_strings_are_cleaned_too(app, role_client, make_staff):
    username = make_staff(MANAGER)
    api = app.test_client().post(
        "/api/v1/security/login",
        json={"username": f"{username}\x00", "password": f"{TEST_PASSWORD}\x07", "provider": "db"},
    )
    assert api.status_code == 200, api.get_data(as_text=True)  # the same account, cleaned
    client = role_client(MANAGER)
    search = client.get("/centres/list/?_flt_0_name=%00%01")
    assert search.status_code == 200
    with app.test_request_context(
        "/?q=a%00b%1bc&t=x%0Ay", method="POST", json={"k\x00": ["v\x01"]}
    ):
        from flask import request

        assert request.args["q"] == "abc" and request.args["t"] == "x\ny"
        assert request.get_json() == {"k": ["v"]}
