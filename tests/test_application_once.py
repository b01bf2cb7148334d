"""One application is one application (issue 15, item 6).

The real «Новая заявка» form, posted over HTTP to the app served on a loopback port by a
threaded server: eight identical posts at once, two posts one after the other, and a second
form for the same centre and disease. The database's unique indexes decide; the patient gets
the application that is already there.
"""

from __future__ import annotations

import http.cookiejar
import re
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy import func, select
from werkzeug.serving import WSGIRequestHandler, make_server

from tests.conftest import TEST_PASSWORD, patient_username
from tests.fakes import serve_in_thread

RACERS = 8


class _Quiet(WSGIRequestHandler):
    def log_request(self, *args, **kwargs) -> None:
        return None


@pytest.fixture
def served(app) -> Iterator[str]:
    """The session app on 127.0.0.1:<free port>, one thread per request like a real server."""
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=_Quiet)
    thread = serve_in_thread(server)
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


@dataclass
class Answer:
    status: int
    location: str
    body: str


class Browser:
    """A patient's browser: one cookie jar, redirects not followed (the test looks at them)."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.jar), _NoRedirect
        )

    def request(self, path: str, data: dict | None = None) -> Answer:
        body = urllib.parse.urlencode(data, doseq=True).encode() if data is not None else None
        # Host "localhost": the test config's SERVER_NAME, so url_for() matches the requests.
        req = urllib.request.Request(  # noqa: S310 — our own loopback server
            self.base + path, data=body, headers={"Host": "localhost"}
        )
        try:
            with self.opener.open(req, timeout=60) as resp:
                return Answer(resp.status, resp.headers.get("Location", ""), resp.read().decode())
        except urllib.error.HTTPError as exc:
            with exc:
                return Answer(exc.code, exc.headers.get("Location", ""), exc.read().decode())

    def sign_in(self, username: str) -> None:
        token = hidden(self.request("/login/").body, "csrf_token")
        answer = self.request(
            "/login/", {"username": username, "password": TEST_PASSWORD, "csrf_token": token}
        )
        assert answer.status == 302 and "/login" not in answer.location, answer


def hidden(html: str, name: str) -> str:
    match = re.search(rf'name="{name}"[^>]*value="([^"]+)"', html) or re.search(
        rf'value="([^"]+)"[^>]*name="{name}"', html
    )
    assert match, f"no {name} on the page"
    return match.group(1)


@dataclass
class Setting:
    patient_id: int
    centre: str  # public id
    disease_id: int
    form_url: str


@pytest.fixture
def setting(app, make_patient, make_center) -> Setting:
    from app.extensions import db
    from models import Disease, MedicalCenter

    centre_id = make_center("Кардиоцентр")
    with app.app_context():
        centre = db.session.get(MedicalCenter, centre_id)
        disease = Disease(icd10_code="I48", name="Фибрилляция предсердий", profile="cardiology")
        centre.diseases.append(disease)
        db.session.commit()
        centre_public, disease_id = str(centre.public_id), disease.id
    return Setting(
        make_patient(),
        centre_public,
        disease_id,
        f"/cabinet/applications/new?centre={centre_public}",
    )


def open_form(browser: Browser, setting: Setting, complaints: str = "Перебои в работе сердца"):
    page = browser.request(setting.form_url)
    assert page.status == 200
    return {
        "csrf_token": hidden(page.body, "csrf_token"),
        "form_token": hidden(page.body, "form_token"),
        "centre": setting.centre,
        "disease": str(setting.disease_id),
        "diagnosis_text": "",
        "complaints": complaints,
    }


def applications(app, patient_id: int) -> list[str]:
    from app.extensions import db
    from models import Consultation

    with app.app_context():
        return [
            str(p)
            for p in db.session.execute(
                select(Consultation.public_id).where(Consultation.patient_id == patient_id)
            ).scalars()
        ]


def signed_in(app, served: str, setting: Setting) -> Browser:
    browser = Browser(served)
    browser.sign_in(patient_username(app, setting.patient_id))
    return browser


def test_eight_identical_posts_at_once_make_one_application(app, served, setting):
    browser = signed_in(app, served, setting)
    form = open_form(browser, setting)
    barrier = threading.Barrier(RACERS)
    answers: list[Answer | None] = [None] * RACERS

    def racer(i: int) -> None:
        barrier.wait(timeout=30)
        answers[i] = browser.request(setting.form_url, form)

    threads = [threading.Thread(target=racer, args=(i,)) for i in range(RACERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    created = applications(app, setting.patient_id)
    assert len(created) == 1, created
    # Every post, the winner's and the others', lands on that one application.
    assert [(a.status, a.location) for a in answers] == [
        (302, f"/cabinet/consultations/{created[0]}")
    ] * RACERS, answers


def test_the_same_form_sent_twice_shows_the_first_application(app, served, setting):
    browser = signed_in(app, served, setting)
    form = open_form(browser, setting)
    first = browser.request(setting.form_url, form)
    second = browser.request(setting.form_url, form)
    created = applications(app, setting.patient_id)
    assert len(created) == 1
    assert first.status == second.status == 302
    assert first.location == second.location == f"/cabinet/consultations/{created[0]}"
    page = browser.request(second.location).body
    assert "Эта заявка уже отправлена" in page


def test_a_second_form_while_one_is_open_links_to_it(app, served, setting):
    browser = signed_in(app, served, setting)
    browser.request(setting.form_url, open_form(browser, setting))
    created = applications(app, setting.patient_id)
    again = browser.request(setting.form_url, open_form(browser, setting, "Снова одышка"))
    assert again.status == 409
    assert "У вас уже есть открытая заявка в этот центр по этому заболеванию" in again.body
    assert f'href="/cabinet/consultations/{created[0]}"' in again.body
    assert applications(app, setting.patient_id) == created


def test_a_new_application_once_the_first_is_closed(app, served, setting):
    """The rule is about open applications: after a cancellation the patient may apply again."""
    from app.extensions import db
    from models import Consultation

    browser = signed_in(app, served, setting)
    browser.request(setting.form_url, open_form(browser, setting))
    with app.app_context():
        db.session.execute(Consultation.__table__.update().values(status="cancelled"))
        db.session.commit()
    again = browser.request(setting.form_url, open_form(browser, setting, "Снова одышка"))
    assert again.status == 302
    assert len(applications(app, setting.patient_id)) == 2


def test_the_database_refuses_a_second_open_application(app, setting):
    """No Python check in the way: two rows inserted directly, the index refuses the second."""
    import uuid

    from sqlalchemy.exc import IntegrityError

    from app.extensions import db
    from models import Consultation, MedicalCenter

    with app.app_context():
        centre_id = db.session.execute(
            select(MedicalCenter.id).where(MedicalCenter.public_id == uuid.UUID(setting.centre))
        ).scalar_one()

        def row() -> Consultation:
            return Consultation(
                kind="centre_request",
                status="requested",
                patient_id=setting.patient_id,
                center_id=centre_id,
                disease_id=setting.disease_id,
            )

        db.session.add(row())
        db.session.commit()
        db.session.add(row())
        with pytest.raises(IntegrityError):
            db.session.commit()
        db.session.rollback()
        count = db.session.execute(select(func.count(Consultation.id))).scalar_one()
        assert count == 1
