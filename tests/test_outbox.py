"""Outbox delivery against real local servers: an HTTP SMS provider and an SMTP server."""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

import pytest
from sqlalchemy import select

from app.extensions import db
from app.notifications import queue_message
from app.outbox import deliver_pending
from models import OutboundChannel, OutboundMessage, OutboundStatus, utcnow
from tests.conftest import login
from tests.fakes import FakeSmsProvider, FakeSmtpServer

SECRET_BODY = "Облако здоровья: ваш временный пароль Zx9-secret-77"


@pytest.fixture
def sms_provider():
    provider = FakeSmsProvider().start()
    yield provider
    provider.stop()


@pytest.fixture
def http_sms(app, sms_provider, monkeypatch):
    monkeypatch.setitem(app.config, "SMS_BACKEND", "http")
    monkeypatch.setitem(app.config, "SMS_HTTP_URL", sms_provider.url)
    monkeypatch.setitem(app.config, "SMS_HTTP_TOKEN", "provider-token")
    monkeypatch.setitem(app.config, "SMS_HTTP_TIMEOUT", 0.5)
    monkeypatch.setitem(app.config, "OUTBOX_RETRY_SECONDS", 60)
    monkeypatch.setitem(app.config, "OUTBOX_MAX_ATTEMPTS", 5)
    return sms_provider


@pytest.fixture
def smtp_server(app, monkeypatch):
    server = FakeSmtpServer().start()
    monkeypatch.setitem(app.config, "EMAIL_BACKEND", "smtp")
    monkeypatch.setitem(app.config, "SMTP_HOST", "127.0.0.1")
    monkeypatch.setitem(app.config, "SMTP_PORT", server.port)
    monkeypatch.setitem(app.config, "SMTP_STARTTLS", False)
    monkeypatch.setitem(app.config, "SMTP_FROM", "Облако здоровья <noreply@oblako.example>")
    yield server
    server.stop()


def _queue(app, channel=OutboundChannel.SMS, recipient="+79120001122", body=SECRET_BODY, **kw):
    with app.app_context():
        message = queue_message(channel, recipient, body, **kw)
        db.session.commit()
        return message.id


def _message(app, message_id: int) -> OutboundMessage:
    with app.app_context():
        message = db.session.get(OutboundMessage, message_id)
        db.session.expunge(message)
        return message


def _deliver(app, **kw):
    with app.app_context():
        return deliver_pending(**kw)


def test_outbox_backend_keeps_messages_for_staff(app, client, make_staff):
    sms_id = _queue(app, body="Консультация назначена")
    email_id = _queue(app, OutboundChannel.EMAIL, "anna@example.org", "Письмо", subject="Тема")

    report = _deliver(app)

    assert (report.sent, report.retried, report.failed) == (2, 0, 0)
    for message_id in (sms_id, email_id):
        message = _message(app, message_id)
        assert message.status == OutboundStatus.SENT
        assert message.delivered_via == "outbox"
        assert message.sent_at is not None and message.last_error == ""
    assert _deliver(app).processed == 0  # nothing is delivered twice
    # The manager reads them on the Outbox screen: that is the delivery on the embedded default.
    login(client, make_staff("Manager"))
    html = client.get("/outbox/list/").get_data(as_text=True)
    assert "+79120001122" in html and "anna@example.org" in html
    show = client.get(f"/outbox/show/{sms_id}").get_data(as_text=True)
    assert "Оставлено в исходящих (наружу не отправлялось)" in show


def test_http_sms_posts_json_with_bearer_token(app, http_sms):
    message_id = _queue(app)

    report = _deliver(app)

    assert report.sent == 1
    [request] = http_sms.requests
    assert request.headers["Authorization"] == "Bearer provider-token"
    assert request.headers["Content-Type"].startswith("application/json")
    message = _message(app, message_id)
    assert request.body == {"to": "+79120001122", "text": SECRET_BODY, "id": str(message.public_id)}
    assert message.status == OutboundStatus.SENT
    assert message.delivered_via == "http"
    assert message.attempts == 1
    _deliver(app)
    assert len(http_sms.requests) == 1


def test_http_500_is_retried_after_backoff_then_sent(app, http_sms):
    message_id = _queue(app)
    t0 = utcnow()
    http_sms.mode = "error"

    report = _deliver(app, now=t0)

    assert (report.sent, report.retried) == (0, 1)
    message = _message(app, message_id)
    assert message.status == OutboundStatus.QUEUED
    assert message.last_error == "HTTP 500"
    assert message.next_attempt_at == t0 + timedelta(seconds=60)

    http_sms.mode = "ok"
    assert _deliver(app, now=t0 + timedelta(seconds=30)).processed == 0  # still backing off
    assert len(http_sms.requests) == 1

    report = _deliver(app, now=t0 + timedelta(seconds=61))

    assert report.sent == 1
    message = _message(app, message_id)
    assert message.status == OutboundStatus.SENT
    assert message.attempts == 2 and message.last_error == ""
    assert [r.body["id"] for r in http_sms.requests] == [str(message.public_id)] * 2


def test_http_400_fails_without_retry(app, http_sms):
    message_id = _queue(app)
    http_sms.mode = "reject"

    report = _deliver(app)

    assert report.failed == 1
    message = _message(app, message_id)
    assert message.status == OutboundStatus.FAILED
    assert message.last_error == "HTTP 400"
    _deliver(app, now=utcnow() + timedelta(days=1))
    assert len(http_sms.requests) == 1


def test_http_timeout_is_retried(app, http_sms):
    message_id = _queue(app)
    http_sms.mode = "hang"
    t0 = utcnow()

    report = _deliver(app, now=t0)

    assert report.retried == 1
    message = _message(app, message_id)
    assert message.status == OutboundStatus.QUEUED
    assert message.last_error == "timeout"
    http_sms.mode = "ok"
    assert _deliver(app, now=t0 + timedelta(minutes=2)).sent == 1


def test_backoff_doubles_and_gives_up_after_max_attempts(app, http_sms, monkeypatch):
    monkeypatch.setitem(app.config, "OUTBOX_MAX_ATTEMPTS", 3)
    message_id = _queue(app)
    http_sms.mode = "error"
    now = utcnow()
    waits = []
    for _ in range(3):
        _deliver(app, now=now)
        message = _message(app, message_id)
        if message.next_attempt_at:
            waits.append(message.next_attempt_at - now)
            now = message.next_attempt_at
    assert waits == [timedelta(seconds=60), timedelta(seconds=120)]
    assert message.status == OutboundStatus.FAILED and message.attempts == 3
    assert message.last_error == "HTTP 500"
    _deliver(app, now=now + timedelta(days=1))
    assert len(http_sms.requests) == 3


def test_unreachable_provider_is_retried(app, http_sms, monkeypatch):
    monkeypatch.setitem(app.config, "SMS_HTTP_URL", "http://127.0.0.1:9/api/sms")  # discard port
    message_id = _queue(app)

    assert _deliver(app).retried == 1
    message = _message(app, message_id)
    assert message.status == OutboundStatus.QUEUED
    assert message.last_error.startswith("connection error")


def test_message_text_never_logged(app, http_sms, caplog):
    _queue(app)
    _queue(app, recipient="+79120003344")
    http_sms.mode = "reject"
    with caplog.at_level(logging.DEBUG):
        _deliver(app)
    assert caplog.records, "delivery logs its outcome"
    assert "Zx9-secret-77" not in caplog.text
    assert "+7912000" not in caplog.text


def test_smtp_email_with_cyrillic_subject_and_body(app, smtp_server):
    body = "Здравствуйте! Консультация назначена на 3 декабря, 14:00."
    message_id = _queue(
        app, OutboundChannel.EMAIL, "anna@example.org", body, subject="Облако здоровья: уведомление"
    )

    report = _deliver(app)

    assert report.sent == 1
    [mail] = smtp_server.received
    assert mail.rcpt_tos == ["anna@example.org"]
    assert mail.mail_from == "noreply@oblako.example"
    assert mail.message["Subject"] == "Облако здоровья: уведомление"
    assert str(mail.message["From"]) == "Облако здоровья <noreply@oblako.example>"
    assert mail.message.get_content().strip() == body
    assert mail.message.get_content_charset() == "utf-8"
    message = _message(app, message_id)
    assert str(message.public_id) in mail.message["Message-ID"]
    assert message.status == OutboundStatus.SENT and message.delivered_via == "smtp"


def test_smtp_one_connection_for_many_messages(app, smtp_server):
    for n in range(3):
        _queue(app, OutboundChannel.EMAIL, f"p{n}@example.org", f"Текст {n}", subject="Тема")

    assert _deliver(app).sent == 3
    assert sorted(m.rcpt_tos[0] for m in smtp_server.received) == [
        "p0@example.org",
        "p1@example.org",
        "p2@example.org",
    ]


def test_smtp_server_down_is_retried(app, smtp_server):
    smtp_server.stop()
    message_id = _queue(app, OutboundChannel.EMAIL, "anna@example.org", "Текст")

    assert _deliver(app).retried == 1
    message = _message(app, message_id)
    assert message.status == OutboundStatus.QUEUED
    assert message.last_error.startswith("SMTP connection")


def test_unknown_backend_keeps_messages_queued(app, monkeypatch):
    monkeypatch.setitem(app.config, "SMS_BACKEND", "pigeon")
    message_id = _queue(app)

    assert _deliver(app).retried == 1
    message = _message(app, message_id)
    assert message.status == OutboundStatus.QUEUED
    assert "SMS_BACKEND" in message.last_error


def test_two_concurrent_workers_send_each_message_once(app, http_sms, monkeypatch):
    http_sms.delay = 0.02  # a little latency so that the two workers overlap
    # Not a timeout test: on a loaded machine a 0.5 s timeout would turn a slow answer into a
    # retry, which is correct behaviour but not what this test counts.
    monkeypatch.setitem(app.config, "SMS_HTTP_TIMEOUT", 10)
    ids = [_queue(app, recipient=f"+7912555{n:04d}", body=f"Сообщение {n}") for n in range(40)]
    barrier = threading.Barrier(2)
    reports, errors = [], []

    def worker():
        try:
            with app.app_context():  # its own session and connection
                barrier.wait()
                reports.append(deliver_pending(limit=100))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)

    assert errors == []
    sent_ids = [r.body["id"] for r in http_sms.requests]
    assert len(sent_ids) == 40 == len(set(sent_ids))
    assert sum(r.sent for r in reports) == 40
    assert all(r.sent > 0 for r in reports), f"both workers took part: {reports}"
    with app.app_context():
        rows = db.session.execute(
            select(OutboundMessage.status, OutboundMessage.attempts).where(
                OutboundMessage.id.in_(ids)
            )
        ).all()
    assert set(rows) == {(OutboundStatus.SENT, 1)}


def test_cli_outbox_deliver_prints_counts(app):
    _queue(app)
    result = app.test_cli_runner().invoke(args=["oblako", "outbox-deliver"])
    assert result.exit_code == 0, result.output
    assert "sent 1" in result.output


def test_huey_immediate_mode_runs_delivery_task(app, http_sms):
    from app.tasks import bind_app, deliver_outbox, deliver_outbox_periodically, huey

    assert huey.immediate
    bind_app(app)  # what `flask oblako worker` does; otherwise the worker creates its own app
    _queue(app)
    with app.app_context():
        assert deliver_outbox().get() == {"sent": 1, "retried": 0, "failed": 0}
    _queue(app, recipient="+79120009988")
    deliver_outbox_periodically()  # outside any app context: the task brings its own
    assert [r.body["to"] for r in http_sms.requests] == ["+79120001122", "+79120009988"]
