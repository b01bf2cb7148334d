"""The patient cabinet, own consultations, profile, notifications, password change and the
must-change-password gate — each with who may not use it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event, select

from tests.conftest import TEST_PASSWORD, csrf_token, login, patient_username

NEW_PASSWORD = "Novyi2026parol"

PATIENT_PAGES = ["/cabinet/", "/cabinet/consultations/", "/profile/", "/profile/edit"]
SIGNED_IN_PAGES = ["/notifications/", "/account/password/"]


@pytest.fixture
def patient_client(app, make_patient):
    """(client signed in as a fresh patient, patient id)."""
    patient_id = make_patient(timezone="Asia/Yakutsk")
    client = app.test_client()
    login(client, patient_username(app, patient_id))
    return client, patient_id


def user_id_of(app, patient_id: int) -> int:
    from app.extensions import db
    from models import Patient

    with app.app_context():
        return db.session.get(Patient, patient_id).user_id


def add_notifications(app, user_id: int, texts: list[str], link: str = "") -> list[str]:
    """Notifications created a minute apart, in the order given; returns their public ids."""
    from app.extensions import db
    from models import Notification

    start = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)
    with app.app_context():
        rows = [
            Notification(
                user_id=user_id,
                kind="test",
                text=text,
                link=link,
                created_at=start + timedelta(minutes=n),
            )
            for n, text in enumerate(texts)
        ]
        db.session.add_all(rows)
        db.session.commit()
        return [str(r.public_id) for r in rows]


def unread_of(app, user_id: int) -> int:
    from app.cabinet import unread_count

    with app.app_context():
        return unread_count(user_id)


def post(client, url: str, data: dict | None = None, form_page: str = "/notifications/"):
    return client.post(url, data={**(data or {}), "csrf_token": csrf_token(client, form_page)})


# --- access ------------------------------------------------------------------------------------


@pytest.mark.parametrize("url", PATIENT_PAGES + SIGNED_IN_PAGES)
def test_anonymous_is_sent_to_login(client, url):
    response = client.get(url)
    assert response.status_code == 302
    assert "/login/" in response.headers["Location"]


@pytest.mark.parametrize("role", ["Manager", "Doctor", "DutyDoctor"])
@pytest.mark.parametrize("url", PATIENT_PAGES)
def test_staff_cannot_open_patient_pages(app, make_staff, role, url):
    client = app.test_client()
    login(client, make_staff(role))
    assert client.get(url).status_code == 403


def test_staff_can_use_notifications_and_password(app, make_staff):
    client = app.test_client()
    login(client, make_staff("Doctor"))
    for url in SIGNED_IN_PAGES:
        assert client.get(url).status_code == 200, url


def test_admin_without_patient_record_is_not_shown_a_cabinet(app, make_staff):
    client = app.test_client()
    login(client, make_staff("Admin"))
    assert client.get("/cabinet/").status_code == 302
    assert client.get("/profile/").status_code == 404


def test_post_routes_refuse_anonymous(client):
    token = csrf_token(client, "/register/")
    for url in ("/notifications/read-all", "/profile/edit", "/account/password/"):
        response = client.post(url, data={"csrf_token": token})
        assert response.status_code == 302 and "/login/" in response.headers["Location"], url


# --- cabinet and menu --------------------------------------------------------------------------


def test_cabinet_tiles_and_patient_menu(patient_client):
    client, _ = patient_client
    html = client.get("/cabinet/").get_data(as_text=True)
    navbar, page = html.split("</header>", 1)
    for label in ("Консультации", "Уведомления", "Профиль"):
        assert label in page  # the tiles
        assert label in navbar  # the «Личный кабинет» menu
    assert "Личный кабинет" in navbar
    assert "Мои документы" in page  # the documents area's view, linked when it is registered
    for href in ("/cabinet/consultations/", "/notifications/", "/profile/", "/cabinet/booking/"):
        assert f'href="{href}"' in page and f'href="{href}"' in navbar
    # Staff menus are not there.
    assert "/centres/" not in html


def test_staff_menu_has_no_cabinet_but_has_the_bell(app, make_staff):
    client = app.test_client()
    login(client, make_staff("Manager"))
    navbar = client.get("/notifications/").get_data(as_text=True).split("</header>", 1)[0]
    assert "Личный кабинет" not in navbar and "/profile/" not in navbar
    assert 'id="oblako-unread"' in navbar


def test_patient_home_is_the_cabinet(patient_client):
    client, _ = patient_client
    response = client.get("/")
    assert response.status_code == 302 and response.headers["Location"].endswith("/cabinet/")


# --- consultations -----------------------------------------------------------------------------


def test_consultations_empty_state(patient_client):
    client, _ = patient_client
    assert "У вас пока нет консультаций." in client.get("/cabinet/consultations/").get_data(
        as_text=True
    )


def test_consultations_lists_only_own_in_own_time_zone(app, patient_client, make_patient):
    from app.extensions import db
    from models import Consultation

    client, patient_id = patient_client
    other_id = make_patient()
    with app.app_context():
        mine = Consultation(
            kind="duty",
            status="scheduled",
            patient_id=patient_id,
            scheduled_at=datetime(2026, 12, 1, 1, 0, tzinfo=UTC),
        )
        theirs = Consultation(kind="centre_request", status="rejected", patient_id=other_id)
        db.session.add_all([mine, theirs])
        db.session.commit()
        mine_no, theirs_no = str(mine), str(theirs)
    html = client.get("/cabinet/consultations/").get_data(as_text=True)
    assert mine_no in html and "Назначена" in html and "Дежурный врач" in html
    assert "10:00" in html  # 01:00 UTC is 10:00 in Yakutsk, the patient's zone
    assert theirs_no not in html and "Отклонена" not in html


# --- profile -----------------------------------------------------------------------------------


def profile_form(client, **overrides) -> dict:
    data = {
        "phone": "+79990001122",
        "email": "new.mail@example.org",
        "region": "Приморский край",
        "timezone": "Asia/Vladivostok",
        "notify_sms": "y",
        "csrf_token": csrf_token(client, "/profile/edit"),
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def test_profile_shows_own_data_and_consent(patient_client, app):
    client, patient_id = patient_client
    html = client.get("/profile/").get_data(as_text=True)
    assert patient_username(app, patient_id) in html
    assert "Якутск (UTC+9)" in html
    assert "Согласие на обработку персональных данных" in html
    assert app.config["CONSENT_POLICY_VERSION"] in html


def test_profile_edit_updates_contacts_login_and_time_zone(app, patient_client):
    from app.extensions import db
    from models import AuditEvent, Patient

    client, patient_id = patient_client
    response = client.post("/profile/edit", data=profile_form(client, phone="8 999 000-11-22"))
    assert response.status_code == 302
    with app.app_context():
        patient = db.session.get(Patient, patient_id)
        assert patient.phone == patient.user.username == "+79990001122"
        assert patient.email == patient.user.email == "new.mail@example.org"
        assert patient.region == "Приморский край"
        assert patient.timezone == patient.user.timezone == "Asia/Vladivostok"
        assert patient.notify_sms is True and patient.notify_email is False
        audit = db.session.execute(
            select(AuditEvent).where(AuditEvent.action == "patient.profile_update")
        ).scalar_one()
        assert audit.patient_id == patient_id and "@" not in audit.object_id
        assert audit.ip == "127.0.0.1"  # the view's unit of work hands the address over
    assert "Владивосток (UTC+10)" in client.get("/profile/").get_data(as_text=True)
    # The new phone is the login now.
    fresh = app.test_client()
    assert "/login" not in login(fresh, "+79990001122").headers["Location"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"phone": "123"}, "Укажите правильный номер телефона"),
        ({"timezone": "America/New_York"}, "Выберите часовой пояс из списка."),
        ({"email": "broken@"}, "Укажите правильный адрес электронной почты."),
        ({"region": ""}, "Это поле обязательно."),
    ],
)
def test_profile_edit_rejects_bad_input(app, patient_client, overrides, message):
    from app.extensions import db
    from models import Patient

    client, patient_id = patient_client
    response = client.post("/profile/edit", data=profile_form(client, **overrides))
    assert response.status_code == 200
    assert message in response.get_data(as_text=True)
    with app.app_context():
        assert db.session.get(Patient, patient_id).timezone == "Asia/Yakutsk"  # nothing saved


def test_profile_edit_refuses_another_patients_phone_and_email(app, patient_client, make_patient):
    client, _ = patient_client
    other_phone = patient_username(app, make_patient(email="taken@example.org"))
    html = client.post("/profile/edit", data=profile_form(client, phone=other_phone)).get_data(
        as_text=True
    )
    assert "Пациент с таким номером телефона уже зарегистрирован." in html
    html = client.post(
        "/profile/edit", data=profile_form(client, email="TAKEN@example.org")
    ).get_data(as_text=True)
    assert "Пациент с таким адресом электронной почты уже зарегистрирован." in html


def test_profile_edit_cannot_look_numbers_up_in_bulk(
    app, patient_client, make_patient, monkeypatch
):
    """Each change of phone or e-mail says whether the new one is taken: they are counted."""
    monkeypatch.setitem(app.config, "PROFILE_CONTACT_CHANGES_PER_USER", "3/hour")
    client, _ = patient_client
    taken = patient_username(app, make_patient())
    for _n in range(3):
        html = client.post("/profile/edit", data=profile_form(client, phone=taken)).get_data(
            as_text=True
        )
        assert "Пациент с таким номером телефона уже зарегистрирован." in html
    response = client.post("/profile/edit", data=profile_form(client, phone=taken))
    html = response.get_data(as_text=True)
    assert "Слишком много попыток изменить телефон или почту" in html
    assert "уже зарегистрирован" not in html
    # Another patient's count is their own.
    other = app.test_client()
    login(other, patient_username(app, make_patient()))
    html = other.post("/profile/edit", data=profile_form(other, phone=taken)).get_data(as_text=True)
    assert "уже зарегистрирован" in html


def test_profile_edit_keeps_own_phone_and_email(app, patient_client):
    from app.extensions import db
    from models import Patient

    client, patient_id = patient_client
    with app.app_context():
        patient = db.session.get(Patient, patient_id)
        own = {"phone": patient.phone, "email": patient.email.upper()}
    response = client.post("/profile/edit", data=profile_form(client, **own))
    assert response.status_code == 302


def test_profile_edit_without_csrf_is_refused(app, patient_client):
    from app.extensions import db
    from models import Patient

    client, patient_id = patient_client
    data = profile_form(client)
    data.pop("csrf_token")
    assert client.post("/profile/edit", data=data).status_code in (302, 303, 400)
    with app.app_context():
        assert db.session.get(Patient, patient_id).region == "Москва"


# --- notifications -----------------------------------------------------------------------------


def test_notifications_own_only_newest_first_paginated(app, patient_client, make_patient):
    client, patient_id = patient_client
    me = user_id_of(app, patient_id)
    other = user_id_of(app, make_patient())
    add_notifications(app, me, [f"Моё уведомление {n:02d}" for n in range(25)])
    add_notifications(app, other, ["Чужое уведомление"])

    first = client.get("/notifications/").get_data(as_text=True)
    assert "Чужое уведомление" not in first
    assert first.index("Моё уведомление 24") < first.index("Моё уведомление 23")
    assert "Моё уведомление 04" not in first  # 20 per page
    assert "Страница 1 из 2" in first
    second = client.get("/notifications/?page=2").get_data(as_text=True)
    assert "Моё уведомление 04" in second and "Моё уведомление 00" in second
    assert "Моё уведомление 24" not in second


def test_empty_notifications(patient_client):
    client, _ = patient_client
    assert "У вас пока нет уведомлений." in client.get("/notifications/").get_data(as_text=True)


def test_mark_read_own_and_not_anothers(app, patient_client, make_patient):
    client, patient_id = patient_client
    me = user_id_of(app, patient_id)
    other = user_id_of(app, make_patient())
    mine = add_notifications(app, me, ["Раз", "Два"])
    theirs = add_notifications(app, other, ["Чужое"])

    assert post(client, f"/notifications/{mine[0]}/read").status_code == 302
    assert unread_of(app, me) == 1
    assert post(client, f"/notifications/{theirs[0]}/read").status_code == 404
    assert client.get(f"/notifications/{theirs[0]}").status_code == 404
    assert unread_of(app, other) == 1


def test_mark_all_read_touches_only_own(app, patient_client, make_patient):
    client, patient_id = patient_client
    me = user_id_of(app, patient_id)
    other = user_id_of(app, make_patient())
    add_notifications(app, me, ["Раз", "Два", "Три"])
    add_notifications(app, other, ["Чужое"])
    response = post(client, "/notifications/read-all")
    assert response.status_code == 302
    assert unread_of(app, me) == 0
    assert unread_of(app, other) == 1


def test_mark_read_needs_post_and_csrf(app, patient_client):
    client, patient_id = patient_client
    me = user_id_of(app, patient_id)
    ids = add_notifications(app, me, ["Раз"])
    assert client.post("/notifications/read-all").status_code in (302, 303, 400)
    assert client.post(f"/notifications/{ids[0]}/read").status_code in (302, 303, 400)
    assert client.get("/notifications/read-all").status_code == 405
    assert unread_of(app, me) == 1


def test_opening_a_notification_marks_it_read_and_follows_only_local_links(app, patient_client):
    client, patient_id = patient_client
    me = user_id_of(app, patient_id)
    local = add_notifications(app, me, ["Назначена консультация"], link="/cabinet/consultations/")
    evil = add_notifications(app, me, ["Ссылка наружу"], link="https://evil.example/")
    response = client.get(f"/notifications/{local[0]}")
    assert response.headers["Location"].endswith("/cabinet/consultations/")
    response = client.get(f"/notifications/{evil[0]}")
    assert response.headers["Location"].endswith("/notifications/")
    assert unread_of(app, me) == 0


def test_unread_badge_costs_one_count_query(app, patient_client):
    from app.extensions import db

    client, patient_id = patient_client
    add_notifications(app, user_id_of(app, patient_id), ["Раз", "Два", "Три"])
    statements: list[str] = []

    def remember(conn, cursor, statement, *args):
        statements.append(statement.lower())

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", remember)
    try:
        html = client.get("/profile/").get_data(as_text=True)
    finally:
        event.remove(engine, "before_cursor_execute", remember)
    assert '<span class="badge">3</span>' in html
    counts = [s for s in statements if "count(" in s and "notification" in s]
    assert len(counts) == 1


# --- password ----------------------------------------------------------------------------------


def change_password(client, current=TEST_PASSWORD, new=NEW_PASSWORD, confirm=None):
    return client.post(
        "/account/password/",
        data={
            "current_password": current,
            "new_password": new,
            "confirm_password": new if confirm is None else confirm,
            "csrf_token": csrf_token(client, "/account/password/"),
        },
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"current": "Wrong2026pass"}, "Текущий пароль указан неверно."),
        ({"new": "short1"}, "не менее 8 символов"),
        ({"new": TEST_PASSWORD}, "Новый пароль должен отличаться от текущего."),
        ({"confirm": "Other2026pass"}, "Пароли не совпадают."),
    ],
)
def test_change_password_refusals(app, patient_client, kwargs, message):
    client, patient_id = patient_client
    response = change_password(client, **kwargs)
    assert response.status_code == 200
    assert message in response.get_data(as_text=True)
    assert (
        "/login"
        not in login(app.test_client(), patient_username(app, patient_id)).headers["Location"]
    )


def test_change_password_keeps_this_session_and_audits(app, patient_client):
    from app.extensions import db
    from models import AuditEvent

    client, patient_id = patient_client
    response = change_password(client)
    assert response.status_code == 302
    assert client.get("/cabinet/").status_code == 200
    username = patient_username(app, patient_id)
    assert "/login" not in login(app.test_client(), username, NEW_PASSWORD).headers["Location"]
    with app.app_context():
        actions = db.session.execute(select(AuditEvent.action)).scalars().all()
        assert "user.password_change" in actions


# --- must change password ----------------------------------------------------------------------


def test_must_change_password_gate(app, patient_client):
    from app.extensions import db
    from models import OblakoUser

    client, patient_id = patient_client
    user_id = user_id_of(app, patient_id)
    with app.app_context():
        db.session.get(OblakoUser, user_id).must_change_password = True
        db.session.commit()

    for url in ("/cabinet/", "/profile/", "/notifications/", "/"):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response.headers["Location"].endswith("/account/password/"), url
    page = client.get("/account/password/").get_data(as_text=True)
    assert "Чтобы продолжить, задайте новый пароль." in page
    assert client.get("/static/oblako/oblako.css").status_code == 200

    assert change_password(client).status_code == 302
    with app.app_context():
        assert db.session.get(OblakoUser, user_id).must_change_password is False
    assert client.get("/cabinet/").status_code == 200


def test_must_change_password_still_allows_logout(app, patient_client):
    from app.extensions import db
    from models import OblakoUser

    client, patient_id = patient_client
    with app.app_context():
        db.session.get(OblakoUser, user_id_of(app, patient_id)).must_change_password = True
        db.session.commit()
    response = client.get("/logout/")
    assert response.status_code == 302
    assert "/account/password/" not in response.headers["Location"]
    assert client.get("/cabinet/").headers["Location"].split("?")[0].endswith("/login/")
