"""The referral SMS gets her in (issue 17, item 4) and staff land where they work (item 5).

The one-time sign-in link of the invitation SMS: read from the outbox as the patient gets it,
opened and used through the web app. It works once; a second use, an expired, replaced, tampered
or another account's link is refused with a Russian page; refusals count for the sign-in
throttle, which refuses the link too. After the link (or the one-time password) the password
form does not ask for the current password; a normal change still does. Each role signs in to
its own page.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import delete, select

from tests.conftest import TEST_PASSWORD, csrf_token, login, patient_username
from tests.referral_tables import invitation, row, xlsx

SIGN_IN_URL = "http://localhost/login/"
NEW_PASSWORD = "Vesna2026sad"


@pytest.fixture
def manager_id(app: Flask, make_staff) -> int:
    from app.extensions import db
    from models import OblakoUser

    username = make_staff("Manager")
    with app.app_context():
        return db.session.execute(
            select(OblakoUser.id).where(OblakoUser.username == username)
        ).scalar_one()


@pytest.fixture
def referred(app: Flask, make_patient) -> int:
    """A patient as a referral import leaves her: source referral, no consent on record yet."""
    from app.extensions import db
    from models import Consent, Patient, PatientSource

    patient_id = make_patient()
    with app.app_context():
        patient = db.session.get(Patient, patient_id)
        patient.source = PatientSource.REFERRAL
        db.session.execute(delete(Consent).where(Consent.user_id == patient.user_id))
        db.session.commit()
    return patient_id


def send_invitation(app: Flask, patient_id: int, manager_id: int) -> re.Match:
    """The manager's «send the credentials again»: a new password and link, by SMS. Returns the
    SMS's parts (link, url, login, password) as the outbox has them."""
    from app.extensions import db
    from app.referrals.invitations import resend_credentials
    from models import OblakoUser, OutboundMessage, Patient

    with app.app_context():
        patient = db.session.get(Patient, patient_id)
        resend_credentials(
            patient, by=db.session.get(OblakoUser, manager_id), sign_in_url=SIGN_IN_URL
        )
        db.session.commit()
        body = db.session.execute(
            select(OutboundMessage.body)
            .where(OutboundMessage.recipient == patient.phone)
            .order_by(OutboundMessage.id.desc())
            .limit(1)
        ).scalar_one()
    return invitation(body)


def path_of(link: str) -> str:
    return urlsplit(link).path


def use(client: FlaskClient, path: str):
    return client.post(path, data={"csrf_token": csrf_token(client, path)})


def use_blind(client: FlaskClient, path: str, form_page: str = "/login/"):
    """POST the link with a CSRF token taken from another form (the link's own page may be a
    refusal without a form)."""
    return client.post(path, data={"csrf_token": csrf_token(client, form_page)})


def text(response) -> str:
    return response.get_data(as_text=True)


def signed_in_as(app: Flask, client: FlaskClient) -> str | None:
    """The account this client's session is signed in as (the page's own data is not trusted)."""
    with client.session_transaction() as session:
        user_id = session.get("_user_id")
    if user_id is None:
        return None
    from app.extensions import db
    from models import OblakoUser

    with app.app_context():
        return db.session.get(OblakoUser, int(user_id)).username


def link_row(app: Flask, token: str):
    from app.extensions import db
    from models import SignInLink

    with app.app_context():
        link = db.session.execute(
            select(SignInLink).where(
                SignInLink.token_hash == hashlib.sha256(token.encode()).hexdigest()
            )
        ).scalar_one()
        db.session.expunge(link)
        return link


def change_first_password(client: FlaskClient, *, consent: bool = True):
    data = {
        "new_password": NEW_PASSWORD,
        "confirm_password": NEW_PASSWORD,
        "csrf_token": csrf_token(client, "/account/password/"),
    }
    if consent:
        data["consent"] = "y"
    return client.post("/account/password/", data=data)


# --- the link --------------------------------------------------------------------------------


def test_link_signs_in_once_and_the_password_form_does_not_ask_the_old_one(
    app, client, referred, manager_id
):
    from app.extensions import db
    from models import AuditEvent, Consent, Patient

    sms = send_invitation(app, referred, manager_id)
    path = path_of(sms["link"])
    token = path.rsplit("/", 1)[1]
    assert sms["link"] == f"http://localhost/s/{token}" and len(token) == 22

    # Opening the link shows one button; it signs nobody in and spends nothing (an SMS app
    # that fetches the address must not use it up).
    for _ in range(2):
        page = client.get(path)
        assert page.status_code == 200
        assert "Войти" in text(page) and f'action="{path}"' in text(page)
    assert signed_in_as(app, client) is None and link_row(app, token).used_at is None

    response = use(client, path)
    assert response.status_code == 302
    assert response.headers["Location"].endswith("/account/password/")
    assert signed_in_as(app, client) == sms["login"]
    assert link_row(app, token).used_at is not None
    with app.app_context():  # a sign-in like any: the referral tracking sees «signed in»
        assert db.session.get(Patient, referred).user.last_login is not None

    form = text(client.get("/account/password/"))
    assert 'name="current_password"' not in form and "Текущий пароль" not in form
    assert 'name="consent"' in form and 'name="new_password"' in form

    # Without the consent: refused; with it, done — no old password typed anywhere.
    assert "дайте согласие" in text(change_first_password(client, consent=False))
    response = change_first_password(client)
    assert response.status_code == 302
    assert urlsplit(response.headers["Location"]).path == "/cabinet/"
    with app.app_context():
        patient = db.session.get(Patient, referred)
        assert patient.user.must_change_password is False
        assert db.session.execute(
            select(Consent).where(Consent.user_id == patient.user_id)
        ).scalar_one()
        actions = set(
            db.session.execute(
                select(AuditEvent.action).where(AuditEvent.actor_id == patient.user_id)
            ).scalars()
        )
        assert "user.sign_in_link" in actions
    assert client.get("/cabinet/").status_code == 200
    assert "/login" not in login(app.test_client(), sms["login"], NEW_PASSWORD).location

    # The link works once: a second use, in this browser signed out or in another, is refused.
    client.get("/logout/")
    for other in (client, app.test_client()):
        refused = other.get(path)
        assert refused.status_code == 410 and "уже входили" in text(refused)
        refused = use_blind(other, path)
        assert refused.status_code == 410 and "уже входили" in text(refused)
        assert signed_in_as(app, other) is None


def test_the_token_is_stored_only_as_its_hash(app, referred, manager_id):
    from app.extensions import db
    from models import SignInLink

    token = path_of(send_invitation(app, referred, manager_id)["link"]).rsplit("/", 1)[1]
    with app.app_context():
        rows = list(db.session.execute(select(SignInLink)).scalars())
        assert len(rows) == 1
        assert rows[0].token_hash == hashlib.sha256(token.encode()).hexdigest()
        assert token not in repr([(r.token_hash, r.user_id) for r in rows])


def test_an_expired_link_is_refused(app, client, referred):
    from app.extensions import db
    from app.otp import issue_one_time_password
    from app.sign_in_links import issue_sign_in_link
    from models import Patient

    with app.app_context():
        user = db.session.get(Patient, referred).user
        # Issued eight days ago: the password (7 days) and its link are over.
        issue_one_time_password(user, now=datetime.now(UTC) - timedelta(days=8))
        token = issue_sign_in_link(user)
        db.session.commit()
    for response in (client.get(f"/s/{token}"), use_blind(client, f"/s/{token}")):
        assert response.status_code == 410
        assert "Срок действия ссылки для входа истёк" in text(response)
    assert signed_in_as(app, client) is None


@pytest.mark.parametrize(
    "tamper",
    [
        lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),  # one character changed
        lambda t: t[:-3],  # cut short (an SMS app broke the line)
        lambda t: t + "x",
        lambda t: "'%3Cscript%3E" + t,
        lambda t: "a" * 300,
    ],
)
def test_a_tampered_link_is_refused(app, client, referred, manager_id, tamper):
    token = path_of(send_invitation(app, referred, manager_id)["link"]).rsplit("/", 1)[1]
    path = f"/s/{tamper(token)}"
    for response in (client.get(path), use_blind(client, path)):
        assert response.status_code == 404
        assert "Эта ссылка для входа не работает" in text(response)
    assert signed_in_as(app, client) is None
    assert link_row(app, token).used_at is None  # the real link is still good
    assert use(client, f"/s/{token}").status_code == 302


def test_a_newer_invitation_replaces_the_link(app, client, referred, manager_id):
    first = path_of(send_invitation(app, referred, manager_id)["link"])
    second = send_invitation(app, referred, manager_id)
    refused = client.get(first)
    assert refused.status_code == 410 and "Эту ссылку заменила новая" in text(refused)
    assert use_blind(client, first).status_code == 410
    assert signed_in_as(app, client) is None
    assert use(client, path_of(second["link"])).status_code == 302
    assert signed_in_as(app, client) == second["login"]


def test_the_link_is_retired_by_her_own_password(app, client, referred, manager_id):
    sms = send_invitation(app, referred, manager_id)
    # She typed the password instead, and chose her own.
    assert "/account/password/" in login(client, sms["login"], sms["password"]).location
    assert change_first_password(client).status_code == 302
    client.get("/logout/")
    refused = client.get(path_of(sms["link"]))
    assert refused.status_code == 410 and "Вы уже придумали свой пароль" in text(refused)
    assert use_blind(client, path_of(sms["link"])).status_code == 410
    assert signed_in_as(app, client) is None


def test_another_accounts_link_is_refused_and_her_own_just_lets_her_in(
    app, referred, manager_id, make_patient, role_client
):
    from app.permissions import DOCTOR, MANAGER, PATIENT

    sms = send_invitation(app, referred, manager_id)
    path = path_of(sms["link"])
    for role in (PATIENT, DOCTOR, MANAGER):
        other = role_client(role)
        who = signed_in_as(app, other)
        for response in (other.get(path), use_blind(other, path, "/account/password/")):
            assert response.status_code == 403, role
            assert "Эта ссылка для входа другого человека" in text(response)
        assert signed_in_as(app, other) == who  # nobody is switched to her account
    assert link_row(app, path.rsplit("/", 1)[1]).used_at is None

    # Her own link in her own signed-in browser: she is in, nothing else happens.
    mine = app.test_client()
    assert use(mine, path).status_code == 302
    again = mine.get(path)
    assert again.status_code == 302 and again.location.endswith("/account/password/")


def test_the_link_passes_the_sign_in_throttle(app, referred, manager_id):
    """The account's counter: wrong passwords typed for her account stop her link too; the
    address's: unknown links tried from one address stop every link from it."""
    sms = send_invitation(app, referred, manager_id)
    path = path_of(sms["link"])
    per_account = int(app.config["LOGIN_FAILURES_PER_ACCOUNT"].split("/")[0])
    guesser = app.test_client()
    for _ in range(per_account):
        login(guesser, sms["login"], "Wrong-password-1")
    refused = app.test_client().get(path)
    assert refused.status_code == 429 and "Слишком много попыток входа" in text(refused)
    assert use_blind(app.test_client(), path).status_code == 429
    assert link_row(app, path.rsplit("/", 1)[1]).used_at is None

    from app.throttle import get_throttle

    with app.app_context():
        get_throttle().reset()
    per_ip = int(app.config["LOGIN_FAILURES_PER_IP"].split("/")[0])
    prober = app.test_client()
    for n in range(per_ip):
        assert prober.get(f"/s/{uuid.uuid4().hex[:22]}").status_code == 404, n
    assert prober.get(path).status_code == 429  # the same address: its real link waits too
    with app.app_context():
        get_throttle().reset()
    assert use(prober, path).status_code == 302

    # A real link opened again and again once spent (an SMS app re-fetching it) is no guess:
    # it never locks her account.
    prober.get("/logout/")
    for _ in range(per_account + 1):
        assert app.test_client().get(path).status_code == 410
    assert "/login" not in login(app.test_client(), sms["login"], sms["password"]).location


def test_the_imported_patients_link_leads_to_her_referral(app, client, catalogue, manager_id):
    """The bulk import's own SMS and link: after the password, the referral that waits for
    her documents opens."""
    from app.extensions import db
    from app.referrals.importer import run_import
    from app.referrals.validation import validate_upload
    from models import Consultation, OblakoUser, OutboundMessage

    with app.app_context():
        imp = validate_upload(db.session.get(OblakoUser, manager_id), "t.xlsx", xlsx([row()]))
        db.session.commit()
        run_import(imp.id, sign_in_url=SIGN_IN_URL)
        body = db.session.execute(select(OutboundMessage.body)).scalar_one()
        consultation = db.session.execute(select(Consultation)).scalar_one()
        assert consultation.status == "awaiting_documents"
        public_id = consultation.public_id
    sms = invitation(body)
    assert use(client, path_of(sms["link"])).status_code == 302
    response = change_first_password(client)
    assert response.status_code == 302
    assert urlsplit(response.headers["Location"]).path == f"/cabinet/consultations/{public_id}"
    # Her password from the SMS is gone with the link's use of it; her own one works.
    other = app.test_client()
    assert "/login" in login(other, sms["login"], sms["password"]).location
    assert "/login" not in login(app.test_client(), sms["login"], NEW_PASSWORD).location


# --- the password form and the sign-in form ---------------------------------------------------


def test_a_normal_password_change_still_asks_the_current_password(app, client, make_patient):
    phone = patient_username(app, make_patient())
    login(client, phone)
    form = text(client.get("/account/password/"))
    assert 'name="current_password"' in form and "Текущий пароль" in form
    data = {
        "new_password": NEW_PASSWORD,
        "confirm_password": NEW_PASSWORD,
        "csrf_token": csrf_token(client, "/account/password/"),
    }
    refused = client.post("/account/password/", data=data)
    assert refused.status_code == 200 and 'id="current_password-error"' in text(refused)
    wrong = client.post("/account/password/", data={**data, "current_password": "Nope12345"})
    assert "Текущий пароль указан неверно" in text(wrong)
    right = client.post("/account/password/", data={**data, "current_password": TEST_PASSWORD})
    assert right.status_code == 302


def test_sign_in_form_labels_match_the_sms(app, client, referred, manager_id):
    from app.accounts import LOGIN_LABEL, PASSWORD_LABEL
    from app.referrals.invitations import invitation_format

    page = text(client.get("/login/"))
    assert "Телефон (логин)" in page and "Имя пользователя" not in page
    assert 'for="username"' in page and 'for="password"' in page
    with app.test_request_context(headers={"Accept-Language": "ru"}):
        sms = invitation_format()
        assert f"{LOGIN_LABEL}: %(login)s" in sms and f"{PASSWORD_LABEL}: %(password)s" in sms


def test_a_phone_written_any_usual_way_signs_in(app, make_patient):
    phone = patient_username(app, make_patient())  # +7912NNNNNNN
    digits = phone[2:]
    for written in (f"8{digits}", f"8 ({digits[:3]}) {digits[3:6]}-{digits[6:8]}-{digits[8:]}"):
        response = login(app.test_client(), written)
        assert response.status_code == 302 and "/login" not in response.location, written


# --- landing by role ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "landing"),
    [
        ("Patient", "/cabinet/"),
        ("Doctor", "/care/queue"),
        ("DutyDoctor", "/care/day"),
        ("Manager", "/referrals/"),
        ("Admin", "/"),
    ],
)
def test_each_role_lands_where_it_works(app, role_client, role, landing):
    client = role_client(role)  # signed in through the sign-in form
    index = client.get("/")
    if landing == "/":
        assert index.status_code == 200  # the administrator keeps the welcome page
    else:
        assert index.status_code == 302 and urlsplit(index.location).path == landing
        assert client.get(landing).status_code == 200


@pytest.mark.parametrize(
    ("role", "landing"),
    [("Doctor", "/care/queue"), ("DutyDoctor", "/care/day"), ("Manager", "/referrals/")],
)
def test_sign_in_goes_straight_to_the_roles_page_or_to_next(
    app, make_doctor, make_center, make_staff, role, landing
):
    if role == "Manager":
        username = make_staff(role)
    else:
        username = f"landing{role.lower()}"
        make_doctor(username=username, center_id=make_center(), is_duty=role == "DutyDoctor")
    response = login(app.test_client(), username)
    assert response.status_code == 302 and urlsplit(response.location).path == landing
    # A page asked for before signing in (?next=) wins; a foreign one does not.
    client = app.test_client()
    client.get("/login/")
    for target, expected in (("/notifications/", "/notifications/"), ("//evil.example/", landing)):
        response = client.post(
            f"/login/?next={target}",
            data={
                "username": username,
                "password": TEST_PASSWORD,
                "csrf_token": csrf_token(client),
            },
        )
        assert urlsplit(response.location).path == expected or response.location == expected
        client.get("/logout/")


def test_landing_rule_is_one_table(app):
    from app.landing import LANDING, landing_endpoint
    from app.permissions import ALL_ROLES

    assert {role for role, _ in LANDING} == set(ALL_ROLES)
    for _role, endpoint in LANDING:
        assert endpoint is None or endpoint in app.view_functions, endpoint
    assert landing_endpoint(None) is None
