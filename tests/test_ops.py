"""Operating the web app: /healthz, /metrics, the JSON request log and its request id, the
client's address behind a proxy (issue 18 items 4 and 6).
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import text

from logs import JsonFormatter
from tests.conftest import TEST_PASSWORD, csrf_token
from tests.web_process import HttpClient

REGISTER = "/register/"


def metric(body: str, name: str, **labels: str) -> float:
    """The value of one sample of the exposition text (labels in any order)."""
    for line in body.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        match = re.fullmatch(r"([a-z_]+)(?:\{(.*)\})? (\S+)", line)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
        if found == labels:
            return float(match.group(3))
    raise AssertionError(f"no sample {name}{labels}")


# --- /healthz ------------------------------------------------------------------------------


def test_healthz_is_public_and_names_each_part(client):
    answer = client.get("/healthz")
    assert answer.status_code == 200
    assert answer.json == {
        "status": "ok",
        "checks": {"database": "ok", "migrations": "ok", "redis": "ok"},
    }
    assert answer.headers["Cache-Control"] == "no-store"


def test_healthz_fails_when_the_schema_is_behind_the_code(app, client):
    from app.extensions import db

    with app.app_context():
        (current,) = db.session.execute(text("SELECT version_num FROM alembic_version")).one()
        db.session.execute(text("UPDATE alembic_version SET version_num = '0001'"))
        db.session.commit()
    try:
        answer = client.get("/healthz")
    finally:
        with app.app_context():
            db.session.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": current})
            db.session.commit()
    assert answer.status_code == 503
    assert answer.json["status"] == "fail"
    assert answer.json["checks"]["migrations"] == "not current"
    assert answer.json["checks"]["database"] == "ok"


def test_healthz_fails_without_redis_and_keeps_its_address_secret(app, client):
    from app.ops import health

    url = "redis://:s3cr3t-pass@127.0.0.1:1/0"  # nothing listens on port 1
    saved = app.config["REDIS_URL"], app.extensions.pop("oblako_health_redis", None)
    app.config["REDIS_URL"] = url
    try:
        answer = client.get("/healthz")
    finally:
        app.config["REDIS_URL"] = saved[0]
        app.extensions.pop("oblako_health_redis", None)
        if saved[1] is not None:
            app.extensions["oblako_health_redis"] = saved[1]
    assert answer.status_code == 503
    assert answer.json["checks"]["redis"] == "unreachable"
    assert "s3cr3t" not in answer.get_data(as_text=True)
    assert health.OK == answer.json["checks"]["database"]


def test_healthz_fails_when_the_database_is_unreachable(app, client):
    from sqlalchemy import create_engine

    from app.extensions import db

    with app.app_context():
        engines = db._app_engines[app]
        real = engines[None]
    # A real engine on a server that is down (nothing listens on port 1) or a file that
    # cannot be opened, in place of the app's own for one request.
    if real.dialect.name == "sqlite":
        broken = create_engine("sqlite:////nonexistent-dir/x/oblako.db")
    else:
        broken = create_engine(real.url.set(port=1))
    engines[None] = broken
    try:
        answer = client.get("/healthz")
    finally:
        engines[None] = real
        broken.dispose()
    assert answer.status_code == 503
    assert answer.json["checks"]["database"] == "unreachable"


# --- /metrics ------------------------------------------------------------------------------


def test_metrics_count_requests_by_endpoint_and_the_backlog(app, client, world):
    from app.extensions import db
    from models import Consultation, OutboundMessage, utcnow
    from tests.consultation_world import make_consultation

    overdue = make_consultation(app, world, status="requested")
    make_consultation(app, world, status="requested")  # not due yet
    with app.app_context():
        c = db.session.query(Consultation).filter_by(public_id=overdue).one()
        c.due_by = utcnow() - timedelta(hours=1)
        db.session.add_all(
            [
                OutboundMessage(channel="sms", recipient="+79120000001", body="x"),
                OutboundMessage(channel="sms", recipient="+79120000002", body="x", attempts=2),
                OutboundMessage(
                    channel="email", recipient="a@example.org", body="x", status="failed"
                ),
            ]
        )
        db.session.commit()

    before = client.get("/metrics").get_data(as_text=True)
    for _ in range(3):
        assert client.get("/healthz").status_code == 200
    body = client.get("/metrics").get_data(as_text=True)

    count = "oblako_http_request_duration_seconds_count"
    seen = (
        metric(before, count, endpoint="ops.healthz", method="GET")
        if "ops.healthz" in before
        else 0
    )
    assert metric(body, count, endpoint="ops.healthz", method="GET") == seen + 3
    assert metric(body, "oblako_outbox_messages", channel="sms", status="queued") == 2
    assert metric(body, "oblako_outbox_messages", channel="email", status="failed") == 1
    assert metric(body, "oblako_outbox_retrying", channel="sms") == 1
    assert metric(body, "oblako_applications_overdue") == 1
    assert metric(body, "oblako_jobs_pending") == 0
    assert metric(body, "oblako_metrics_errors", part="outbox") == 0


def test_a_made_up_method_does_not_grow_the_metrics(client):
    for n in range(3):
        client.open("/healthz", method=f"BREW{n}")
    body = client.get("/metrics").get_data(as_text=True)
    assert "BREW" not in body
    count = "oblako_http_request_duration_seconds_count"
    assert (  # 405: no endpoint matched
        metric(body, count, endpoint="none", method="OTHER") >= 3
    )


def test_metrics_refused_to_an_address_not_allowed(client, app):
    answer = client.get("/metrics", environ_base={"REMOTE_ADDR": "203.0.113.9"})
    assert answer.status_code == 403
    assert "oblako_" not in answer.get_data(as_text=True)
    saved = app.config["METRICS_ALLOWED"]
    app.config["METRICS_ALLOWED"] = "203.0.113.0/24"
    try:
        assert (
            client.get("/metrics", environ_base={"REMOTE_ADDR": "203.0.113.9"}).status_code == 200
        )
        assert client.get("/metrics").status_code == 403  # loopback is no longer listed
    finally:
        app.config["METRICS_ALLOWED"] = saved


def test_metrics_cost_the_same_queries_whatever_the_backlog(app, client, world):
    from sqlalchemy import event

    from app.extensions import db
    from models import OutboundMessage
    from tests.consultation_world import make_consultation

    def statements() -> int:
        seen: list[str] = []

        def record(conn, cursor, statement, *args) -> None:
            seen.append(statement)

        with app.app_context():
            engine = db.engine
        event.listen(engine, "before_cursor_execute", record)
        try:
            assert client.get("/metrics").status_code == 200
        finally:
            event.remove(engine, "before_cursor_execute", record)
        return len(seen)

    empty = statements()
    for _ in range(5):
        make_consultation(app, world, status="requested")
    with app.app_context():
        db.session.add_all(
            OutboundMessage(channel="sms", recipient=f"+7912000{i:04d}", body="x")
            for i in range(20)
        )
        db.session.commit()
    assert statements() == empty


# --- the request log -----------------------------------------------------------------------


@pytest.fixture
def log_lines(caplog):
    """Every record of every logger during the test, as the JSON lines production writes."""
    caplog.set_level(logging.DEBUG)
    formatter = JsonFormatter()

    def lines() -> list[str]:
        return [formatter.format(record) for record in caplog.records]

    return lines


def test_a_request_leaves_one_line_and_no_trace_of_the_patients_form(app, client, log_lines):
    surname, phone, email = "Приметова", "+79127770011", "primetova.secret@example.org"
    form = {
        "surname": surname,
        "name": "Зинаида",
        "patronymic": "Отчествовна",
        "birth_date": "1951-03-14",
        "sex": "female",
        "phone": phone,
        "email": email,
        "region": "Москва",
        "timezone": "Europe/Moscow",
        "password": "Zvezda2026sky",
        "password_confirm": "Zvezda2026sky",
        "consent": "y",
        "csrf_token": csrf_token(client, REGISTER),
    }
    answer = client.post(REGISTER, data=form, headers={"X-Request-ID": "req-test-0001"})
    assert answer.status_code == 303
    assert answer.headers["X-Request-ID"] == "req-test-0001"

    lines = log_lines()
    text_of_all = "\n".join(lines)
    for secret in (surname, "Зинаида", phone, "9127770011", email, "primetova", "Zvezda2026sky"):
        assert secret not in text_of_all, secret
    parsed = [json.loads(line) for line in lines]
    requests = [p for p in parsed if p["logger"] == "oblako.request"]
    mine = [p for p in requests if p.get("request_id") == "req-test-0001"]
    assert len(mine) == 1
    assert mine[0] | {"ts": None, "duration_ms": None} == {
        "ts": None,
        "level": "info",
        "logger": "oblako.request",
        "msg": "request",
        "request_id": "req-test-0001",
        "method": "POST",
        "endpoint": "RegistrationView.register",
        "path": "/register/",
        "status": 303,
        "duration_ms": None,
        "user_id": None,
    }
    # The SMS with the code went out through the queue: its job carries the request's id.
    jobs = [p for p in parsed if p["logger"] == "oblako.job"]
    assert jobs and all(p["request_id"] == "req-test-0001" for p in jobs)
    assert {p["event"] for p in jobs} >= {"start", "done"}


def test_the_request_id_is_made_when_missing_or_unfit_and_names_the_user(
    client, app, make_staff, log_lines
):
    from tests.conftest import login

    username = make_staff("Manager")
    login(client, username)
    made = client.get("/healthz").headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", made)
    unfit = client.get("/healthz", headers={"X-Request-ID": "bad id <script>" + "x" * 80})
    assert re.fullmatch(r"[0-9a-f]{32}", unfit.headers["X-Request-ID"])
    client.get("/notifications/", headers={"X-Request-ID": "abc-42"})
    line = next(
        json.loads(x)
        for x in log_lines()
        if '"request_id": "abc-42"' in x and "oblako.request" in x
    )
    from app.extensions import db
    from models import User

    with app.app_context():
        uid = db.session.query(User.id).filter_by(username=username).scalar()
    assert line["user_id"] == uid
    assert line["path"] == "/notifications/"


def test_the_join_token_carries_the_request_id_to_the_media_server(app):
    from app.media_tokens import JoinGrant, mint_join_token
    from logs import request_id_var
    from media_server.auth import verify_join_token

    grant = JoinGrant(
        user_id=7,
        consultation_id=3,
        consultation_public_id=uuid.uuid4(),
        role="patient",
        name="x",
        media=True,
        chat=True,
        session_generation=1,
    )
    with app.test_request_context("/"):
        token = request_id_var.set("rid-for-media")
        try:
            claims = verify_join_token(mint_join_token(grant), app.config)
        finally:
            request_id_var.reset(token)
    assert claims.request_id == "rid-for-media"


# --- the client's address behind nginx ----------------------------------------------------


def _fail_sign_in(client, n: int, forwarded_for: str):
    return client.post(
        "/login/",
        data={
            "username": f"nobody{n}",
            "password": "Wrong-password-1",
            "csrf_token": csrf_token(client),
        },
        headers={"X-Forwarded-For": forwarded_for},
    )


def test_without_trusted_proxies_a_forwarded_address_is_ignored(app, client):
    limit = int(app.config["LOGIN_FAILURES_PER_IP"].split("/")[0])
    for n in range(limit):
        assert _fail_sign_in(client, n, "203.0.113.7").status_code == 302
    # Another claimed address changes nothing: the client cannot pick its own counter.
    assert _fail_sign_in(client, limit, "203.0.113.8").status_code == 303


@pytest.mark.once
def test_behind_one_trusted_proxy_the_clients_address_is_throttled(
    app, monkeypatch, web_process_factory
):
    monkeypatch.setenv("TRUSTED_PROXIES", "1")
    web = HttpClient(web_process_factory().url)
    limit = int(app.config["LOGIN_FAILURES_PER_IP"].split("/")[0])

    def fail(n: int, address: str):
        token = web.csrf_token("/login/")
        return web.request(
            "/login/",
            {"username": f"nobody{n}", "password": "Wrong-password-1", "csrf_token": token},
            headers={"X-Forwarded-For": f"198.51.100.1, {address}"},
        )

    for n in range(limit):
        assert fail(n, "203.0.113.7").status == 302
    assert fail(limit, "203.0.113.7").status == 303  # this client is throttled
    assert fail(limit + 1, "203.0.113.8").status == 302  # another client is not
    answer = web.request(
        "/login/",
        {"username": "someone", "password": TEST_PASSWORD, "csrf_token": web.csrf_token()},
        headers={"X-Forwarded-For": "203.0.113.7"},
    )
    assert answer.status == 303


def test_a_patient_signing_in_leaves_no_name_or_phone_in_the_log(
    app, client, make_patient, log_lines
):
    from tests.conftest import login, patient_username

    patient_id = make_patient(surname="Входова", name="Серафима", phone="+79127770022")
    username = patient_username(app, patient_id)
    assert login(client, username).status_code == 302
    client.get("/cabinet/")
    assert login(app.test_client(), username, "Wrong-password-9").status_code == 302  # failed
    text_of_all = "\n".join(log_lines())
    assert "oblako.request" in text_of_all
    for secret in ("Входова", "Серафима", "+79127770022", "9127770022", username):
        assert secret not in text_of_all, secret


def test_a_request_refused_by_csrf_is_logged_with_its_id(client, log_lines):
    answer = client.post(
        "/register/", data={"surname": "Безтокенова"}, headers={"X-Request-ID": "no-csrf-1"}
    )
    # Refused before the view (the app sends the visitor back to the form with a message).
    assert not answer.headers.get("Location", "").endswith("/register/code")
    assert answer.headers["X-Request-ID"] == "no-csrf-1"
    mine = [json.loads(x) for x in log_lines() if '"request_id": "no-csrf-1"' in x]
    assert [(m["logger"], m["status"]) for m in mine] == [("oblako.request", answer.status_code)]
    assert "Безтокенова" not in "\n".join(log_lines())
