"""E-mail rules at their one place (app/emails.py), and the staff form that used a regex."""

from __future__ import annotations

import pytest
from sqlalchemy import event, func, select, text

from tests.conftest import csrf_token, login


@pytest.mark.no_db
@pytest.mark.parametrize(
    ("raw", "stored"),
    [
        ("  Ivan.Petrov@Mail.RU ", "ivan.petrov@mail.ru"),
        ("", None),
        (None, None),
        ("   ", None),
    ],
)
def test_normalize_email_stores_lower_case_and_empty_as_none(app, raw, stored):
    from app.emails import normalize_email

    assert normalize_email(raw) == stored


@pytest.mark.no_db
@pytest.mark.parametrize(
    "raw",
    ["not-an-email", "ivan@mail..ru", "ivan@-mail.ru", "ivan petrov@mail.ru", "@mail.ru", "a@b"],
)
def test_normalize_email_refuses_what_is_not_an_address(app, raw):
    from flask_babel import force_locale

    from app.emails import InvalidEmail, normalize_email

    with app.test_request_context(), force_locale("ru"):
        with pytest.raises(InvalidEmail) as refused:
            normalize_email(raw)
        assert str(refused.value) == "Укажите правильный адрес электронной почты."


def test_an_address_is_taken_by_a_patient_or_any_account_whatever_its_case(
    app, make_patient, make_staff
):
    from app.emails import email_holders, email_taken, emails_in_use
    from app.extensions import db
    from models import OblakoUser, Patient

    patient_id = make_patient(email="anna@example.org")
    make_staff("Manager", username="boss")  # boss@example.org, an account with no patient
    with app.app_context():
        patient_user = db.session.get(Patient, patient_id).user_id
        boss = db.session.execute(
            select(OblakoUser.id).where(OblakoUser.username == "boss")
        ).scalar_one()
        assert email_holders("anna@example.org") == [patient_user]
        assert email_taken("anna@example.org")
        assert not email_taken("anna@example.org", own_user_id=patient_user)
        assert email_taken("boss@example.org") and email_holders("boss@example.org") == [boss]
        assert not email_taken("nobody@example.org")
        # A patient's own e-mail counts even where the account holds another one.
        db.session.get(OblakoUser, patient_user).email = "Placeholder@Users.invalid"
        db.session.flush()
        assert email_holders("anna@example.org") == [patient_user]
        assert emails_in_use(["ANNA@example.org", "boss@example.org", "free@example.org"]) == {
            "anna@example.org",
            "boss@example.org",
        }
        db.session.rollback()


def test_emails_in_use_asks_in_chunks(app, make_staff, monkeypatch):
    from app import emails
    from app.extensions import db

    for n in range(5):
        make_staff("Manager", username=f"chunk{n}")
    monkeypatch.setattr(emails, "CHUNK", 2)
    statements: list[str] = []
    with app.app_context():

        def count(conn, cursor, statement, *args):
            statements.append(statement)

        event.listen(db.engine, "before_cursor_execute", count)
        try:
            found = emails.emails_in_use(f"chunk{n}@example.org" for n in range(5))
        finally:
            event.remove(db.engine, "before_cursor_execute", count)
    assert found == {f"chunk{n}@example.org" for n in range(5)}
    assert len([s for s in statements if "ab_user" in s]) == 3


def test_the_accounts_side_of_the_look_up_uses_the_lower_email_index(app):
    """The same query serves one address and an import's thousands: its accounts' side can use
    ix_ab_user_email_lower (migration 0009) on either database."""
    from app.emails import email_holders_query
    from app.extensions import db

    with app.app_context(), db.engine.connect() as conn:
        stmt = email_holders_query(["a@example.org", "b@example.org"])
        sql = str(stmt.compile(conn, compile_kwargs={"literal_binds": True}))
        if conn.dialect.name == "sqlite":
            plan = " ".join(
                str(r[-1]) for r in conn.execute(text(f"EXPLAIN QUERY PLAN {sql}")).all()
            )
        else:
            conn.execute(text("SET LOCAL enable_seqscan = off"))
            plan = " ".join(r[0] for r in conn.execute(text(f"EXPLAIN {sql}")).all())
        conn.rollback()
    assert "ix_ab_user_email_lower" in plan, plan


def _doctor_form(email: str) -> dict:
    return {
        "surname": "Сердцева",
        "name": "Ирина",
        "patronymic": "Олеговна",
        "specialty": "Кардиолог",
        "timezone": "Asia/Yekaterinburg",
        "username": "serdtseva",
        "password": "Kardio2030x",
        "email": email,
    }


@pytest.mark.parametrize(
    ("email", "message"),
    [
        # The staff form's old regex let these through; the library does not.
        ("serdtseva@mail..ru", "Укажите правильный адрес электронной почты."),
        ("serdtseva@-mail.ru", "Укажите правильный адрес электронной почты."),
        ("ANNA@example.org", "Этот адрес электронной почты уже используется."),
    ],
)
def test_staff_created_account_uses_the_same_e_mail_rules(
    app, make_staff, make_patient, email, message
):
    from app.extensions import db
    from models import Doctor

    make_patient(email="anna@example.org")
    client = app.test_client()
    assert login(client, make_staff("Manager")).status_code == 302
    data = {**_doctor_form(email), "csrf_token": csrf_token(client, "/doctors/add")}
    response = client.post("/doctors/add", data=data)
    assert response.status_code == 200
    assert message in response.get_data(as_text=True)
    with app.app_context():
        assert db.session.execute(select(func.count()).select_from(Doctor)).scalar() == 0


def test_staff_created_account_stores_the_normalised_e_mail(app, make_staff):
    from app.extensions import db
    from models import Doctor

    client = app.test_client()
    assert login(client, make_staff("Manager")).status_code == 302
    token = csrf_token(client, "/doctors/add")
    data = {**_doctor_form(" Serdtseva@Example.ORG "), "csrf_token": token}
    response = client.post("/doctors/add", data=data)
    assert response.status_code == 302
    with app.app_context():
        doctor = db.session.execute(select(Doctor)).scalar_one()
        assert doctor.user.email == "serdtseva@example.org"
