"""Background work survives a crash (issue 15, item 12).

A real worker (`flask oblako worker`, the Huey consumer) runs as a child process on the test
database with its own queue file, and is killed with SIGKILL in the middle of its job; then a
new worker is started and nobody presses anything:

- a referral import resumes by itself and completes, without duplicates, and while it is
  stalled the manager's page says so;
- an SMS claimed by the dead worker is retried once its short lease ends, the other queued
  messages were never held by the dead worker, and each message reaches the (fake, loopback)
  provider at most twice, always with the same id.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from tests.conftest import REFERRAL_CENTRE, TEST_PASSWORD, login
from tests.fakes import FakeSmsProvider
from tests.processes import service_env, wait_for

ROOT = Path(__file__).resolve().parent.parent
IMPORT_ROWS = 300
CHUNK_ROWS = 5
CENTRE = REFERRAL_CENTRE


class Workers:
    """Starts `flask oblako worker` children on the test database; kills them at the end."""

    def __init__(self, app, database_url: str, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.children: list[subprocess.Popen] = []
        # A real queue, not the tests' immediate mode (service_env).
        self.env = service_env(
            app, database_url, tmp_path, PUBLIC_SIGN_IN_URL="https://oblako.test/login/"
        )

    def start(self, **env: str) -> subprocess.Popen:
        log = open(self.tmp_path / f"worker{len(self.children)}.log", "wb")
        child = subprocess.Popen(
            [sys.executable, "-m", "flask", "--app", "app:create_app", "oblako", "worker"],
            cwd=ROOT,
            env={**self.env, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.children.append(child)
        return child

    def kill(self, child: subprocess.Popen) -> None:
        child.send_signal(signal.SIGKILL)  # no clean-up of any kind: a crash
        child.wait(timeout=30)

    def stop_all(self) -> None:
        for child in self.children:
            if child.poll() is None:
                child.send_signal(signal.SIGKILL)
                child.wait(timeout=30)

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.tmp_path.glob("worker*.log"))


@pytest.fixture
def workers(app, database_url, tmp_path) -> Iterator[Workers]:
    w = Workers(app, database_url, tmp_path)
    yield w
    w.stop_all()


# ---------------------------------------------------------------------------------------------
# The referral import
# ---------------------------------------------------------------------------------------------


def referral_csv(n: int) -> bytes:
    from app.referrals.common import TEMPLATE_COLUMNS

    header = ";".join(h for _k, h, _r in TEMPLATE_COLUMNS)
    rows = [
        ";".join(
            [
                f"Пациентова{i} Анна Ивановна",
                "15.03.1975",
                "ж",
                f"+7912777{i:04d}",
                "",
                "",
                "I10",
                "",
                CENTRE,
                "ЦРБ",
                "Петров П. П.",
                "",
            ]
        )
        for i in range(n)
    ]
    return "\r\n".join([header, *rows]).encode("utf-8-sig")


@pytest.fixture
def confirmed_import(app, make_staff, catalogue) -> tuple[int, str]:
    """A validated table of IMPORT_ROWS rows, confirmed by the manager: `importing`, queued."""
    from app.extensions import db
    from app.referrals.importer import start_import
    from app.referrals.validation import validate_upload
    from models import OblakoUser

    manager = make_staff("Manager")
    with app.app_context():
        user = db.session.execute(
            select(OblakoUser).where(OblakoUser.username == manager)
        ).scalar_one()
        imp = validate_upload(user, "направления.csv", referral_csv(IMPORT_ROWS))
        assert imp.valid_rows == IMPORT_ROWS
        start_import(imp, by=user)
        db.session.commit()
        return imp.id, manager


def import_state(app, import_id: int):
    from app.extensions import db
    from models import ReferralImport

    with app.app_context():
        imp = db.session.get(ReferralImport, import_id)
        return imp.status, imp.imported_rows, imp.valid_rows


def count(app, model) -> int:
    from app.extensions import db

    with app.app_context():
        return db.session.execute(select(func.count()).select_from(model)).scalar_one()


def test_a_killed_import_resumes_by_itself_when_a_worker_runs_again(
    app, workers, confirmed_import, monkeypatch
):
    from app.extensions import db
    from app.referrals.recovery import stalled_since
    from models import Consultation, OutboundMessage, Patient, ReferralImport

    import_id, manager = confirmed_import
    # The confirmation's queued message is not in this worker's queue (as when the queue was
    # lost with a crash): the worker finds the import by its old heartbeat.
    env = {"IMPORT_STALL_SECONDS": "1", "REFERRAL_IMPORT_CHUNK_ROWS": str(CHUNK_ROWS)}
    first = workers.start(**env)
    wait_for(
        lambda: import_state(app, import_id)[1] >= CHUNK_ROWS,
        "the first worker to import a chunk\n" + workers.logs(),
    )
    workers.kill(first)
    status, imported, valid = import_state(app, import_id)
    assert status == "importing" and 0 < imported < valid, "killed mid-job"

    # The manager sees that it has stalled, and since when.
    monkeypatch.setitem(app.config, "IMPORT_STALL_SECONDS", 1)
    with app.app_context():

        def stalled():
            db.session.expire_all()
            return stalled_since(db.session.get(ReferralImport, import_id))

        since = wait_for(stalled, "the import to count as stalled")
        public_id = db.session.get(ReferralImport, import_id).public_id
    client = app.test_client()
    assert login(client, manager, TEST_PASSWORD).status_code == 302
    page = client.get(f"/referrals/{public_id}").get_data(as_text=True)
    assert "Импорт остановился: нет движения с" in page
    assert since is not None

    # A new worker, and no button: the import completes, once.
    workers.start(**env)
    wait_for(
        lambda: import_state(app, import_id)[0] == "done",
        "the import to complete\n" + workers.logs(),
        timeout=180,
    )
    assert import_state(app, import_id) == ("done", IMPORT_ROWS, IMPORT_ROWS)
    assert count(app, Patient) == IMPORT_ROWS
    assert count(app, Consultation) == IMPORT_ROWS
    assert count(app, OutboundMessage) == IMPORT_ROWS  # one invitation each, no second one
    page = client.get(f"/referrals/{public_id}").get_data(as_text=True)
    assert "Импорт остановился" not in page


# ---------------------------------------------------------------------------------------------
# The outbox
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def sms_provider() -> Iterator[FakeSmsProvider]:
    provider = FakeSmsProvider().start()
    yield provider
    provider.stop()


def queue_sms(app, n: int) -> list[str]:
    from app.extensions import db
    from app.notifications import queue_message
    from models import OutboundChannel

    with app.app_context():
        messages = [
            queue_message(OutboundChannel.SMS, f"+7912666{i:04d}", f"Сообщение {i}")
            for i in range(n)
        ]
        db.session.commit()
        return [str(m.public_id) for m in messages]


def outbox_rows(app) -> dict[str, tuple[str, int, object]]:
    from app.extensions import db
    from models import OutboundMessage

    with app.app_context():
        return {
            str(m.public_id): (m.status, m.attempts, m.next_attempt_at)
            for m in db.session.execute(select(OutboundMessage)).scalars()
        }


def test_sms_claimed_by_a_killed_worker_is_sent_again_at_most_twice(app, workers, sms_provider):
    from models import utcnow

    ids = queue_sms(app, 3)
    sms_provider.mode = "hang"  # the provider takes the first request and does not answer
    env = {
        "SMS_BACKEND": "http",
        "SMS_HTTP_URL": sms_provider.url,
        "SMS_HTTP_TIMEOUT": "5",
        "SMTP_TIMEOUT": "5",
        "OUTBOX_LEASE_MARGIN_SECONDS": "1",
    }
    first = workers.start(**env)
    wait_for(lambda: sms_provider.requests, "the first worker's send\n" + workers.logs())
    workers.kill(first)  # mid-send: the provider may or may not have acted on it

    [hung] = [r.body["id"] for r in sms_provider.requests]
    rows = outbox_rows(app)
    # Only the message being sent was held by the dead worker, and only for a short lease.
    assert {i: rows[i][1] for i in ids} == {i: 1 if i == hung else 0 for i in ids}
    assert rows[hung][2] <= utcnow() + timedelta(seconds=6)

    sms_provider.mode = "ok"
    sms_provider._release.set()  # the hung request ends (its client is gone anyway)
    wait_for(lambda: outbox_rows(app)[hung][2] <= utcnow(), "the dead worker's lease to end")
    workers.start(**env)
    wait_for(
        lambda: all(s == "sent" for s, _a, _n in outbox_rows(app).values()),
        "every message to be sent\n" + workers.logs(),
    )
    received = Counter(r.body["id"] for r in sms_provider.requests)
    assert received == {i: 2 if i == hung else 1 for i in ids}
    texts = {r.body["id"]: r.body["text"] for r in sms_provider.requests}
    assert len(texts) == 3  # the same id carries the same message every time


def test_a_pass_longer_than_the_lease_sends_each_message_once(app, sms_provider, monkeypatch):
    """Two workers, a slow provider: each pass lasts longer than one lease; nothing is sent
    twice, because each message is claimed (and its lease started) right before its send."""
    from app.extensions import db
    from app.outbox import deliver_pending, lease

    monkeypatch.setitem(app.config, "SMS_BACKEND", "http")
    monkeypatch.setitem(app.config, "SMS_HTTP_URL", sms_provider.url)
    monkeypatch.setitem(app.config, "SMS_HTTP_TIMEOUT", 0.5)
    monkeypatch.setitem(app.config, "SMTP_TIMEOUT", 0.5)
    monkeypatch.setitem(app.config, "OUTBOX_LEASE_MARGIN_SECONDS", 0.1)
    sms_provider.delay = 0.2
    ids = queue_sms(app, 12)
    assert lease(app.config).total_seconds() < 12 * 0.2 / 2  # a pass outlasts a lease
    barrier = threading.Barrier(2)
    errors: list[Exception] = []

    def worker() -> None:
        try:
            with app.app_context():
                barrier.wait()
                deliver_pending(limit=100)
                db.session.remove()
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert Counter(r.body["id"] for r in sms_provider.requests) == dict.fromkeys(ids, 1)
