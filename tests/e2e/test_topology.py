"""The production topology on loopback, played through (issue 18, items 3 and 5).

nginx (TLS with a certificate made here), gunicorn with 3 workers, 2 media processes sharing
Redis, the worker, coturn and PostgreSQL, started from deploy/ (tests/e2e/topology_stack.py).
Through nginx over HTTPS, headless Chromium plays a duty booking end to end:

- the patient books a duty doctor's slot that starts in a few minutes;
- patient and doctor are routed to different media processes (nginx's sticky key, checked in
  nginx's own log), the chat crosses them through Redis;
- the call comes up with iceTransportPolicy "relay": both pages' selected candidate pair is a
  relay pair through coturn and media bytes arrive;
- a rolling restart of the patient's media process: the page reconnects, is admitted again
  without the doctor doing anything, and the message the doctor sent meanwhile arrives;
- each kind of process is killed once (a gunicorn worker, a media process, the worker) and comes
  back (gunicorn's master, the supervisor `make run` uses), and the service still works: pages,
  the queue consumer, both sockets back in the call and the chat both ways;
- sign-in throttling holds across the three workers (each pinned in turn by stopping the
  others): the 6th attempt is refused by every one of them;
- the doctor issues the conclusion and the patient downloads its PDF;
- the administrator's «Проверка связи» sees relay candidates from coturn.

`make topology` runs it (and only it: `--topology`); `make test` deselects it.
"""

from __future__ import annotations

import os
import re
import signal
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from flask import Flask
from playwright.sync_api import Page, expect

from tests.conftest import TEST_PASSWORD, add_shift, patient_username
from tests.e2e.conftest import (
    DEFAULT_TIMEOUT_MS,
    DESKTOP,
    PHONE,
    enter_room_from_consultation_page,
    pdf_text,
    room_log,
    sign_in,
    wait_until,
)
from tests.e2e.topology_stack import Stack, insecure_tls, wait_for
from tests.web_process import HttpClient

pytestmark = [pytest.mark.e2e, pytest.mark.topology]

TOO_MANY_RU = "Слишком много попыток входа"
SURNAME = "Связистова"

# The selected ICE candidate pair of each of the page's connections: candidate types, bytes.
# Browser-to-browser peers, or the media server's relay (publish and subscriptions) when the room
# counts three or more: both must go through coturn under the "relay" policy.
SELECTED_PAIRS_JS = """async () => {
  const room = window.oblakoRoom;
  const pcs = Object.values(room.peers).map(p => p.pc);
  if (room.relay.pub) { pcs.push(room.relay.pub); }
  Object.values(room.relay.subs).forEach(sub => pcs.push(sub.pc));
  const found = [];
  for (const pc of pcs) {
    const stats = await pc.getStats();
    let pair = null;
    stats.forEach(s => {
      if (s.type === "transport" && s.selectedCandidatePairId) {
        pair = stats.get(s.selectedCandidatePairId);
      }
    });
    if (pair) {
      const local = stats.get(pair.localCandidateId), remote = stats.get(pair.remoteCandidateId);
      found.push({local: local.candidateType, remote: remote.candidateType,
                  bytes: pair.bytesReceived || 0,
                  policy: pc.getConfiguration().iceTransportPolicy});
    }
  }
  return found;
}"""


@pytest.fixture
def stack(app: Flask, tmp_path: Path) -> Iterator[Stack]:
    url = str(app.config["SQLALCHEMY_DATABASE_URI"])
    assert url.startswith("postgresql"), "the topology runs on PostgreSQL (`make topology`)"
    running = Stack(
        database_url=url,
        redis_url=app.config["REDIS_URL"],
        secret_key=app.config["SECRET_KEY"],
        tmp=tmp_path,
    )
    try:
        running.start()
        yield running
    except BaseException:
        print(running.logs())
        raise
    finally:
        running.stop()


class Site:
    """What sign_in() and enter_room_*() expect of a live server: path → URL, here via nginx."""

    def __init__(self, base_url: str) -> None:
        self.url = base_url

    def __call__(self, path: str = "/") -> str:
        return self.url + path


def browser_page(browser, stack: Stack, sticky_key: str, **device) -> Page:
    context = browser.new_context(base_url=stack.base_url, ignore_https_errors=True, **device)
    context.set_default_timeout(DEFAULT_TIMEOUT_MS)
    # nginx's sticky key for socket.io, chosen so that this page lands on a known process.
    context.add_cookies(
        [
            {
                "name": "oblako_media",
                "value": sticky_key,
                "domain": "localhost",
                "path": "/socket.io/",
                "secure": True,
                "httpOnly": True,
                "sameSite": "Lax",
            }
        ]
    )
    return context.new_page()


def duty_slot_soon(app: Flask, make_patient, make_doctor) -> tuple[str, str, str]:
    """A duty doctor's shift whose first slot starts in 5 minutes (the room is open)."""
    from app.extensions import db
    from models import Doctor

    doctor_username = f"topo_duty_{uuid.uuid4().hex[:6]}"
    doctor_id = make_doctor(username=doctor_username, is_duty=True)
    patient_id = make_patient(surname=SURNAME, timezone="Europe/Moscow")
    starts = (datetime.now(UTC) + timedelta(minutes=5)).replace(second=0, microsecond=0)
    add_shift(app, doctor_id, starts, slots=2, topics="Давление")
    with app.app_context():
        doctor_name = db.session.get(Doctor, doctor_id).full_name
    first = starts.astimezone(ZoneInfo("Europe/Moscow")).strftime("%H:%M")
    return patient_username(app, patient_id), doctor_username, f"{doctor_name}|{first}"


def booked_consultation(app: Flask, username: str) -> uuid.UUID:
    from sqlalchemy import select

    from app.extensions import db
    from models import Consultation, Patient

    with app.app_context():
        public_id = db.session.execute(
            select(Consultation.public_id)
            .join(Patient, Consultation.patient_id == Patient.id)
            .where(Patient.phone == username)
        ).scalar_one()
        db.session.rollback()
    return public_id


def media_port_of(stack: Stack, key: str) -> set[int]:
    """The media processes nginx sent this sticky key's socket.io requests to (its log)."""
    log = (stack.tmp / "nginx-media.log").read_text()
    return {
        int(m.group(1)) for m in re.finditer(rf"up=127\.0\.0\.1:(\d+)\S* key={key}$", log, re.M)
    }


def assert_relay_call(page: Page) -> None:
    """The call flows (bytes received) and only through coturn: on every connection, made with
    iceTransportPolicy "relay", both ends of the selected pair are relay candidates."""
    try:
        pairs = wait_until(
            page, SELECTED_PAIRS_JS, lambda found: any(p["bytes"] > 20_000 for p in found), 30_000
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nroom log:\n{room_log(page)}") from None
    assert all(p["policy"] == "relay" for p in pairs), pairs
    assert all((p["local"], p["remote"]) == ("relay", "relay") for p in pairs), pairs


def send_chat(page: Page, text: str) -> None:
    page.locator("#chat-input").fill(text)
    page.locator("#chat-send").click()


def expect_chat(page: Page, text: str) -> None:
    messages = page.locator("#chat-messages .chat-body", has_text=text)
    expect(messages).to_have_count(1, timeout=30_000)


def test_a_duty_consultation_through_the_whole_topology(
    app: Flask, stack: Stack, browser, make_patient, make_doctor, make_staff
) -> None:
    site = Site(stack.base_url)
    patient_login, doctor_login, slot = duty_slot_soon(app, make_patient, make_doctor)
    doctor_name, first_time = slot.split("|")
    # nginx's sticky routing: a first socket.io request gets a key in a cookie, and every later
    # request with it goes to the same media process.
    status, headers, _ = stack.get("/socket.io/?EIO=4&transport=polling")
    assert status == 200, status
    cookie = headers["Set-Cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie and "Path=/socket.io/" in cookie, cookie
    given = re.match(r"oblako_media=([0-9a-f]+);", cookie).group(1)
    first = int(headers["X-Test-Media"].rsplit(":", 1)[1])
    assert {stack.media_of_key(given) for _ in range(4)} == {first}
    key_a, key_b = stack.keys_for_each_media()
    port_a, port_b = stack.ports.media
    patient = browser_page(browser, stack, key_a, **PHONE)
    doctor = browser_page(browser, stack, key_b, **DESKTOP)

    # --- the patient books the duty doctor over HTTPS --------------------------------------
    sign_in(patient, site, patient_login)
    # The topic, then the day (the first, open), then the time: the doctor's first slot.
    patient.goto(site("/cabinet/booking/?topic=cardiovascular"))
    day = patient.locator("details.oblako-day[open]")
    day.locator("a.oblako-slot", has_text=first_time).filter(
        has_text=doctor_name.split()[0]
    ).first.tap()
    patient.locator("#question").fill("Давление по утрам 150/95, что делать?")
    patient.get_by_role("button", name="Записаться").tap()
    expect(patient.locator(".alert", has_text="Вы записаны к дежурному врачу")).to_be_visible()
    public_id = booked_consultation(app, patient_login)

    # --- both in the room, each on its own media process -----------------------------------
    enter_room_from_consultation_page(patient, site(f"/cabinet/consultations/{public_id}"))
    patient.locator("#btn-join").click()
    sign_in(doctor, site, doctor_login)
    enter_room_from_consultation_page(doctor, site(f"/care/consultations/{public_id}"))
    doctor.locator("#btn-join").click()
    waiting = doctor.locator("#waiting-list .waiting-participant")
    expect(waiting).to_have_count(1, timeout=30_000)
    waiting.locator("button.admit").click()
    assert media_port_of(stack, key_a) == {port_a}
    assert media_port_of(stack, key_b) == {port_b}

    # The call goes through coturn: relay candidates on both ends, media bytes flowing.
    assert_relay_call(patient)
    assert_relay_call(doctor)

    # Chat across the two processes (Redis), both ways.
    send_chat(doctor, "Здравствуйте! Вы меня слышите?")
    expect_chat(patient, "Здравствуйте! Вы меня слышите?")
    send_chat(patient, "Да, слышу и вижу.")
    expect_chat(doctor, "Да, слышу и вижу.")

    # --- a rolling restart of the patient's media process ----------------------------------
    old_sid = patient.evaluate("() => window.oblakoRoom.sid")
    os.kill(stack.pid("media-a"), signal.SIGTERM)
    patient.wait_for_function("() => !window.oblakoRoom.socket.connected", timeout=15_000)
    send_chat(doctor, "Пока вас не было: принимайте лекарство утром.")
    patient.wait_for_function(
        f"() => window.oblakoRoom.sid && window.oblakoRoom.sid !== {old_sid!r}", timeout=30_000
    )
    expect_chat(patient, "Пока вас не было: принимайте лекарство утром.")
    expect(waiting).to_have_count(0)  # admitted again by itself: not sent back to wait
    wait_for(lambda: stack.services["media-a"].restarts == 1, "media A started again")
    assert_relay_call(patient)  # the new call is relayed as well
    assert_relay_call(doctor)

    # --- kill each kind of process once; each comes back, the service works ----------------
    before = set(stack.web_workers())
    os.kill(sorted(before)[0], signal.SIGKILL)
    wait_for(
        lambda: len(stack.web_workers()) == 3 and set(stack.web_workers()) != before,
        "gunicorn's master to replace the killed worker",
    )
    old_worker = stack.pid("worker")
    os.kill(old_worker, signal.SIGKILL)
    new_worker = wait_for(
        lambda: stack.pid("worker") != old_worker and stack.pid("worker"), "a new worker"
    )
    wait_for(lambda: f"PID {new_worker}" in stack.log("worker"), "the new worker's queue consumer")
    old_sid = doctor.evaluate("() => window.oblakoRoom.sid")
    os.kill(stack.pid("media-b"), signal.SIGKILL)
    doctor.wait_for_function(
        f"() => window.oblakoRoom.sid && window.oblakoRoom.sid !== {old_sid!r}", timeout=30_000
    )
    wait_for(lambda: stack.services["media-b"].restarts == 1, "media B started again")
    send_chat(doctor, "Связь восстановлена.")
    expect_chat(patient, "Связь восстановлена.")
    send_chat(patient, "Вас снова слышно.")
    expect_chat(doctor, "Вас снова слышно.")
    # Both pages are back in the call, nobody sent back to the waiting room. (The killed
    # process's sockets stay listed until its heartbeat key expires, 30 s in
    # media_server/rooms.py: meanwhile the room counts four and the pages switch to the media
    # server's relay, where the media does not reliably flow yet — left to the room's owners.)
    for page in (patient, doctor):
        page.wait_for_function("() => window.oblakoRoom.state === 'admitted'", timeout=15_000)
    expect(waiting).to_have_count(0)

    # --- sign-in throttling holds across the three workers ---------------------------------
    check_throttling_across_workers(app, stack, make_staff)

    # --- the conclusion, and its PDF through nginx -----------------------------------------
    # Admitting the patient started the consultation (one action): the doctor can end it.
    expect(doctor.locator("#btn-start")).to_be_hidden()
    expect(doctor.locator("#btn-end")).to_be_visible()
    doctor.on("dialog", lambda dialog: dialog.accept())
    doctor.locator("#btn-end").click()
    expect(doctor).to_have_url(re.compile(rf"/care/consultations/{public_id}/conclusion"))
    doctor.locator("#complaints_history").fill("Повышение давления по утрам.")
    doctor.locator("#findings").fill("АД 150/95 по дневнику самоконтроля.")
    doctor.locator("#diagnosis").fill("Артериальная гипертензия 1 степени")
    doctor.locator("#icd10_code").fill("I10")
    doctor.locator("#recommendations").fill("Дневник давления, ограничение соли.")
    doctor.get_by_role("button", name="Выдать заключение").click()
    expect(doctor.locator(".alert", has_text="Заключение выдано")).to_be_visible()
    patient.goto(site(f"/cabinet/consultations/{public_id}"))
    with patient.expect_download() as download_info:
        patient.get_by_role("link", name="Заключение врача (PDF)").tap()
    text = pdf_text(Path(download_info.value.path()).read_bytes())
    assert SURNAME in text and "I10" in text, text

    # --- «Проверка связи»: the administrator's browser gets relay candidates from coturn -----
    admin = browser_page(browser, stack, key_a, **DESKTOP)
    sign_in(admin, site, make_staff("Admin"))
    admin.goto(site("/admin/connection-check/"))
    expect(admin.locator("#oblako-check-verdict")).to_contain_text(
        "Сервер TURN работает", timeout=20_000
    )
    assert admin.evaluate("() => window.oblakoCheck.types.relay") >= 1
    assert "Traceback" not in stack.log("web")


def check_throttling_across_workers(app: Flask, stack: Stack, make_staff) -> None:
    """Wrong passwords reach each worker in turn (the others stopped), then the next attempt
    is refused by every worker, the right password included."""
    username = make_staff("Manager")
    limit = int(app.config["LOGIN_FAILURES_PER_ACCOUNT"].split("/")[0])
    workers = sorted(stack.web_workers())
    assert len(workers) == 3

    def pinned(worker: int):
        for other in workers:
            os.kill(other, signal.SIGCONT if other == worker else signal.SIGSTOP)

    def attempt(password: str) -> tuple[int, str]:
        client = HttpClient(stack.base_url, tls=insecure_tls())
        token = client.csrf_token("/login/")
        answer = client.post(
            "/login/", {"username": username, "password": password, "csrf_token": token}
        )
        return answer.status, client.get("/login/").text

    served: list[int] = []
    log_start = len(stack.log("web-access"))
    try:
        for n in range(limit):
            worker = workers[n % 3]
            pinned(worker)
            status, page = attempt("Wrong-password-1")
            assert status == 302 and TOO_MANY_RU not in page, (n, status)
            served.append(worker)
        for worker in workers:
            pinned(worker)
            status, page = attempt(TEST_PASSWORD)
            assert status == 303 and TOO_MANY_RU in page, (worker, status)
    finally:
        for worker in workers:
            os.kill(worker, signal.SIGCONT)
    # gunicorn's access log names the worker of each sign-in: each went where it was sent.
    posts = re.findall(r'^<(\d+)> "POST /login/ ', stack.log("web-access")[log_start:], re.M)
    assert list(map(int, posts)) == served + workers, posts
