"""Sign-in hardening: throttling on the form and the API, revocation of sessions and tokens,
CSRF on the forms and the session cookie's flags."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient
from werkzeug.security import check_password_hash

from tests.conftest import TEST_PASSWORD, csrf_token, login, patient_username

API_LOGIN = "/api/v1/security/login"
API_REFRESH = "/api/v1/security/refresh"
PROTECTED_PAGE = "/notifications/"  # any signed-in user may open it
MENU_API = "/api/v1/menu/"  # a JWT-protected FAB API
NEW_PASSWORD = "Novyi2026parol"


def signed_in(client: FlaskClient) -> bool:
    """True when the client's session cookie still opens a page for signed-in users."""
    response = client.get(PROTECTED_PAGE)
    if response.status_code == 200:
        return True
    assert response.status_code == 302 and "/login" in response.headers["Location"]
    return False


def api_login(client: FlaskClient, username: str, password: str = TEST_PASSWORD):
    return client.post(
        API_LOGIN, json={"username": username, "password": password, "provider": "db"}
    )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.no_db
def test_an_unknown_login_checks_a_hash_of_the_configured_method(app):
    """Timing balance: a sign-in with an unknown login costs one hash check of the method real
    passwords use (the suite's cheap one here, scrypt by default), not FAB's fixed scrypt."""
    fake = app.config["AUTH_DB_FAKE_PASSWORD_HASH_CHECK"]
    assert fake.startswith(app.config["FAB_PASSWORD_HASH_METHOD"] + "$")
    assert check_password_hash(fake, "password")


def flashed(client: FlaskClient) -> str:
    return client.get("/login/").get_data(as_text=True)


# --- throttling: HTML form ---------------------------------------------------------------------


def test_form_login_throttled_per_account(app, client, make_staff):
    username = make_staff("Manager")
    limit = int(app.config["LOGIN_FAILURES_PER_ACCOUNT"].split("/")[0])
    for _ in range(limit):
        response = login(client, username, "Wrong-password-1")
        assert response.status_code == 302
    # Now even the right password is refused for this account...
    response = login(client, username)
    assert response.status_code == 303
    assert "Слишком много попыток входа" in flashed(client)
    assert not signed_in(client)
    # ...while another account from the same address still gets in.
    other = make_staff("Manager")
    response = login(app.test_client(), other)
    assert response.status_code == 302 and "/login" not in response.headers["Location"]


def test_form_login_throttled_per_ip(app, make_staff):
    username = make_staff("Manager")
    attacker = app.test_client()
    attacker.environ_base["REMOTE_ADDR"] = "10.0.0.66"
    limit = int(app.config["LOGIN_FAILURES_PER_IP"].split("/")[0])
    for n in range(limit):  # a different account each time: only the address is shared
        login(attacker, f"nobody{n}", "Wrong-password-1")
    response = login(attacker, username)
    assert response.status_code == 303
    assert not signed_in(attacker)
    # The same valid account from another address is not affected.
    elsewhere = app.test_client()
    elsewhere.environ_base["REMOTE_ADDR"] = "10.0.0.67"
    response = login(elsewhere, username)
    assert response.status_code == 302 and "/login" not in response.headers["Location"]


# --- throttling: API ---------------------------------------------------------------------------


def test_api_login_returns_a_working_token(client, make_staff):
    username = make_staff("Admin")
    response = api_login(client, username)
    assert response.status_code == 200, response.get_data(as_text=True)
    token = response.get_json()["access_token"]
    assert client.get(MENU_API, headers=bearer(token)).status_code == 200
    assert client.get(MENU_API).status_code == 401  # and nothing without it


def test_api_login_wrong_password_is_401(client, make_staff):
    assert api_login(client, make_staff("Manager"), "Wrong-password-1").status_code == 401


def test_api_login_throttled_per_account(app, client, make_staff):
    username = make_staff("Manager")
    limit = int(app.config["LOGIN_FAILURES_PER_ACCOUNT"].split("/")[0])
    for _ in range(limit):
        assert api_login(client, username, "Wrong-password-1").status_code == 401
    response = api_login(client, username)  # the right password, too late
    assert response.status_code == 429
    assert response.get_json()["message"] == "Слишком много попыток входа. Повторите позже."


def test_api_login_throttled_per_ip(app, make_staff):
    username = make_staff("Manager")
    attacker = app.test_client()
    attacker.environ_base["REMOTE_ADDR"] = "10.0.0.77"
    limit = int(app.config["LOGIN_FAILURES_PER_IP"].split("/")[0])
    for n in range(limit):
        api_login(attacker, f"nobody{n}", "Wrong-password-1")
    assert api_login(attacker, username).status_code == 429
    elsewhere = app.test_client()
    elsewhere.environ_base["REMOTE_ADDR"] = "10.0.0.78"
    assert api_login(elsewhere, username).status_code == 200


def test_form_failures_count_against_the_api_too(app, client, make_staff):
    """One counter per account, whichever door the guesses come through."""
    username = make_staff("Manager")
    limit = int(app.config["LOGIN_FAILURES_PER_ACCOUNT"].split("/")[0])
    for _ in range(limit):
        login(client, username, "Wrong-password-1")
    assert api_login(app.test_client(), username).status_code == 429


# --- revocation --------------------------------------------------------------------------------


def test_logout_invalidates_a_replayed_session_cookie(app, client, make_patient):
    username = patient_username(app, make_patient())
    login(client, username)
    assert signed_in(client)
    stolen = client.get_cookie("session").value
    client.get("/logout/")
    assert not signed_in(client)

    replay = app.test_client()
    replay.set_cookie("session", stolen, domain="localhost")
    assert not signed_in(replay)


def test_password_change_revokes_other_sessions_and_old_tokens(app, make_staff):
    username = make_staff("Admin")
    here, elsewhere = app.test_client(), app.test_client()
    login(here, username)
    login(elsewhere, username)
    tokens = (
        app.test_client()
        .post(
            API_LOGIN,
            json={
                "username": username,
                "password": TEST_PASSWORD,
                "provider": "db",
                "refresh": True,
            },
        )
        .get_json()
    )
    token, refresh = tokens["access_token"], tokens["refresh_token"]
    assert here.get(MENU_API, headers=bearer(token)).status_code == 200
    assert app.test_client().post(API_REFRESH, headers=bearer(refresh)).status_code == 200

    response = here.post(
        "/account/password/",
        data={
            "current_password": TEST_PASSWORD,
            "new_password": NEW_PASSWORD,
            "confirm_password": NEW_PASSWORD,
            "csrf_token": csrf_token(here, "/account/password/"),
        },
    )
    assert response.status_code == 302
    assert signed_in(here)  # the session that changed it stays valid
    assert not signed_in(elsewhere)
    assert app.test_client().get(MENU_API, headers=bearer(token)).status_code == 401
    assert app.test_client().post(API_REFRESH, headers=bearer(refresh)).status_code == 401
    # The old password no longer works, the new one does.
    assert api_login(app.test_client(), username).status_code == 401
    assert api_login(app.test_client(), username, NEW_PASSWORD).status_code == 200


def test_deactivation_revokes_sessions_and_tokens(app, client, make_staff):
    from app.extensions import db
    from models import OblakoUser

    username = make_staff("Admin")
    login(client, username)
    token = api_login(app.test_client(), username).get_json()["access_token"]
    assert signed_in(client)
    with app.app_context():
        user = db.session.query(OblakoUser).filter_by(username=username).one()
        user.active = False
        app.appbuilder.sm.update_user(user)  # the admin screens' path; bumps the generation
        assert user.session_generation == 1
    assert not signed_in(client)
    assert client.get(MENU_API, headers=bearer(token)).status_code == 401
    assert api_login(app.test_client(), username).status_code == 401


def test_deactivation_by_a_plain_flag_change_also_locks_out(app, client, make_patient):
    from app.extensions import db
    from models import OblakoUser

    username = patient_username(app, make_patient())
    login(client, username)
    assert signed_in(client)
    with app.app_context():
        db.session.query(OblakoUser).filter_by(username=username).update({"active": False})
        db.session.commit()
    assert not signed_in(client)


# --- CSRF and cookies --------------------------------------------------------------------------


def test_login_form_without_csrf_token_is_refused(app, client, make_staff):
    username = make_staff("Manager")
    client.get("/login/")
    response = client.post("/login/", data={"username": username, "password": TEST_PASSWORD})
    assert response.status_code in (302, 303, 400)
    assert not signed_in(client)
    assert "Срок действия формы истёк" in flashed(client)


def test_change_password_without_csrf_token_is_refused(app, client, make_staff):
    username = make_staff("Manager")
    login(client, username)
    response = client.post(
        "/account/password/",
        data={
            "current_password": TEST_PASSWORD,
            "new_password": NEW_PASSWORD,
            "confirm_password": NEW_PASSWORD,
        },
    )
    assert response.status_code in (302, 303, 400)
    assert api_login(app.test_client(), username).status_code == 200  # unchanged


def test_session_cookie_is_httponly_and_samesite(client, make_staff):
    username = make_staff("Manager")
    client.get("/login/")
    response = login(client, username)
    cookies = [c for c in response.headers.getlist("Set-Cookie") if c.startswith("session=")]
    assert cookies
    assert "HttpOnly" in cookies[-1]
    assert "SameSite=Lax" in cookies[-1]


def test_a_background_fetch_answered_after_the_sign_in_keeps_her_signed_in(
    app, client, make_patient
):
    """The sign-in page registers the service worker, which fetches /sw.js and /offline with
    the signed-out cookie; answered after the sign-in (a loaded phone), such an answer must
    not put that cookie back (app/hardening.py)."""
    username = patient_username(app, make_patient())
    client.get("/login/")
    signed_out = client.get_cookie("session").value
    late = app.test_client()  # the same browser, its background request still in flight
    late.set_cookie("session", signed_out, domain="localhost")
    login(client, username)
    for url in ("/sw.js", "/offline", "/manifest.webmanifest", "/healthz"):
        response = late.get(url)
        assert response.status_code == 200, url
        assert not [c for c in response.headers.getlist("Set-Cookie") if "session=" in c], url
    # An ordinary page still keeps its session up to date.
    assert any("session=" in c for c in late.get("/").headers.getlist("Set-Cookie"))
    assert signed_in(client)
