"""Patient self-registration: the public form, its refusals, the SMS code, consent, sign-in.

The form alone creates nothing: it sends a code to the phone (or, for a number that already has
an account, a notice to its owner) and answers the same in both cases; the account exists once
the code is typed.
"""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from sqlalchemy import func, select

from tests.conftest import TEST_PASSWORD, csrf_token, login, registration_code

REGISTER = "/register/"
CODE = "/register/code"
NEW_PASSWORD = "Zvezda2026sky"
PHONE = "+79123456789"


def form_data(client, **overrides) -> dict:
    data = {
        "surname": "Иванова",
        "name": "Мария",
        "patronymic": "Петровна",
        "birth_date": "1968-03-14",
        "sex": "female",
        "phone": "8 (912) 345-67-89",
        "email": "Maria.Ivanova@Example.org",
        "region": "Республика Саха (Якутия)",
        "timezone": "Asia/Yakutsk",
        "password": NEW_PASSWORD,
        "password_confirm": NEW_PASSWORD,
        "consent": "y",
        "csrf_token": csrf_token(client, REGISTER),
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def register(app, client, **overrides):
    """Both steps: the form, then the code from the SMS; returns the final response."""
    first = client.post(REGISTER, data=form_data(client, **overrides))
    assert first.status_code == 303 and first.headers["Location"].endswith(CODE), first
    phone = overrides.get("phone_e164", PHONE)
    return client.post(
        CODE, data={"code": registration_code(app, phone), "csrf_token": csrf_token(client, CODE)}
    )


def patient_count(app) -> int:
    from app.extensions import db
    from models import Patient

    with app.app_context():
        return db.session.execute(select(func.count()).select_from(Patient)).scalar()


def test_form_is_public_russian_and_phone_friendly(client):
    response = client.get(REGISTER)
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    for text in (
        "Регистрация",
        "Фамилия",
        "Отчество",
        "Дата рождения",
        "Мобильный телефон",
        "Часовой пояс",
        "Якутск (UTC+9)",
        "Я даю согласие на обработку",
    ):
        assert text in html
    assert 'type="tel"' in html and 'type="date"' in html
    assert 'name="viewport"' in html  # FAB's layout scales to a phone screen
    assert "g-recaptcha" not in html  # works without reCAPTCHA


def test_landing_page_links_to_registration(client):
    assert 'href="/register/"' in client.get("/").get_data(as_text=True)


def test_registration_creates_patient_consent_audit_and_signs_in(app, client):
    from app.extensions import db
    from models import AuditEvent, Consent, ConsentKind, Patient

    response = register(app, client)
    assert response.status_code == 302
    assert response.headers["Location"].endswith("/cabinet/")

    with app.app_context():
        patient = db.session.execute(select(Patient)).scalar_one()
        assert patient.phone == "+79123456789"  # E.164, whatever the spelling typed
        assert patient.user.username == "+79123456789"
        assert patient.email == "maria.ivanova@example.org"
        assert (patient.surname, patient.name, patient.patronymic) == (
            "Иванова",
            "Мария",
            "Петровна",
        )
        assert patient.birth_date == date(1968, 3, 14)
        assert patient.timezone == patient.user.timezone == "Asia/Yakutsk"
        assert patient.source == "self"
        assert patient.user.password != NEW_PASSWORD  # hashed
        consent = db.session.execute(select(Consent)).scalar_one()
        assert consent.user_id == patient.user_id
        assert consent.kind == ConsentKind.PERSONAL_DATA
        assert consent.policy_version == app.config["CONSENT_POLICY_VERSION"]
        assert consent.accepted_at is not None and consent.ip
        actions = db.session.execute(select(AuditEvent.action)).scalars().all()
        assert "patient.register" in actions

    # Signed in straight away: the cabinet opens without another login.
    cabinet = client.get("/cabinet/")
    assert cabinet.status_code == 200
    assert "Здравствуйте, Мария Петровна!" in cabinet.get_data(as_text=True)


def test_registered_patient_can_sign_in_with_phone(client, app):
    register(app, client)
    client.get("/logout/")
    other = app.test_client()
    response = login(other, "+79123456789", NEW_PASSWORD)
    assert response.status_code == 302 and "/login" not in response.headers["Location"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"consent": None},
            "Для регистрации необходимо согласие на обработку персональных данных.",
        ),
        ({"password": "short1", "password_confirm": "short1"}, "не менее 8 символов"),
        ({"password": "abcdefghij", "password_confirm": "abcdefghij"}, "буквы и цифры"),
        ({"password_confirm": "Other2026pass"}, "Пароли не совпадают."),
        ({"phone": "12345"}, "Укажите правильный номер телефона"),
        (
            {"birth_date": (date.today() + timedelta(days=2)).isoformat()},
            "Дата рождения не может быть в будущем.",
        ),
        ({"birth_date": "31.12.1899"}, "Дата рождения не может быть раньше 1900 года."),
        ({"birth_date": "31.02.1990"}, "Укажите настоящую дату рождения."),
        ({"timezone": "Europe/London"}, "Выберите часовой пояс из списка."),
        ({"sex": "other"}, "Выберите значение из списка."),
        ({"sex": ""}, "Это поле обязательно."),
        ({"email": "not-an-email"}, "Укажите правильный адрес электронной почты."),
        ({"surname": ""}, "Это поле обязательно."),
        ({"name": "R2D2"}, "Используйте только буквы"),
    ],
)
def test_bad_input_is_explained_on_the_form(app, client, overrides, message):
    response = client.post(REGISTER, data=form_data(client, **overrides))
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert message in html
    assert "has-error" in html  # shown next to its field
    assert patient_count(app) == 0
    # What was typed is kept, except the passwords.
    if overrides.get("surname", "x"):
        assert 'value="Иванова"' in html
    assert NEW_PASSWORD not in html
    assert "Республика Саха (Якутия)" in html


def test_email_is_optional(app, client):
    response = register(app, client, email="")
    assert response.status_code == 302
    from app.extensions import db
    from models import Patient

    with app.app_context():
        assert db.session.execute(select(Patient.email)).scalar_one() is None


def test_password_containing_own_name_is_refused(app, client):
    response = client.post(
        REGISTER,
        data=form_data(
            client, password="Ivanova2026", password_confirm="Ivanova2026", surname="Ivanova"
        ),
    )
    assert "не должен содержать" in response.get_data(as_text=True)
    assert patient_count(app) == 0


def test_post_without_csrf_token_is_refused(app, client):
    data = form_data(client)
    data.pop("csrf_token")
    response = client.post(REGISTER, data=data)
    assert response.status_code in (302, 303, 400)
    assert patient_count(app) == 0


def test_signed_in_user_is_sent_away_from_registration(client, make_patient, app):
    from tests.conftest import patient_username

    login(client, patient_username(app, make_patient()), TEST_PASSWORD)
    response = client.get(REGISTER)
    assert response.status_code == 302
