"""Registration confirms the phone by SMS before the account exists, and tells nobody who is a
patient: the answer for a taken number is the one for a new number, byte for byte.

Real parts: the database (SQLite or PostgreSQL), the outbox table, the rate-limit counters in
Redis. Times are moved by writing the rows' expiry into the past, never by sleeping.
"""

from __future__ import annotations

import re
import threading
from datetime import timedelta

from sqlalchemy import func, select

from app.notifications import SMS_MAX_CHARS
from tests.conftest import TEST_PASSWORD, csrf_token, login, patient_username, registration_code

REGISTER = "/register/"
CODE = "/register/code"
RESEND = "/register/code/resend"
PASSWORD = "Zvezda2026sky"
PHONE = "+79123456789"


def form(client, **overrides) -> dict:
    data = {
        "surname": "Иванова",
        "name": "Мария",
        "patronymic": "Петровна",
        "birth_date": "1968-03-14",
        "sex": "female",
        "phone": "8 (912) 345-67-89",
        "email": "maria.ivanova@example.org",
        "region": "Москва",
        "timezone": "Europe/Moscow",
        "password": PASSWORD,
        "password_confirm": PASSWORD,
        "consent": "y",
        "csrf_token": csrf_token(client, REGISTER),
    }
    data.update(overrides)
    return data


def client_from(app, ip: str):
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = ip
    return client


def start(client, **overrides):
    return client.post(REGISTER, data=form(client, **overrides))


def send_code(client, code: str):
    return client.post(CODE, data={"code": code, "csrf_token": csrf_token(client, CODE)})


def count(app, model) -> int:
    from app.extensions import db

    with app.app_context():
        return db.session.execute(select(func.count()).select_from(model)).scalar()


def patients(app) -> int:
    from models import Patient

    return count(app, Patient)


def sms_to(app, phone: str) -> list:
    from app.extensions import db
    from models import OutboundChannel, OutboundMessage

    with app.app_context():
        return list(
            db.session.execute(
                select(OutboundMessage)
                .where(
                    OutboundMessage.recipient == phone,
                    OutboundMessage.channel == OutboundChannel.SMS,
                )
                .order_by(OutboundMessage.id)
            ).scalars()
        )


def age_pending(app, **columns_delta: timedelta) -> None:
    """Move the pending registrations' expiry times into the past."""
    from app.extensions import db
    from models import PendingRegistration

    with app.app_context():
        for pending in db.session.execute(select(PendingRegistration)).scalars():
            for name, delta in columns_delta.items():
                setattr(pending, name, getattr(pending, name) - delta)
        db.session.commit()


_PER_RESPONSE = [
    (re.compile(r'(name="csrf_token"[^>]*value=")[^"]+'), r"\1…"),  # per session
    (re.compile(r"(nonce[-=]\"?)[A-Za-z0-9_\-]+"), r"\1…"),  # CSP nonce: new every response
]


def _blank(text: str) -> str:
    for pattern, repl in _PER_RESPONSE:
        text = pattern.sub(repl, text)
    return text


def comparable(response) -> tuple:
    """Status, body and headers, with what differs per client or per response blanked: the
    session cookie's value, the CSRF tokens, the Content-Security-Policy nonce and the
    request's id (X-Request-ID: random per request, whoever asks)."""
    body = _blank(response.get_data(as_text=True))
    per_response = {"Set-Cookie": r"^session=[^;]*", "X-Request-ID": r"^.*$"}
    headers = sorted(
        (name, re.sub(per_response[name], "…", value) if name in per_response else value)
        for name, value in ((n, _blank(v)) for n, v in response.headers.items())
    )
    return response.status_code, body, headers


# --- the same answer for a new and a taken number ---------------------------------------------


def test_new_and_taken_phone_get_identical_answers(app, make_patient):
    # The same number typed twice: first while nobody has it, then once a patient has it.
    new_client, taken_client = client_from(app, "10.0.0.1"), client_from(app, "10.0.0.2")
    new_step1 = start(new_client)
    new_page = new_client.get(CODE)
    owner = make_patient(phone=PHONE)
    taken_step1 = start(taken_client)
    taken_page = taken_client.get(CODE)

    assert new_step1.status_code == 303
    assert comparable(new_step1) == comparable(taken_step1)
    assert "Set-Cookie" in new_step1.headers  # the cookie is there, only its value differs
    assert comparable(new_page) == comparable(taken_page)
    assert "Пациент с таким номером" not in taken_page.get_data(as_text=True)

    # Behind the identical pages: a code to the new number, a notice to the owner of the taken.
    code_sms, notice = sms_to(app, PHONE)
    assert re.search(r"код \d{6} для регистрации\.", code_sms.body)
    assert code_sms.user_id is None
    assert "кто-то пытался зарегистрироваться с вашим номером" in notice.body
    assert len(notice.body) <= SMS_MAX_CHARS and len(code_sms.body) <= 70  # one SMS segment
    assert "http://localhost/login/" in notice.body  # how to sign in
    assert "Обратитесь к менеджеру проекта" in notice.body  # no reset page: who to ask
    assert not re.search(r"\d{6}", notice.body)  # no code for whoever typed the number
    from app.extensions import db
    from models import Patient

    with app.app_context():
        assert notice.user_id == db.session.get(Patient, owner).user_id
    assert patients(app) == 1


def test_taken_phone_in_another_spelling_gets_a_notice_and_no_account(app, make_patient):
    make_patient(phone=PHONE)
    client = client_from(app, "10.0.0.3")
    assert start(client, phone="+7 912 345 67 89").status_code == 303
    [notice] = sms_to(app, PHONE)
    assert "У вас уже есть учётная запись" in notice.body
    # Whatever is typed at the code step, it is only ever a wrong code.
    for guess in ("000000", "123456"):
        assert "Неверный код" in send_code(client, guess).get_data(as_text=True)
    assert patients(app) == 1


def test_taken_email_is_not_revealed_and_not_attached(app, make_patient):
    make_patient(email="maria.ivanova@example.org")
    free, taken = client_from(app, "10.0.0.4"), client_from(app, "10.0.0.5")
    free_answer = start(free, email="nobody.yet@example.org")
    taken_answer = start(taken, phone="+79123456780", email="MARIA.Ivanova@example.org")
    assert comparable(free_answer) == comparable(taken_answer)

    response = send_code(taken, registration_code(app, "+79123456780"))
    assert response.status_code == 302 and response.headers["Location"].endswith("/cabinet/")
    page = taken.get("/cabinet/").get_data(as_text=True)
    assert "электронной почты уже" not in page

    from app.extensions import db
    from models import OutboundChannel, OutboundMessage, Patient

    with app.app_context():
        created = db.session.execute(
            select(Patient).where(Patient.phone == "+79123456780")
        ).scalar_one()
        assert created.email is None  # created without the other person's address
        assert created.user.email == "+79123456780@users.invalid"
        mail = db.session.execute(
            select(OutboundMessage).where(OutboundMessage.channel == OutboundChannel.EMAIL)
        ).scalar_one()
        assert mail.recipient == "maria.ivanova@example.org"
        assert "не добавлен" in mail.body


# --- the code step is required ----------------------------------------------------------------


def test_no_account_before_the_code_and_nothing_secret_in_the_cookie(app):
    from app.extensions import db
    from models import PendingRegistration

    client = client_from(app, "10.0.0.6")
    assert start(client).status_code == 303
    assert patients(app) == 0
    code = registration_code(app, PHONE)
    with app.app_context():
        pending = db.session.execute(select(PendingRegistration)).scalar_one()
        assert pending.password_hash != PASSWORD and PASSWORD not in str(pending.data)
        assert pending.code_hash and code not in pending.code_hash  # kept as a keyed hash
    cookie = client.get_cookie("session").value
    with client.session_transaction() as session:
        assert re.fullmatch(r"[0-9a-f-]{36}", session["oblako_pending_registration"])
        assert code not in str(dict(session)) and code not in cookie

    page = client.get(CODE).get_data(as_text=True)
    assert 'inputmode="numeric"' in page and 'autocomplete="one-time-code"' in page
    assert "+7 912 345-67-89" in page and "Отправить код ещё раз" in page


def test_a_code_post_without_a_registration_is_refused(app):
    client = client_from(app, "10.0.0.7")
    token = csrf_token(client, REGISTER)
    response = client.post(CODE, data={"code": "123456", "csrf_token": token})
    assert response.status_code == 303 and response.headers["Location"].endswith(REGISTER)
    assert client.get(CODE).status_code == 303
    assert client.post(RESEND, data={"csrf_token": token}).status_code == 303
    assert patients(app) == 0


def test_someone_elses_code_does_not_work_without_their_session(app):
    owner, stranger = client_from(app, "10.0.0.8"), client_from(app, "10.0.0.9")
    start(owner)
    code = registration_code(app, PHONE)
    stranger_token = csrf_token(stranger, REGISTER)
    response = stranger.post(CODE, data={"code": code, "csrf_token": stranger_token})
    assert response.status_code == 303 and response.headers["Location"].endswith(REGISTER)
    assert patients(app) == 0
    assert send_code(owner, code).status_code == 302  # still the owner's to use
    assert patients(app) == 1


def test_signed_in_people_are_sent_away_from_the_code_pages(app, make_patient):
    client = app.test_client()
    login(client, patient_username(app, make_patient()), TEST_PASSWORD)
    assert client.get(CODE).status_code == 302
    token = csrf_token(client, "/profile/edit")
    assert client.post(RESEND, data={"csrf_token": token}).status_code == 302


def test_wrong_codes_are_counted_and_void_the_code(app):
    client = client_from(app, "10.0.0.10")
    start(client)
    code = registration_code(app, PHONE)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    for left in (4, 3, 2, 1):
        html = send_code(client, wrong).get_data(as_text=True)
        assert f"Неверный код. Осталось попыток: {left}." in html
    html = send_code(client, wrong).get_data(as_text=True)
    assert "этот код больше не действует" in html
    # Void means void: the right code no longer creates the account.
    html = send_code(client, code).get_data(as_text=True)
    assert "этот код больше не действует" in html
    assert patients(app) == 0
    # Malformed input is explained and not counted as a guess.
    assert "6 цифр" in send_code(client, "12ab").get_data(as_text=True)

    # A new code (after the resend interval) works, and the old one stays dead.
    from app.throttle import get_throttle

    with app.app_context():
        get_throttle().reset()  # the one-a-minute resend counter, instead of waiting a minute
    assert client.post(RESEND, data={"csrf_token": csrf_token(client, CODE)}).status_code == 303
    fresh = registration_code(app, PHONE)
    assert len(sms_to(app, PHONE)) == 2
    response = send_code(client, fresh)
    assert response.status_code == 302 and patients(app) == 1


def test_an_expired_code_and_an_expired_registration(app):
    from app.extensions import db
    from app.tasks import run_registration_purge
    from models import PendingRegistration

    client = client_from(app, "10.0.0.11")
    start(client)
    code = registration_code(app, PHONE)
    age_pending(app, code_expires_at=timedelta(minutes=10, seconds=1))
    assert "Срок действия кода истёк" in send_code(client, code).get_data(as_text=True)
    assert patients(app) == 0

    token = csrf_token(client, CODE)
    age_pending(app, expires_at=timedelta(minutes=60, seconds=1))
    response = client.post(CODE, data={"code": code, "csrf_token": token})
    assert response.status_code == 303 and response.headers["Location"].endswith(REGISTER)
    assert "Время на регистрацию истекло" in client.get(REGISTER).get_data(as_text=True)
    # The periodic task removes the abandoned registration (its data and password hash).
    with app.app_context():
        assert run_registration_purge() == 1
        assert db.session.execute(select(func.count(PendingRegistration.id))).scalar() == 0


def test_a_right_code_creates_the_account_once(app):
    client = client_from(app, "10.0.0.12")
    start(client)
    assert send_code(client, registration_code(app, PHONE)).status_code == 302
    from models import PendingRegistration

    assert count(app, PendingRegistration) == 0  # its data and password hash are gone
    assert patients(app) == 1


# --- throttling -------------------------------------------------------------------------------


def test_codes_are_throttled_per_phone_whatever_the_address(app, make_patient, monkeypatch):
    monkeypatch.setitem(app.config, "REGISTRATION_CODES_PER_PHONE", "2/hour")
    make_patient(phone="+79123456780")
    answers = {}
    for phone in (PHONE, "+79123456780"):  # a new and a taken number: the same limit
        for n in range(3):
            client = client_from(app, f"10.1.{len(answers)}.{n}")
            answers[phone, n] = start(client, phone=phone)
    for phone in (PHONE, "+79123456780"):
        assert answers[phone, 0].status_code == answers[phone, 1].status_code == 303
        refused = answers[phone, 2]
        assert refused.status_code == 429
        assert "запрошено слишком много кодов" in refused.get_data(as_text=True)
    assert len(sms_to(app, PHONE)) == 2 and len(sms_to(app, "+79123456780")) == 2
    # Another number from the same place is not held up.
    assert start(client_from(app, "10.1.0.0"), phone="+79123456781").status_code == 303


def test_codes_are_throttled_per_address(app, monkeypatch):
    monkeypatch.setitem(app.config, "REGISTRATION_CODES_PER_IP", "3/hour")
    client = client_from(app, "10.2.0.1")
    phones = [f"+7912345670{n}" for n in range(4)]
    statuses = [start(client, phone=phone).status_code for phone in phones]
    assert statuses == [303, 303, 303, 429]
    assert sms_to(app, phones[3]) == []
    assert start(client_from(app, "10.2.0.2"), phone=phones[3]).status_code == 303


def test_send_again_has_its_own_throttle_and_replaces_the_code(app):
    client = client_from(app, "10.3.0.1")
    start(client)
    first = registration_code(app, PHONE)
    token = csrf_token(client, CODE)
    assert client.post(RESEND, data={"csrf_token": token}).status_code == 303
    assert "SMS отправлено ещё раз." in client.get(CODE).get_data(as_text=True)
    assert len(sms_to(app, PHONE)) == 2
    second = registration_code(app, PHONE)
    # At once again: refused, nothing sent.
    client.post(RESEND, data={"csrf_token": token})
    assert "раз в минуту" in client.get(CODE).get_data(as_text=True)
    assert len(sms_to(app, PHONE)) == 2
    if first != second:  # one chance in a million that they are equal
        assert "Неверный код" in send_code(client, first).get_data(as_text=True)
    assert send_code(client, second).status_code == 302


# --- two people, one number -------------------------------------------------------------------


def test_two_registrations_racing_for_one_number_make_one_account(app):
    first, second = client_from(app, "10.4.0.1"), client_from(app, "10.4.0.2")
    start(first, name="Анна")
    first_code = registration_code(app, PHONE)
    start(second, name="Ольга")
    second_code = registration_code(app, PHONE)
    assert send_code(first, first_code).status_code == 302
    response = send_code(second, second_code)
    assert response.status_code == 303 and response.headers["Location"].endswith("/login/")
    assert "только что создана" in second.get("/login/").get_data(as_text=True)
    assert patients(app) == 1
    from app.extensions import db
    from models import Patient

    with app.app_context():
        assert db.session.execute(select(Patient.name)).scalar_one() == "Анна"


def test_two_codes_typed_at_the_same_moment_make_one_account(app):
    """Both registrations for the number pass the check before either inserts (PostgreSQL: the
    second insert waits on the first's unique index entry; SQLite: on the write lock)."""
    racers = [client_from(app, f"10.5.0.{n}") for n in range(2)]
    posts = []
    for n, client in enumerate(racers):
        start(client, name=["Анна", "Ольга"][n])
        posts.append(
            {"code": registration_code(app, PHONE), "csrf_token": csrf_token(client, CODE)}
        )
    barrier = threading.Barrier(len(racers))
    answers: list = [None] * len(racers)

    def confirm(n: int) -> None:
        barrier.wait()
        answers[n] = racers[n].post(CODE, data=posts[n])

    threads = [threading.Thread(target=confirm, args=(n,)) for n in range(len(racers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    locations = sorted((a.status_code, a.headers["Location"].rsplit("/", 2)[-2]) for a in answers)
    assert locations == [(302, "cabinet"), (303, "login")]
    assert patients(app) == 1
