"""Delivering the outbox: every SMS and e-mail is a row first (app/notifications.py), sent here.

The adapter for each channel comes from configuration:

  SMS_BACKEND    "outbox" (embedded default: nothing leaves the machine, the manager's Outbox
                 screen is the delivery) | "http" (an HTTP SMS provider, see HttpSmsAdapter)
  EMAIL_BACKEND  "outbox" | "smtp" (smtplib, see SmtpAdapter)

deliver_pending() claims one due message at a time, just before sending it, in a short
transaction (on PostgreSQL with `FOR UPDATE SKIP LOCKED`, so several workers never take the same
row), sends it outside any transaction, then records the outcome. A claim moves
`next_attempt_at` into the future (a lease) by the send timeout plus a margin: a worker that
dies mid-send leaves that one message to be retried soon after, and a long pass never sends a
message whose lease ran out while it waited its turn (nothing waits: the claim is the last
step before the send). After a crash a message reaches the provider at most twice (the dead
worker's attempt and the retry), both times with its stable public id. Temporary
failures (timeouts, 5xx) are retried with an exponential back-off; permanent ones (4xx, refused
recipient) and the last allowed attempt mark the message failed.

Message bodies may hold one-time passwords: they are never logged, nor are the recipients;
log lines carry the message's public id only.
"""

from __future__ import annotations

import json
import logging
import smtplib
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from http.client import HTTPException
from typing import Any, Protocol

from flask import current_app
from flask_babel import lazy_gettext as _l
from sqlalchemy import and_, or_, select, update

from app.extensions import db
from models import OutboundChannel, OutboundMessage, OutboundStatus, utcnow

log = logging.getLogger(__name__)

CLAIM_TRIES = 5  # SQLite: candidates another worker won first, look again this often
# Added to the send timeout for the lease: the time between the claim and the send, and
# between the provider's answer and the commit of the outcome.
DEFAULT_LEASE_MARGIN_SECONDS = 10
MAX_BACKOFF = timedelta(hours=6)
DEFAULT_SUBJECT = "Облако здоровья"

# The Outbox screen says where a "sent" message went: with the embedded default nothing leaves.
DELIVERED_VIA_LABELS = {
    "outbox": _l("Kept in the outbox (not sent out)"),
    "http": _l("SMS provider"),
    "smtp": _l("Mail server"),
}


class ConfigurationError(RuntimeError):
    """The configured backend cannot work (unknown name, missing URL)."""


class DeliveryFailure(Exception):
    """A send did not go through; `reason` is short, safe to store (never the message text)."""

    permanent = False

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason[:500]


class TemporaryFailure(DeliveryFailure):
    """Try again later: timeouts, connection errors, 5xx, 429."""


class PermanentFailure(DeliveryFailure):
    """Retrying cannot help: the provider refused this message (4xx, recipient refused)."""

    permanent = True


@dataclass
class DeliveryReport:
    sent: int = 0
    retried: int = 0
    failed: int = 0

    @property
    def processed(self) -> int:
        return self.sent + self.retried + self.failed

    def __str__(self) -> str:
        return f"sent {self.sent}, retry later {self.retried}, failed {self.failed}"


class Adapter(Protocol):
    name: str

    def send(self, message: OutboundMessage) -> None:
        """Deliver or raise a DeliveryFailure."""

    def close(self) -> None: ...


# ---------------------------------------------------------------------------------------------
# Adapters
# ---------------------------------------------------------------------------------------------


class OutboxAdapter:
    """Embedded default: the row in the outbox table is the delivery (staff read it there)."""

    name = "outbox"

    def send(self, message: OutboundMessage) -> None:
        return None

    def close(self) -> None:
        return None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # A redirected POST would be replayed as GET without the body: treat it as an error instead.
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


class HttpSmsAdapter:
    """POST {"to", "text", "id"} as JSON with `Authorization: Bearer <token>`.

    2xx: sent. Timeouts, connection errors, 3xx, 408, 429 and 5xx: retry later. Other 4xx:
    failed. `id` is the message's public id, stable across retries, so a provider that
    deduplicates by it never sends twice a message whose answer we lost.
    """

    name = "http"

    def __init__(self, url: str, token: str, timeout: float) -> None:
        if not url.startswith(("https://", "http://")):
            raise ConfigurationError("SMS_HTTP_URL must be an http(s) URL when SMS_BACKEND=http")
        self.url, self.token, self.timeout = url, token, timeout
        self._opener = urllib.request.build_opener(_NoRedirect)

    def send(self, message: OutboundMessage) -> None:
        payload = {"to": message.recipient, "text": message.body, "id": str(message.public_id)}
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "Accept": "application/json",
            "User-Agent": "Oblako-outbox",
        }
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(  # noqa: S310 — the scheme is checked in __init__
            self.url,
            data=json.dumps(payload, ensure_ascii=False).encode("utf-8"),
            headers=headers,
            method="POST",
        )
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                response.read(4096)  # drain; the answer's content is not needed
                status = response.status
        except urllib.error.HTTPError as exc:
            exc.close()
            status = exc.code
        except TimeoutError:
            raise TemporaryFailure("timeout") from None
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, TimeoutError):
                raise TemporaryFailure("timeout") from None
            raise TemporaryFailure(f"connection error: {type(reason).__name__}") from None
        except (OSError, HTTPException) as exc:
            raise TemporaryFailure(f"connection error: {type(exc).__name__}") from None
        if 200 <= status < 300:
            return
        if status in (408, 429) or status >= 500 or status < 400:
            raise TemporaryFailure(f"HTTP {status}")
        raise PermanentFailure(f"HTTP {status}")

    def close(self) -> None:
        return None


class SmtpAdapter:
    """smtplib with STARTTLS (or implicit TLS) and login; one connection per delivery pass.

    Connection, TLS and login problems are retried (they are configuration or network, not the
    message); a 5xx answer to this message's sender, recipient or data fails it.
    """

    name = "smtp"

    def __init__(self, config: dict[str, Any]) -> None:
        self.host = config["SMTP_HOST"]
        self.port = int(config["SMTP_PORT"])
        self.user = config["SMTP_USER"]
        self.password = config["SMTP_PASSWORD"]
        self.starttls = bool(config["SMTP_STARTTLS"])
        self.implicit_tls = bool(config["SMTP_SSL"])
        self.timeout = float(config["SMTP_TIMEOUT"])
        self.sender = config["SMTP_FROM"]
        self._conn: smtplib.SMTP | None = None

    def _connect(self) -> smtplib.SMTP:
        context = ssl.create_default_context()
        try:
            if self.implicit_tls:
                conn: smtplib.SMTP = smtplib.SMTP_SSL(
                    self.host, self.port, timeout=self.timeout, context=context
                )
            else:
                conn = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
            conn.ehlo()
            if self.starttls and not self.implicit_tls:
                conn.starttls(context=context)
                conn.ehlo()
            if self.user:
                conn.login(self.user, self.password)
        except (smtplib.SMTPException, OSError) as exc:
            raise TemporaryFailure(f"SMTP connection: {_smtp_reason(exc)}") from None
        return conn

    def _email(self, message: OutboundMessage) -> EmailMessage:
        email = EmailMessage()
        email["From"] = self.sender
        email["To"] = message.recipient
        email["Subject"] = message.subject or DEFAULT_SUBJECT
        email["Date"] = format_datetime(utcnow())
        domain = parseaddr(self.sender)[1].rpartition("@")[2] or "localhost"
        email["Message-ID"] = f"<{message.public_id}@{domain}>"  # the same on every retry
        email.set_content(message.body)  # UTF-8 with a safe transfer encoding
        return email

    def send(self, message: OutboundMessage) -> None:
        email = self._email(message)
        if self._conn is None:
            self._conn = self._connect()
        try:
            self._conn.send_message(email)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            self._reset_after_error()
            failure = PermanentFailure if all(c >= 500 for c in codes) else TemporaryFailure
            raise failure(f"SMTP recipient refused: {codes}") from None
        except smtplib.SMTPResponseException as exc:
            self._drop()
            failure = PermanentFailure if exc.smtp_code >= 500 else TemporaryFailure
            raise failure(f"SMTP {exc.smtp_code}") from None
        except (smtplib.SMTPException, OSError) as exc:
            self._drop()
            raise TemporaryFailure(f"SMTP: {_smtp_reason(exc)}") from None

    def _reset_after_error(self) -> None:
        try:
            self._conn.rset()  # type: ignore[union-attr]
        except (smtplib.SMTPException, OSError):
            self._drop()

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except OSError:
                pass

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.quit()
            except (smtplib.SMTPException, OSError):
                conn.close()


def _smtp_reason(exc: BaseException) -> str:
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"{type(exc).__name__} {exc.smtp_code}"
    return type(exc).__name__


def make_adapter(channel: str, config: dict[str, Any]) -> Adapter:
    """The adapter configured for a channel (SMS_BACKEND / EMAIL_BACKEND)."""
    if channel == OutboundChannel.SMS:
        backend = config.get("SMS_BACKEND", "outbox")
        if backend == "outbox":
            return OutboxAdapter()
        if backend == "http":
            return HttpSmsAdapter(
                config.get("SMS_HTTP_URL", ""),
                config.get("SMS_HTTP_TOKEN", ""),
                float(config.get("SMS_HTTP_TIMEOUT", 10)),
            )
        raise ConfigurationError(f"unknown SMS_BACKEND {backend!r} (outbox, http)")
    if channel == OutboundChannel.EMAIL:
        backend = config.get("EMAIL_BACKEND", "outbox")
        if backend == "outbox":
            return OutboxAdapter()
        if backend == "smtp":
            return SmtpAdapter(config)
        raise ConfigurationError(f"unknown EMAIL_BACKEND {backend!r} (outbox, smtp)")
    raise ConfigurationError(f"unknown channel {channel!r}")


# ---------------------------------------------------------------------------------------------
# The delivery pass
# ---------------------------------------------------------------------------------------------


def backoff(attempts: int, base_seconds: int) -> timedelta:
    """Wait before attempt `attempts + 1`: base, 2×base, 4×base, … capped at MAX_BACKOFF."""
    return min(timedelta(seconds=base_seconds * 2 ** max(attempts - 1, 0)), MAX_BACKOFF)


def _due(now: datetime):
    return and_(
        OutboundMessage.status == OutboundStatus.QUEUED,
        or_(OutboundMessage.next_attempt_at.is_(None), OutboundMessage.next_attempt_at <= now),
    )


def lease(config: dict[str, Any]) -> timedelta:
    """How long a claim holds: the longest send timeout plus OUTBOX_LEASE_MARGIN_SECONDS."""
    timeout = max(float(config.get("SMS_HTTP_TIMEOUT", 10)), float(config.get("SMTP_TIMEOUT", 10)))
    margin = float(config.get("OUTBOX_LEASE_MARGIN_SECONDS", DEFAULT_LEASE_MARGIN_SECONDS))
    return timedelta(seconds=timeout + margin)


def _claim(size: int, now: datetime, until: datetime) -> list[int]:
    """Take up to `size` due messages for this worker, in one short committed transaction.

    PostgreSQL: SELECT … FOR UPDATE SKIP LOCKED LIMIT n skips the rows another worker is
    claiming. The UPDATE re-checks that each row is still due and says (RETURNING) which rows
    this worker won: on SQLite, which has no row locks but one writer at a time, that re-check
    under the write lock is what keeps two workers apart. (The SELECT is a separate statement
    on purpose: as a sub-select of the UPDATE, PostgreSQL may re-run it and ignore the LIMIT.)
    Candidates all taken by another worker meanwhile: look again, the next rows may be free.
    """
    for _ in range(CLAIM_TRIES):
        try:
            candidates = list(
                db.session.execute(
                    select(OutboundMessage.id)
                    .where(_due(now))
                    .order_by(OutboundMessage.created_at, OutboundMessage.id)
                    .limit(size)
                    .with_for_update(skip_locked=True)
                ).scalars()
            )
            if not candidates:
                db.session.rollback()
                return []
            ids = list(
                db.session.execute(
                    update(OutboundMessage)
                    .where(OutboundMessage.id.in_(candidates), _due(now))
                    .values(attempts=OutboundMessage.attempts + 1, next_attempt_at=until)
                    .returning(OutboundMessage.id)
                    .execution_options(synchronize_session=False)
                ).scalars()
            )
            db.session.commit()
        except BaseException:
            db.session.rollback()
            raise
        if ids:
            return sorted(ids)
    return []


def _give_up_abandoned(now: datetime, max_attempts: int) -> int:
    """Messages whose last allowed attempt was claimed by a worker that died: failed."""
    stmt = (
        update(OutboundMessage)
        .where(_due(now), OutboundMessage.attempts >= max_attempts)
        .values(
            status=OutboundStatus.FAILED,
            next_attempt_at=None,
            last_error="worker stopped during the last attempt",
        )
        .execution_options(synchronize_session=False)
    )
    count = db.session.execute(stmt).rowcount or 0
    db.session.commit()
    return count


def deliver_pending(limit: int = 100, now: datetime | None = None) -> DeliveryReport:
    """Send up to `limit` due messages; safe to run in several workers at once.

    `now` is for tests (back-off windows); workers pass nothing. Needs an app context.
    """
    config = current_app.config
    now = now or utcnow()
    max_attempts = int(config.get("OUTBOX_MAX_ATTEMPTS", 5))
    base_seconds = int(config.get("OUTBOX_RETRY_SECONDS", 60))
    report = DeliveryReport()
    report.failed += _give_up_abandoned(now, max_attempts)
    adapters: dict[str, Adapter] = {}
    held = lease(config)
    try:
        for _ in range(limit):
            # One message per claim, claimed right before its send: its lease starts now (the
            # real clock, however long this pass has run), never while it waits its turn.
            ids = _claim(1, now, max(now, utcnow()) + held)
            if not ids:
                break
            message = db.session.get(OutboundMessage, ids[0])
            if message is None:  # deleted meanwhile
                continue
            outcome = _send(message, adapters, config)
            _record(message, outcome, now, max_attempts, base_seconds, report)
            db.session.commit()
    finally:
        for adapter in adapters.values():
            adapter.close()
    if report.processed:
        log.info("outbox delivery: %s", report)
    return report


def _send(
    message: OutboundMessage, adapters: dict[str, Adapter], config: dict[str, Any]
) -> tuple[str, DeliveryFailure | None]:
    try:
        adapter = adapters.get(message.channel)
        if adapter is None:
            adapter = adapters[message.channel] = make_adapter(message.channel, config)
        adapter.send(message)
    except DeliveryFailure as failure:
        return getattr(adapter, "name", ""), failure
    except ConfigurationError as exc:
        # Misconfiguration: keep the message queued (retry) so fixing the settings delivers it.
        log.error("outbox: %s", exc)
        return "", TemporaryFailure(f"configuration: {exc}")
    return adapter.name, None


def _record(
    message: OutboundMessage,
    outcome: tuple[str, DeliveryFailure | None],
    now: datetime,
    max_attempts: int,
    base_seconds: int,
    report: DeliveryReport,
) -> None:
    via, failure = outcome
    if failure is None:
        message.status = OutboundStatus.SENT
        message.sent_at = now
        message.last_error = ""
        message.delivered_via = via
        message.next_attempt_at = None
        report.sent += 1
        log.info("outbox message %s sent via %s", message.public_id, via)
        return
    message.last_error = failure.reason
    if failure.permanent or message.attempts >= max_attempts:
        message.status = OutboundStatus.FAILED
        message.next_attempt_at = None
        report.failed += 1
        log.warning(
            "outbox message %s failed after %d attempt(s): %s",
            message.public_id,
            message.attempts,
            failure.reason,
        )
    else:
        message.next_attempt_at = now + backoff(message.attempts, base_seconds)
        report.retried += 1
        log.info(
            "outbox message %s: %s, retry at %s",
            message.public_id,
            failure.reason,
            message.next_attempt_at.isoformat(),
        )
