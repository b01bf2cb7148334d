"""Bench: 200 clients race over HTTP for 50 duty slots — no slot doubled, and at what speed.

Service: the app served by gunicorn (bench/served.py, GUNICORN_RACE: 2 workers × 16 threads).
Every client is a patient signed in through the real form, with its own session cookie and
CSRF token (CSRF on, as in production). Released together, each does what a browser does:
GET the booking page («Запись к дежурному врачу»), pick one of the free slots it lists at
random, POST the real booking form; refused (someone was faster) → read the page again; stop
with one booking or when nothing is free.

Baseline: a minimal Flask app served by the same gunicorn settings, with the same clients and
the same session cookies: a page listing the free slots (one plain SQL anti-join) and a route
doing the booking's writes in plain SQL in one transaction — the per-year number counter bump,
the slot read (FOR UPDATE on PostgreSQL), the consultation row (INSERT … ON CONFLICT on the
same partial unique index, the arbiter), the doctor's notification, the outbox e-mail and the
audit event.

bench/fair.py alternates the two (≥ 5 rounds; the figure is bookings per second from the
release to the last client done; the bookings are deleted between rounds). Target: service ≥
0.5 × baseline. Checked after every round, both sides (exit 1 otherwise): exactly one booking
per slot, no slot held twice, no client with two.

Run: `.venv/bin/python bench/bench_booking_race.py` (DATABASE_URL picks PostgreSQL: a fresh
database bench_<pid> is created and dropped; without it a SQLite file, where writers queue on
one lock). Options: --clients, --slots, --rounds, --strict (exit 1 when the ratio is missed);
`--clients 40 --slots 10` for a quick try.
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from common import BENCH_PASSWORD, create_bench_app, fresh_database_url, machine_load
from fair import MIN_ROUNDS, compare, print_summary
from flask import Flask, url_for
from served import GUNICORN_RACE, HttpClient, Served, csrf_token, served_env
from sqlalchemy import func, select, text

RATIO_TARGET = 0.5
DEFAULT_CLIENTS = 200
DEFAULT_SLOTS = 50
BOOKING_PAGE = "/cabinet/booking/"
TOPIC = "lifestyle"  # the patient picks a topic first; the bench shift takes every topic
LIST_PAGE = f"{BOOKING_PAGE}?topic={TOPIC}"
SERVICE_SLOT_RE = re.compile(r"/cabinet/booking/([0-9a-f-]{36})")
PLAIN_SLOT_RE = re.compile(r"/book/([0-9a-f-]{36})")


def seed(app: Flask, clients: int, slots: int) -> list[str]:
    """One duty doctor with `slots` slots tomorrow, `clients` patients; returns usernames."""
    from app.accounts import create_doctor, get_role, hash_password
    from app.demo import ensure_roles
    from app.extensions import db
    from app.permissions import PATIENT
    from app.scheduling import generate_slots
    from models import DutyShift, OblakoUser, Patient

    with app.app_context():
        ensure_roles()
        patient_role = get_role(PATIENT)
        doctor = create_doctor(
            username="duty-bench",
            password=BENCH_PASSWORD,
            surname="Дежурная",
            name="Ольга",
            patronymic="",
            specialty="Терапевт",
            email="duty-bench@example.org",
            center_id=None,
            is_duty=True,
        )
        start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        start += timedelta(days=1, hours=6)
        minutes = 15
        if slots * minutes > 24 * 60:
            raise SystemExit("too many slots for one shift")
        shift = DutyShift(
            doctor=doctor,
            doctor_id=doctor.id,
            starts_at=start,
            ends_at=start + timedelta(minutes=minutes * slots),
            slot_minutes=minutes,
            topics="Профилактика",
        )
        db.session.add(shift)
        db.session.add_all(generate_slots(shift))
        password = hash_password(BENCH_PASSWORD)
        usernames = []
        for n in range(clients):
            username = f"+7900{n:07d}"
            user = OblakoUser(
                first_name="Пациент",
                last_name=f"Гонкин{n}",
                username=username,
                email=f"race{n}@example.org",
                password=password,
                active=True,
                timezone="Asia/Yekaterinburg",
                roles=[patient_role],
            )
            patient = Patient(
                user=user,
                surname=f"Гонкин{n}",
                name="Пациент",
                birth_date=date(1970, 1, 1),
                sex="male",
                phone=username,
                region="Свердловская область",
                timezone="Asia/Yekaterinburg",
                notify_sms=True,
                notify_email=False,
            )
            db.session.add_all([user, patient])
            usernames.append(username)
        db.session.commit()
        return usernames


# ---------------------------------------------------------------------------------------------
# The baseline: a minimal Flask app, plain SQL in one transaction
# ---------------------------------------------------------------------------------------------


def _active_slot_predicate(dialect: str) -> str:
    """The partial unique index's own predicate (the arbiter of the ON CONFLICT)."""
    from app.booking.book import ACTIVE_SLOT_INDEX
    from models import Consultation

    index = next(i for i in Consultation.__table__.indexes if i.name == ACTIVE_SLOT_INDEX)
    return str(index.dialect_options[dialect]["where"])


def plain_booking_app() -> Any:
    """gunicorn's `bench_booking_race:plain_booking_app()`: GET /slots, POST /book/<slot>."""
    import os

    from flask import Flask, abort, redirect, session
    from served import ENV_URL, plain_engine
    from sqlalchemy import bindparam
    from sqlalchemy import text as sql

    from models import AuditEvent, Consultation, Notification, OutboundMessage, Slot

    engine = plain_engine(os.environ[ENV_URL])
    dialect = engine.dialect.name
    held = _active_slot_predicate(dialect)
    lock = " FOR UPDATE OF s" if dialect == "postgresql" else ""
    c, s = Consultation.__table__.c, Slot.__table__.c

    def typed(statement: str, **types: Any) -> Any:
        return sql(statement).bindparams(*(bindparam(k, type_=t) for k, t in types.items()))

    free = typed(
        "SELECT s.public_id FROM slot s JOIN doctor d ON d.id = s.doctor_id "
        "WHERE d.active AND d.is_duty AND NOT s.blocked AND s.starts_at > :now "
        "AND s.starts_at < :until AND NOT EXISTS (SELECT 1 FROM consultation "
        f"WHERE consultation.slot_id = s.id AND {held}) ORDER BY s.starts_at",
        now=s.starts_at.type,
        until=s.starts_at.type,
    ).columns(public_id=s.public_id.type)
    counter = sql(
        "INSERT INTO consultation_number_counter (year, last_number) VALUES (:year, 1) "
        "ON CONFLICT (year) DO UPDATE SET last_number = "
        "consultation_number_counter.last_number + 1 RETURNING last_number"
    )
    patient = sql("SELECT id FROM patient WHERE user_id = :user_id")
    slot = typed(
        "SELECT s.id, s.doctor_id, s.starts_at, s.ends_at, u.id AS user_id, u.email "
        "FROM slot s JOIN doctor d ON d.id = s.doctor_id JOIN ab_user u ON u.id = d.user_id "
        f"WHERE s.public_id = :public_id AND NOT s.blocked AND s.starts_at > :now{lock}",
        public_id=s.public_id.type,
        now=s.starts_at.type,
    ).columns(starts_at=s.starts_at.type, ends_at=s.ends_at.type)
    consultation = typed(
        "INSERT INTO consultation (public_id, number, kind, status, patient_id, doctor_id, "
        "slot_id, scheduled_at, duration_minutes, question, mode, diagnosis_text, complaints, "
        "staff_message, reject_reason, cancel_reason, version, created_at, submitted_at, "
        "scheduled_set_at) VALUES (:public_id, :number, 'duty', 'scheduled', :patient_id, "
        ":doctor_id, :slot_id, :starts_at, :minutes, '', 'video', '', '', '', '', '', 1, :now, "
        f":now, :now) ON CONFLICT (slot_id) WHERE {held} DO NOTHING RETURNING id",
        public_id=c.public_id.type,
        starts_at=c.scheduled_at.type,
        now=c.created_at.type,
    )
    notification = typed(
        "INSERT INTO notification (public_id, user_id, kind, text, link, created_at) "
        "VALUES (:public_id, :user_id, 'consultation_booked', :text, :link, :now)",
        public_id=Notification.__table__.c.public_id.type,
        now=Notification.__table__.c.created_at.type,
    )
    outbox = typed(
        "INSERT INTO outbound_message (public_id, channel, recipient, subject, body, user_id, "
        "dedupe_key, status, attempts, last_error, delivered_via, created_at) VALUES "
        "(:public_id, 'email', :recipient, 'Облако здоровья: уведомление', :body, :user_id, "
        ":dedupe_key, 'queued', 0, '', '', :now)",
        public_id=OutboundMessage.__table__.c.public_id.type,
        now=OutboundMessage.__table__.c.created_at.type,
    )
    audit = typed(
        "INSERT INTO audit_event (at, actor_id, action, object_type, object_id, patient_id, ip, "
        "outcome) VALUES (:now, :actor_id, 'consultation.book', 'consultation', :object_id, "
        ":patient_id, :ip, 'ok')",
        now=AuditEvent.__table__.c.at.type,
    )

    app = Flask(__name__)
    app.secret_key = os.environ["SECRET_KEY"]  # the service's: its session cookies are valid

    def user_id() -> int:
        uid = session.get("_user_id")
        if not uid:
            abort(403)
        return int(uid)

    @app.get("/slots")
    def slots() -> str:
        user_id()
        now = datetime.now(UTC)
        with engine.connect() as conn:
            ids = conn.execute(free, {"now": now, "until": now + timedelta(days=14)}).scalars()
            links = "".join(f'<a href="/book/{pid}">{pid}</a>\n' for pid in ids)
        return f"<!DOCTYPE html><html><body>{links}</body></html>"

    @app.post("/book/<uuid:slot_id>")
    def book(slot_id: uuid.UUID) -> Any:
        uid, now = user_id(), datetime.now(UTC)
        with engine.connect() as conn:
            year = now.year % 100
            number = conn.execute(counter, {"year": year}).scalar_one()  # a write first: SQLite
            patient_id = conn.execute(patient, {"user_id": uid}).scalar_one()
            row = conn.execute(slot, {"public_id": slot_id, "now": now}).first()
            if row is None:
                conn.rollback()
                return redirect("/slots")
            pid = uuid.uuid4()
            minutes = max(1, int((row.ends_at - row.starts_at).total_seconds() // 60))
            booked = conn.execute(
                consultation,
                {
                    "public_id": pid, "number": f"{year:02d}{number}", "patient_id": patient_id,
                    "doctor_id": row.doctor_id, "slot_id": row.id, "starts_at": row.starts_at,
                    "minutes": minutes, "now": now,
                },
            ).scalar_one_or_none()  # fmt: skip
            if booked is None:  # the index's answer: taken
                conn.rollback()
                return redirect("/slots")
            body = f"Новая запись к вам как к дежурному врачу: {row.starts_at:%d.%m.%Y %H:%M}."
            conn.execute(
                notification,
                {
                    "public_id": uuid.uuid4(), "user_id": row.user_id, "text": body,
                    "link": f"/care/consultations/{pid}", "now": now,
                },
            )  # fmt: skip
            conn.execute(
                outbox,
                {
                    "public_id": uuid.uuid4(), "recipient": row.email, "body": body,
                    "user_id": row.user_id, "dedupe_key": f"booking:{pid}:doctor:email",
                    "now": now,
                },
            )  # fmt: skip
            conn.execute(
                audit,
                {
                    "now": now, "actor_id": uid, "object_id": str(pid),
                    "patient_id": patient_id, "ip": "127.0.0.1",
                },
            )  # fmt: skip
            conn.commit()
        return redirect("/booked")

    return app


# ---------------------------------------------------------------------------------------------
# The race
# ---------------------------------------------------------------------------------------------


@dataclass
class Side:
    """How a client books on one side: where the slots are listed and how a booking is posted."""

    label: str
    list_path: str
    slot_re: re.Pattern[str]
    book_path: str  # format with the slot id
    booked_location: str  # the redirect that says "booked"
    clients: list[HttpClient] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)


@dataclass
class RaceFigures:
    seconds: float
    bookings: int
    attempts: int
    refused: int
    errors: list[str]

    @property
    def per_second(self) -> float:
        return self.bookings / self.seconds if self.seconds else 0.0


def race(side: Side) -> RaceFigures:
    """Every client on its own thread, released together; the clock runs from the release to
    the last client done."""
    n = len(side.clients)
    released: list[float] = []
    barrier = threading.Barrier(n, action=lambda: released.append(time.perf_counter()))
    results: list[tuple[int, int, int, str | None]] = [(0, 0, 0, None)] * n

    def client(i: int) -> None:
        rng, http = random.Random(i), side.clients[i]
        attempts = refused = 0
        try:
            barrier.wait()
            while True:
                page = http.get(side.list_path)
                if page.status != 200:
                    raise RuntimeError(f"GET {side.list_path}: HTTP {page.status}")
                free = side.slot_re.findall(page.body)
                if not free:
                    results[i] = (0, attempts, refused, None)
                    return
                attempts += 1
                form = {"mode": "video", "question": "", "topic": TOPIC}
                if side.tokens:
                    form["csrf_token"] = side.tokens[i]
                answer = http.post(side.book_path.format(rng.choice(free)), form)
                if answer.status in (302, 303) and answer.location.endswith(side.booked_location):
                    results[i] = (1, attempts, refused, None)
                    return
                if answer.status not in (200, 302, 303):
                    raise RuntimeError(f"POST booking: HTTP {answer.status}")
                refused += 1
        except Exception as exc:  # reported, never hidden
            results[i] = (0, attempts, refused, f"{type(exc).__name__}: {exc}"[:300])

    threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - released[0] if released else 0.0
    return RaceFigures(
        seconds,
        sum(r[0] for r in results),
        sum(r[1] for r in results),
        sum(r[2] for r in results),
        [r[3] for r in results if r[3]],
    )


def verify(app: Flask, slots: int, clients: int) -> list[str]:
    """Problems found in the bookings: doubled slots, clients with two, a wrong total."""
    from app.extensions import db
    from models import SLOT_HOLDING_STATUSES, Consultation

    active = Consultation.status.in_([str(s) for s in SLOT_HOLDING_STATUSES])
    problems: list[str] = []
    with app.app_context():
        doubled = db.session.execute(
            select(Consultation.slot_id, func.count(Consultation.id))
            .where(active, Consultation.slot_id.is_not(None))
            .group_by(Consultation.slot_id)
            .having(func.count(Consultation.id) > 1)
        ).all()
        twice = db.session.execute(
            select(Consultation.patient_id)
            .where(active)
            .group_by(Consultation.patient_id)
            .having(func.count(Consultation.id) > 1)
        ).all()
        total = db.session.execute(select(func.count(Consultation.id)).where(active)).scalar()
        db.session.remove()
    if doubled:
        problems.append(f"{len(doubled)} slots booked twice: {doubled[:5]}")
    if twice:
        problems.append(f"{len(twice)} clients hold two bookings")
    if total != min(slots, clients):
        problems.append(f"{total} bookings, expected exactly {min(slots, clients)}")
    return problems


def clear_bookings(app: Flask) -> None:
    """Back to the start between rounds: no consultation, and nothing the bookings wrote."""
    from app.extensions import db

    with app.app_context(), db.engine.begin() as conn:
        for table in ("audit_event", "outbound_message", "notification", "consultation"):
            conn.execute(text(f"DELETE FROM {table}"))
        db.session.remove()


def sign_in_all(service_url: str, usernames: list[str], slot_path: str) -> list[HttpClient]:
    """Each patient signed in through the real form; then the booking form's CSRF token."""

    def one(username: str) -> tuple[HttpClient, str]:
        http = HttpClient(service_url)
        http.sign_in(username)
        token = csrf_token(http.get(slot_path).body)
        if not token:
            raise RuntimeError(f"{username}: no CSRF token in the booking form")
        return http, token

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, usernames))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=DEFAULT_CLIENTS)
    parser.add_argument("--slots", type=int, default=DEFAULT_SLOTS)
    parser.add_argument("--rounds", type=int, default=MIN_ROUNDS, help="alternated rounds")
    parser.add_argument("--strict", action="store_true", help="exit 1 when the ratio is missed")
    args = parser.parse_args(argv)

    with fresh_database_url() as url, tempfile.TemporaryDirectory() as storage:
        backend = url.split(":", 1)[0]
        print(f"Booking race over HTTP: {args.clients} clients, {args.slots} slots, {backend}")
        app = create_bench_app(url, storage)  # a fresh database migrated to head
        usernames = seed(app, args.clients, args.slots)
        from app.extensions import db
        from models import Slot

        with app.app_context():
            first_slot = db.session.execute(select(Slot.public_id).limit(1)).scalar_one()
            with app.test_request_context():
                booked = url_for("MyConsultationView.list")
            db.session.remove()
            db.engine.dispose()
        env = served_env(url, storage, WTF_CSRF_ENABLED=True, MAX_UPCOMING_DUTY_BOOKINGS=2)
        problems: list[str] = []
        with (
            Served("served:service_app()", env, GUNICORN_RACE) as service_url,
            Served("bench_booking_race:plain_booking_app()", env, GUNICORN_RACE) as plain_url,
        ):
            signed = sign_in_all(service_url, usernames, f"{BOOKING_PAGE}{first_slot}")
            service = Side("service", LIST_PAGE, SERVICE_SLOT_RE, BOOKING_PAGE + "{}", booked)
            service.clients = [http for http, _token in signed]
            service.tokens = [token for _http, token in signed]
            plain = Side("plain", "/slots", PLAIN_SLOT_RE, "/book/{}", "/booked")
            plain.clients = [HttpClient(plain_url, http.cookie) for http, _token in signed]
            print(f"  {len(usernames)} patients signed in; {machine_load()}")

            def one_round(side: Side) -> Any:
                def run() -> float:
                    clear_bookings(app)
                    figures = race(side)
                    found = verify(app, args.slots, args.clients) + figures.errors[:5]
                    problems.extend(f"{side.label}: {p}" for p in found)
                    print(
                        f"  {side.label:<8} {figures.bookings:>4} bookings in "
                        f"{figures.seconds:6.2f} s = {figures.per_second:7.1f}/s, "
                        f"{figures.attempts} attempts, {figures.refused} refused"
                        + (f"; PROBLEMS: {found}" if found else ""),
                        flush=True,
                    )
                    return figures.per_second

                return run

            comparison = compare(
                f"booking race, {args.clients} clients: bookings/s, form vs plain SQL",
                one_round(service),
                one_round(plain),
                unit="bookings/s",
                target=RATIO_TARGET,
                higher_is_better=True,
                rounds=args.rounds,
            )
        with app.app_context():
            db.engine.dispose()
    missed = print_summary([comparison])
    if problems:
        print("\nBOOKINGS WRONG:\n  - " + "\n  - ".join(problems))
        return 1
    print("\nChecked every round, both sides: one booking per slot, none doubled.")
    return missed if args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
