"""One-time passwords (app/otp.py) and the first sign-in: the forced change with the consent,
the expired-password message on the form and the API, re-issue, and the API gate."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import delete, func, select
from werkzeug.security import check_password_hash

from tests.conftest import TEST_PASSWORD, csrf_token, login, patient_username

API_LOGIN = "/api/v1/security/login"
MY_DOCUMENTS_API = "/api/v1/my/documents/"
EXPIRED = "Срок действия пароля истёк. Обратитесь к менеджеру проекта."
NEW_PASSWORD = "Novyi2026parol"


def api_login(client, username: str, password: str):
    return client.post(
        API_LOGIN, json={"username": username, "password": password, "provider": "db"}
    )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def imported_patient(app, make_patient):
    """A patient as the import leaves them: no consent in the ledger yet. Returns (id, phone)."""
    from app.extensions import db
    from models import Consent, Patient

    patient_id = make_patient()
    with app.app_context():
        patient = db.session.get(Patient, patient_id)
        db.session.execute(delete(Consent).where(Consent.user_id == patient.user_id))
        db.session.commit()
    return patient_id, patient_username(app, patient_id)


def issue(app, patient_id: int, *, now: datetime | None = None) -> str:
    from app.extensions import db
    from app.otp import issue_one_time_password
    from models import Patient

    with app.app_context():
        password = issue_one_time_password(db.session.get(Patient, patient_id).user, now=now)
        db.session.commit()
        return password


def user_of(app, patient_id: int):
    from app.extensions import db
    from models import Patient

    with app.app_context():
        user = db.session.get(Patient, patient_id).user
        db.session.expunge(user)
        return user


def consents(app, patient_id: int) -> int:
    from app.extensions import db
    from models import Consent, ConsentKind, Patient

    with app.app_context():
        user_id = db.session.get(Patient, patient_id).user_id
        return db.session.execute(
            select(func.count()).where(
                Consent.user_id == user_id, Consent.kind == ConsentKind.PERSONAL_DATA
            )
        ).scalar()


def change(client, current: str, new: str = NEW_PASSWORD, *, consent: bool):
    data = {
        "current_password": current,
        "new_password": new,
        "confirm_password": new,
        "csrf_token": csrf_token(client, "/account/password/"),
    }
    if consent:
        data["consent"] = "y"
    return client.post("/account/password/", data=data)


# --- the password itself -----------------------------------------------------------------------


def test_one_time_password_entropy_format_and_fast_hash(app, imported_patient):
    from app.extensions import db
    from app.otp import hash_one_time_password
    from app.passwords import _OTP_ALPHABET, OTP_LOOK_ALIKES
    from models import Patient

    patient_id, _ = imported_patient
    generation = user_of(app, patient_id).session_generation
    before = datetime.now(UTC)
    passwords = {issue(app, patient_id) for _ in range(20)}
    assert len(passwords) == 20
    for password in passwords:
        assert len(password) == 14 and set(password) <= set(_OTP_ALPHABET)
        assert not set(password) & OTP_LOOK_ALIKES and password == password.lower()
        assert any(c.isdigit() for c in password) and any(c.isalpha() for c in password)
    # Small letters and digits, none of 0/o/O, 1/l/i/I (and z, s, b, g, q, u beside 2, 5, 6, 9)
    assert not set("0oO1lIizsbgqu") & set(_OTP_ALPHABET)
    assert len(set(_OTP_ALPHABET)) == 25 and 14 * math.log2(25) >= 64  # ≈ 65 bits

    user = user_of(app, patient_id)
    assert user.password.startswith("pbkdf2:sha256:1$")  # salted, one iteration: not scrypt
    assert user.must_change_password is True
    assert timedelta(days=7) <= user.password_expires_at - before < timedelta(days=7, minutes=1)
    assert user.session_generation == generation + 20  # every issue revokes sessions

    same = [hash_one_time_password("abcDEF234567") for _ in range(2)]
    assert same[0] != same[1]  # salted
    assert all(check_password_hash(h, "abcDEF234567") for h in same)
    with app.app_context():
        assert db.session.get(Patient, patient_id).user.password == user.password


def test_expiry_follows_the_setting(app, imported_patient, monkeypatch):
    patient_id, _ = imported_patient
    monkeypatch.setitem(app.config, "ONE_TIME_PASSWORD_DAYS", 2)
    now = datetime(2030, 1, 1, tzinfo=UTC)
    issue(app, patient_id, now=now)
    assert user_of(app, patient_id).password_expires_at == now + timedelta(days=2)


# --- expired -----------------------------------------------------------------------------------


def test_expired_password_refused_with_message_on_the_form(app, client, imported_patient):
    patient_id, phone = imported_patient
    password = issue(app, patient_id, now=datetime.now(UTC) - timedelta(days=8))
    response = login(client, phone, password)
    assert response.status_code == 302 and "/login" in response.headers["Location"]
    page = client.get("/login/").get_data(as_text=True)
    assert EXPIRED in page
    assert client.get("/cabinet/").status_code == 302  # not signed in
    assert user_of(app, patient_id).last_login is None  # tracking: never signed in

    # A wrong password for the same account learns nothing about the expiry.
    login(client, phone, "Wrong2026pass")
    page = client.get("/login/").get_data(as_text=True)
    assert EXPIRED not in page


def test_expired_password_refused_with_message_on_the_api(app, client, imported_patient):
    patient_id, phone = imported_patient
    password = issue(app, patient_id, now=datetime.now(UTC) - timedelta(days=7, seconds=1))
    response = api_login(client, phone, password)
    assert response.status_code == 401
    assert response.get_json()["message"] == EXPIRED
    wrong = api_login(client, phone, "Wrong2026pass")
    assert wrong.status_code == 401 and wrong.get_json()["message"] != EXPIRED


def test_expired_attempts_count_for_the_throttle(app, client, imported_patient):
    patient_id, phone = imported_patient
    password = issue(app, patient_id, now=datetime.now(UTC) - timedelta(days=8))
    limit = int(app.config["LOGIN_FAILURES_PER_ACCOUNT"].split("/")[0])
    for _ in range(limit):
        assert api_login(client, phone, password).status_code == 401
    assert api_login(client, phone, password).status_code == 429


def test_a_password_within_its_time_signs_in(app, client, imported_patient):
    patient_id, phone = imported_patient
    password = issue(app, patient_id, now=datetime.now(UTC) - timedelta(days=6, hours=23))
    response = login(client, phone, password)
    assert "/login" not in response.headers["Location"]


# --- first sign-in -----------------------------------------------------------------------------


def test_first_sign_in_forces_new_password_and_consent_before_anything(
    app, client, imported_patient
):
    patient_id, phone = imported_patient
    password = issue(app, patient_id)
    response = login(client, phone, password)
    assert response.status_code == 302 and "/login" not in response.headers["Location"]
    assert user_of(app, patient_id).last_login is not None

    for url in ("/", "/cabinet/", "/cabinet/consultations/", "/profile/", "/notifications/"):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response.headers["Location"].endswith("/account/password/"), url
    page = client.get("/account/password/").get_data(as_text=True)
    assert "Вы вошли. Теперь придумайте свой пароль" in page
    assert 'name="consent"' in page
    assert 'name="current_password"' not in page  # just typed to sign in: not asked again

    # Without the consent: refused, nothing changes.
    page = change(client, password, consent=False).get_data(as_text=True)
    assert "Чтобы продолжить, дайте согласие на обработку персональных данных." in page
    assert user_of(app, patient_id).must_change_password is True
    assert consents(app, patient_id) == 0

    # The policy applies to the new password.
    page = change(client, password, "12345678", consent=True).get_data(as_text=True)
    assert "буквы и цифры" in page or "слишком простой" in page
    assert user_of(app, patient_id).must_change_password is True
    assert consents(app, patient_id) == 0

    response = change(client, password, consent=True)
    assert response.status_code == 302
    user = user_of(app, patient_id)
    assert user.must_change_password is False and user.password_expires_at is None
    assert not user.password.startswith("pbkdf2:sha256:1$")  # the person's own: the slow hash
    assert consents(app, patient_id) == 1
    assert client.get("/cabinet/").status_code == 200  # this session stays signed in

    # The one-time password is gone; the new one works.
    other = app.test_client()
    assert "/login" in login(other, phone, password).headers["Location"]
    assert "/login" not in login(other, phone, NEW_PASSWORD).headers["Location"]


def test_no_consent_asked_when_one_is_on_record(app, client, make_patient):
    patient_id = make_patient()  # consented at registration
    phone = patient_username(app, patient_id)
    password = issue(app, patient_id)
    login(client, phone, password)
    page = client.get("/account/password/").get_data(as_text=True)
    assert 'name="consent"' not in page
    assert change(client, password, consent=False).status_code == 302
    assert consents(app, patient_id) == 1
    assert client.get("/cabinet/").status_code == 200


def test_api_token_opens_nothing_until_the_password_is_changed(app, client, imported_patient):
    from app.extensions import db
    from models import Patient

    patient_id, phone = imported_patient
    password = issue(app, patient_id)
    response = api_login(client, phone, password)
    assert response.status_code == 200
    token = response.get_json()["access_token"]
    refused = client.get(MY_DOCUMENTS_API, headers=bearer(token))
    assert refused.status_code == 403
    assert refused.get_json()["message"] == "Чтобы продолжить, задайте новый пароль."
    assert app.test_client().get("/api/v1/menu/", headers=bearer(token)).status_code == 403

    # The same token, once the flag is cleared (no revocation): the gate was what refused.
    with app.app_context():
        db.session.get(Patient, patient_id).user.must_change_password = False
        db.session.commit()
    assert client.get(MY_DOCUMENTS_API, headers=bearer(token)).status_code == 200


def test_api_session_cookie_of_a_first_sign_in_is_refused(app, client, imported_patient):
    patient_id, phone = imported_patient
    login(client, phone, issue(app, patient_id))
    response = client.get(MY_DOCUMENTS_API)
    assert response.status_code == 403


# --- re-issue ----------------------------------------------------------------------------------


def test_reissue_replaces_the_old_password_and_signs_out(app, imported_patient):
    patient_id, phone = imported_patient
    first = issue(app, patient_id)
    signed = app.test_client()
    assert "/login" not in login(signed, phone, first).headers["Location"]
    assert signed.get("/account/password/").status_code == 200

    second = issue(app, patient_id)
    assert second != first
    assert "/login" in signed.get("/account/password/").headers["Location"]  # revoked
    client = app.test_client()
    assert "/login" in login(client, phone, first).headers["Location"]
    assert api_login(app.test_client(), phone, first).status_code == 401
    assert "/login" not in login(client, phone, second).headers["Location"]


def test_reissue_replaces_a_changed_password_too(app, client, make_patient):
    patient_id = make_patient()
    phone = patient_username(app, patient_id)
    issue(app, patient_id)
    assert "/login" in login(client, phone, TEST_PASSWORD).headers["Location"]
