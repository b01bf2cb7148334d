"""The consultation room's page and the chat around it (issue 5): who sees the room page, the
chat history on the consultation pages, unread counts (one query for a list) and read marks."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import event

from tests.media_web_world import (
    add_messages,
    consultation,
    make_consultation,
    room_config,
    signed_in,
    stage_world,
    user_id_of_doctor,
    user_id_of_patient,
)


@pytest.fixture
def world(app, make_patient, make_center, make_doctor, make_staff):
    """Centres, doctors, staff and patients P and Q: tests/media_web_world.py."""
    return stage_world(app, make_patient, make_center, make_doctor, make_staff)


@pytest.mark.parametrize("username,role", [("p", "patient"), ("media_d1", "doctor")])
def test_the_room_page_renders_for_each_participant(app, world, username, role):
    client = signed_in(app, world["p_login"] if username == "p" else username)
    response = client.get(f"/media/room/{world['c']}")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "<title>Консультация" in html
    # Content-hashed names (app/assets.py): socket.io.min.<hash>.js, then the room's parts in
    # their load order (room/core.<hash>.js first, room/controls.<hash>.js, which starts, last).
    socket_io = re.search(r"/static/vendor/socket\.io\.min\.[0-9a-f]{12}\.js", html)
    assert socket_io
    parts = re.findall(r"/static/oblako/room/(\w+)\.[0-9a-f]{12}\.js", html)
    assert parts == ["core", "chat", "precall", "presence", "peers", "relay", "controls"]
    assert socket_io.start() < html.index("/static/oblako/room/core.")
    config = room_config(html)
    assert config["role"] == role and config["mode"] == "room"
    assert config["token_url"] == f"/media/token/{world['c']}"
    # Every text of the script comes translated from here: Russian, no English left.
    assert config["text"]["waiting"] == "Пожалуйста, подождите: врач скоро пригласит вас."
    assert config["errors"]["room_full"] == "Комната консультации заполнена."
    assert 'id="btn-join"' in html
    if role == "doctor":
        assert 'id="waiting-room"' in html and 'id="invite-form"' in html
        assert config["start_url"] == f"/care/consultations/{world['c']}/start"
        assert config["conclusion_url"] == f"/care/consultations/{world['c']}/conclusion"
    else:
        assert 'id="waiting-room"' not in html and config["start_url"] is None


@pytest.mark.parametrize("who", ["q", "media_d3", "media_duty", "media_admin"])
def test_the_room_page_is_404_for_everyone_else(app, world, who):
    username = world["q_login"] if who == "q" else who
    assert signed_in(app, username).get(f"/media/room/{world['c']}").status_code == 404


def test_chat_history_is_escaped_and_in_the_viewers_zone(app, world):
    duty = make_consultation(app, world, doctor=world["duty"], minutes=24 * 60)
    doctor_user = user_id_of_doctor(app, world["duty"])
    add_messages(app, duty, doctor_user, "<script>alert(1)</script> Здравствуйте")
    page = signed_in(app, world["p_login"]).get(f"/cabinet/consultations/{duty}")
    html = page.get_data(as_text=True)
    assert 'id="chat-form"' in html  # a duty booking: the patient writes before the day
    assert "&lt;script&gt;alert(1)&lt;/script&gt; Здравствуйте" in html
    assert "<script>alert(1)" not in html
    from app.extensions import db
    from models import ChatMessage

    with app.app_context():
        created = db.session.query(ChatMessage).one().created_at
    from zoneinfo import ZoneInfo

    local = created.astimezone(ZoneInfo("Asia/Vladivostok")).strftime("%H:%M")
    assert re.search(rf'<time datetime="[^"]+">[^<]*{local}</time>', html)
    # The doctor's care page carries the same chat.
    care = signed_in(app, "media_duty").get(f"/care/consultations/{duty}").get_data(as_text=True)
    assert 'id="chat-messages"' in care and "&lt;script&gt;" in care


def test_a_centre_consultation_before_its_start_has_no_chat_panel(app, world):
    html = signed_in(app, world["p_login"]).get(f"/cabinet/consultations/{world['c']}")
    assert 'id="chat-form"' not in html.get_data(as_text=True)


# ---------------------------------------------------------------------------------------------
# Unread counts
# ---------------------------------------------------------------------------------------------


def test_unread_counts_in_the_cabinet_list_reset_by_reading(app, world):
    duty = make_consultation(app, world, doctor=world["duty"], minutes=24 * 60)
    doctor_user = user_id_of_doctor(app, world["duty"])
    patient_user = user_id_of_patient(app, world["p"])
    add_messages(app, duty, doctor_user, "Первое", "Второе")
    add_messages(app, duty, patient_user, "Моё")  # own messages are never unread
    client = signed_in(app, world["p_login"])
    listing = client.get("/cabinet/consultations/").get_data(as_text=True)
    badges = re.findall(
        r'class="badge chat-unread"[^>]*><i class="fa fa-comment"></i> (\d+)', listing
    )
    assert badges == ["2"]
    client.get(f"/cabinet/consultations/{duty}")  # reading the chat marks it
    listing = client.get("/cabinet/consultations/").get_data(as_text=True)
    assert "chat-unread" not in listing
    # The doctor's day shows what the patient wrote.
    from zoneinfo import ZoneInfo

    day = consultation(app, duty).scheduled_at.astimezone(ZoneInfo("Europe/Moscow")).date()
    care = signed_in(app, "media_duty").get(f"/care/day?date={day.isoformat()}")
    assert re.search(r"chat-unread[^>]*><i class=\"fa fa-comment\"></i> 1<", care.get_data(True))


def test_unread_counts_cost_one_query_for_the_whole_list(app, world):
    from app import media as svc
    from app.extensions import db

    doctor_user = user_id_of_doctor(app, world["duty"])
    patient_user = user_id_of_patient(app, world["p"])

    def queries_for(n: int) -> tuple[int, dict]:
        ids = []
        for _ in range(n):
            public_id = make_consultation(app, world, doctor=world["duty"], minutes=600)
            add_messages(app, public_id, doctor_user, "а", "б", "в")
            ids.append(consultation(app, public_id).id)
        with app.app_context():
            statements = []
            listener = lambda *a, **k: statements.append(a[2])  # noqa: E731
            event.listen(db.engine, "before_cursor_execute", listener)
            try:
                counts = svc.unread_counts(patient_user, ids)
            finally:
                event.remove(db.engine, "before_cursor_execute", listener)
        return len(statements), counts

    few, _ = queries_for(2)
    many, counts_many = queries_for(12)
    assert few == many == 1
    assert set(counts_many.values()) == {3} and len(counts_many) == 12


def test_the_read_mark_never_moves_backwards(app, world):
    from app import media as svc
    from app.extensions import db
    from models import ChatRead

    duty = make_consultation(app, world, doctor=world["duty"], minutes=600)
    ids = add_messages(app, duty, user_id_of_doctor(app, world["duty"]), "1", "2", "3")
    patient_user = user_id_of_patient(app, world["p"])
    with app.app_context():
        c = db.session.get(type(consultation(app, duty)), consultation(app, duty).id)
        assert svc.mark_read(patient_user, c, ids[2]) == ids[2]
        assert svc.mark_read(patient_user, c, ids[0]) == ids[2]
        assert svc.mark_read(patient_user, c, ids[2] + 1000) == ids[2]  # not past the last
        db.session.commit()
        assert db.session.query(ChatRead).one().last_read_id == ids[2]
        assert svc.unread_counts(patient_user, [c.id]) == {}


def test_the_cabinet_list_costs_the_same_queries_however_many_chats(app, world):
    from app.extensions import db

    doctor_user = user_id_of_doctor(app, world["duty"])
    client = signed_in(app, world["p_login"])

    def queries_for_list() -> int:
        with app.app_context():
            engine = db.engine
        statements: list[str] = []

        def listener(*args, **kwargs):
            statements.append(args[2])

        event.listen(engine, "before_cursor_execute", listener)
        try:
            assert client.get("/cabinet/consultations/").status_code == 200
        finally:
            event.remove(engine, "before_cursor_execute", listener)
        return len(statements)

    for _ in range(2):
        add_messages(app, make_consultation(app, world, doctor=world["duty"]), doctor_user, "а")
    few = queries_for_list()
    for _ in range(8):
        add_messages(app, make_consultation(app, world, doctor=world["duty"]), doctor_user, "б")
    many = queries_for_list()
    assert few == many
