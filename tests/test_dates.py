"""Dates within reason (issue 15, item 15): one birth-date rule on every path that takes one.

Scheduling consultations and duty shifts is tested through their screens in
tests/test_care_actions.py and tests/test_staff_schedule.py; the birth date here, on each path:
registration, accounts created by staff (and demo data), referral table rows.
"""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from tests.conftest import TEST_PASSWORD, unique_phone

TOMORROW = date.today() + timedelta(days=1)
FUTURE_RU = "Дата рождения не может быть в будущем."
TOO_EARLY_RU = "Дата рождения не может быть раньше 1900 года."
CASES = [
    (TOMORROW, FUTURE_RU),
    (date(9999, 12, 31), FUTURE_RU),
    (date(1899, 12, 31), TOO_EARLY_RU),
    (date(1, 1, 1), TOO_EARLY_RU),
]


@pytest.fixture
def ru(app):
    with app.test_request_context(headers={"Accept-Language": "ru"}):
        yield


@pytest.mark.no_db
@pytest.mark.parametrize("born,message", CASES)
def test_registration_refuses_an_unreal_birth_date(app, ru, born, message):
    from app.registration import RegistrationError, _check_birth_date

    with pytest.raises(RegistrationError) as refused:
        _check_birth_date(born)
    assert str(refused.value) == message


@pytest.mark.no_db
def test_registration_keeps_a_real_birth_date(app, ru):
    from app.registration import _check_birth_date

    assert _check_birth_date(date(1900, 1, 1)) == date(1900, 1, 1)
    assert _check_birth_date(date.today()) == date.today()


@pytest.mark.parametrize("born,message", CASES)
def test_an_account_created_by_staff_refuses_it_too(app, ru, born, message):
    from app.accounts import AccountError, create_patient
    from app.extensions import db

    with pytest.raises(AccountError) as refused:
        create_patient(
            surname="Тестова",
            name="Анна",
            patronymic="",
            birth_date=born,
            sex="female",
            phone=unique_phone(),
            email=None,
            region="Москва",
            timezone="Europe/Moscow",
            password=TEST_PASSWORD,
        )
    assert str(refused.value) == message
    db.session.rollback()


@pytest.mark.no_db
@pytest.mark.parametrize(
    "cell,message",
    [
        (f"{TOMORROW:%d.%m.%Y}", FUTURE_RU),
        ("31.12.9999", FUTURE_RU),
        ("31.12.1899", TOO_EARLY_RU),
    ],
)
def test_a_referral_row_refuses_it_too(app, ru, cell, message):
    from app.referrals.validation import parse_birth_date

    with pytest.raises(ValueError) as refused:
        parse_birth_date(cell)
    assert str(refused.value) == message
    assert parse_birth_date("01.01.1900") == date(1900, 1, 1)


@pytest.mark.no_db
def test_the_horizon_is_one_setting(app, monkeypatch):
    from datetime import UTC, datetime

    from app.dates import schedule_error

    now = datetime(2027, 1, 1, tzinfo=UTC)
    in_200_days = now + timedelta(days=200)
    with app.test_request_context():
        assert schedule_error(in_200_days, in_200_days + timedelta(hours=1), now) is None
        monkeypatch.setitem(app.config, "SCHEDULE_HORIZON_DAYS", 100)
        assert schedule_error(in_200_days, in_200_days + timedelta(hours=1), now) is not None
