"""Flask-AppBuilder's user screens, driven as the Admin does: real forms with their CSRF tokens.

FAB calls FAB_PASSWORD_COMPLEXITY_VALIDATOR on every password it sets (add, reset); the
service's password policy (app/passwords.py) must be what it calls, with its Russian messages.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from tests.conftest import TEST_PASSWORD, csrf_token, login

NEW_PASSWORD = "Novyi2026parol"
TOO_SHORT_RU = "Пароль должен содержать не менее 8 символов."


def signed_in(app: Flask, username: str) -> FlaskClient:
    client = app.test_client()
    response = login(client, username)
    assert response.status_code == 302
    assert not urlsplit(response.headers["Location"]).path.startswith("/login")
    return client


def role_id(app: Flask, name: str) -> int:
    from flask_appbuilder.security.sqla.models import Role

    from app.extensions import db

    with app.app_context():
        return db.session.execute(select(Role.id).where(Role.name == name)).scalar_one()


def user_row(app: Flask, username: str):
    from app.extensions import db
    from models import OblakoUser

    with app.app_context():
        user = db.session.execute(
            select(OblakoUser).where(OblakoUser.username == username)
        ).scalar_one_or_none()
        if user is None:
            return None
        return {
            "id": user.id,
            "first_name": user.first_name,
            "email": user.email,
            "active": user.active,
            "roles": sorted(r.name for r in user.roles),
        }


def add_form(token: str, username: str, password: str, **extra: str) -> dict[str, str]:
    return {
        "csrf_token": token,
        "first_name": "Ольга",
        "last_name": "Петрова",
        "username": username,
        "active": "y",
        "email": f"{username}@example.org",
        "password": password,
        "conf_password": password,
        **extra,
    }


def page_text(response) -> str:
    return re.sub(r"\s+", " ", response.get_data(as_text=True))


def test_admin_adds_edits_and_resets_a_user(app, make_staff):
    admin = signed_in(app, make_staff("Admin"))
    manager_role = role_id(app, "Manager")

    # Add: FAB's form, the password checked by the service's policy.
    token = csrf_token(admin, "/users/add")
    added = admin.post(
        "/users/add", data=add_form(token, "olga", NEW_PASSWORD, roles=str(manager_role))
    )
    assert added.status_code == 302, page_text(added)[:2000]
    row = user_row(app, "olga")
    assert row and row["roles"] == ["Manager"] and row["active"]
    assert login(app.test_client(), "olga", NEW_PASSWORD).status_code == 302

    # Edit: the same screens, another e-mail and first name.
    token = csrf_token(admin, f"/users/edit/{row['id']}")
    edited = admin.post(
        f"/users/edit/{row['id']}",
        data={
            "csrf_token": token,
            "first_name": "Ольга Ивановна",
            "last_name": "Петрова",
            "username": "olga",
            "active": "y",
            "email": "olga.petrova@example.org",
            "roles": str(manager_role),
        },
    )
    assert edited.status_code == 302, page_text(edited)[:2000]
    row = user_row(app, "olga")
    assert (row["first_name"], row["email"]) == ("Ольга Ивановна", "olga.petrova@example.org")

    # Reset the password: the show page's action leads to FAB's reset form for this user.
    show = admin.get(f"/users/show/{row['id']}").get_data(as_text=True)
    assert f"/users/action/resetpasswords/{row['id']}" in show
    token = csrf_token(admin, f"/users/show/{row['id']}")
    action = admin.post(f"/users/action/resetpasswords/{row['id']}", data={"csrf_token": token})
    assert action.status_code == 302
    form_url = action.headers["Location"]
    assert urlsplit(form_url).path == "/resetpassword/form"
    token = csrf_token(admin, form_url)
    weak = admin.post(
        form_url, data={"csrf_token": token, "password": "abc1", "conf_password": "abc1"}
    )
    assert weak.status_code == 200 and TOO_SHORT_RU in page_text(weak)
    assert login(app.test_client(), "olga", "abc1").status_code == 302  # refused, back to login
    reset = admin.post(
        form_url,
        data={
            "csrf_token": token,
            "password": "Drugoi2026parol",
            "conf_password": "Drugoi2026parol",
        },
    )
    assert reset.status_code == 302, page_text(reset)[:2000]
    fresh = app.test_client()
    answer = login(fresh, "olga", "Drugoi2026parol")
    assert answer.status_code == 302 and "/login" not in answer.headers["Location"]


@pytest.mark.parametrize("pk", ["", "abc", "1.5", "-1", "99999999999999999999", "424242"])
def test_the_reset_form_with_a_bad_or_unknown_user_is_not_found(app, make_staff, pk):
    """FAB's reset form reads the user from ?pk= as typed: anything but a user's id is the
    Russian «not found» page on either database, and no password changes."""
    make_staff("Manager", "bystander")
    admin = signed_in(app, make_staff("Admin", "boss"))
    url = "/resetpassword/form" + (f"?pk={pk}" if pk else "")
    token = csrf_token(admin, url)
    answer = admin.post(
        url, data={"csrf_token": token, "password": NEW_PASSWORD, "conf_password": NEW_PASSWORD}
    )
    assert answer.status_code == 404
    assert "Страница не найдена" in page_text(answer)
    for username in ("bystander", "boss"):
        kept = login(app.test_client(), username, TEST_PASSWORD)
        assert kept.status_code == 302 and "/login" not in kept.headers["Location"]
        assert "/login" in login(app.test_client(), username, NEW_PASSWORD).headers["Location"]


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("abc1", TOO_SHORT_RU),
        ("onlyletters", "Пароль должен содержать и буквы, и цифры."),
        ("qwerty123", "Этот пароль слишком легко угадать."),
    ],
)
def test_a_weak_password_is_refused_with_the_policy_message(app, make_staff, password, message):
    admin = signed_in(app, make_staff("Admin"))
    token = csrf_token(admin, "/users/add")
    answer = admin.post(
        "/users/add", data=add_form(token, "weakling", password, roles=str(role_id(app, "Manager")))
    )
    assert answer.status_code == 200
    assert message in page_text(answer)
    assert user_row(app, "weakling") is None


@pytest.mark.parametrize("role", ["Manager", "Doctor", "Patient"])
def test_others_may_not_use_the_user_screens(app, make_staff, make_patient, role):
    from tests.conftest import patient_username

    victim = make_staff("Manager", "victim")
    victim_id = user_row(app, "victim")["id"]
    if role == "Patient":
        username = patient_username(app, make_patient())
    else:
        username = make_staff(role)
    client = signed_in(app, username)
    token = csrf_token(client, "/account/password/")

    refused = [
        client.get("/users/add"),
        client.post("/users/add", data=add_form(token, "intruder", NEW_PASSWORD)),
        client.get(f"/users/edit/{victim_id}"),
        client.post(f"/users/edit/{victim_id}", data={"csrf_token": token, "username": "x"}),
        client.post(f"/users/action/resetpasswords/{victim_id}", data={"csrf_token": token}),
        client.get(f"/resetpassword/form?pk={victim_id}"),
        client.post(
            f"/resetpassword/form?pk={victim_id}",
            data={"csrf_token": token, "password": NEW_PASSWORD, "conf_password": NEW_PASSWORD},
        ),
    ]
    for answer in refused:
        assert answer.status_code in (302, 403, 404), answer.status_code
        if answer.status_code == 302:
            assert urlsplit(answer.headers["Location"]).path == "/login/"
    assert user_row(app, "intruder") is None
    assert user_row(app, "victim")["first_name"] == "Сотрудник"
    assert login(app.test_client(), victim, TEST_PASSWORD).status_code == 302
    answer = login(app.test_client(), victim, NEW_PASSWORD)
    assert "/login" in answer.headers["Location"]  # the password did not change
