"""Bench: 200 concurrent clients race for 50 duty slots — no slot doubled, and at what speed.

Every client is a patient on its own thread with its own database connection (a pool sized for
the clients, capped by what the server still accepts). A client does what the booking page
does: read the free slots, pick one at random, book it; refused (someone was faster) → read
again; stop with one booking or when nothing is free. The booking is the real service call
(app.booking.book_slot in a unit of work: row locks, the partial unique index, notifications,
audit), so the figure includes everything a booking costs in the database.

Baseline: the same clients, the same loop, on a scratch table `slot_claim` with the barest
possible claim, `UPDATE slot_claim SET taken_by = :c WHERE id = :id AND taken_by IS NULL`
(autocommit). The ratio service/baseline of bookings per second is held to ≥ 0.3.

Checked after each run: exactly 50 bookings, no slot held twice (a GROUP BY … HAVING count > 1
over the active consultations), no client with two.

Harness: by default the clients are split over 4 processes (threads in each; the connections
split evenly), as the README's production runs the web app (`gunicorn -w 4`); `--processes 1`
runs them all as threads of this process, one GIL for 200 clients. The service and the baseline
always run through the same harness with the same numbers. The clock runs from the barrier's
release to the last client done; each side also prints its clients' own CPU seconds (threads
summed), which other load hardly moves.

Run: `.venv/bin/python bench/bench_booking_race.py` (DATABASE_URL picks PostgreSQL: a fresh
database bench_<pid> is created and dropped; without it a SQLite file, where writers queue on
one lock). Options: --clients, --slots, --processes, --strict (exit 1 when a target is missed).
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from common import create_bench_app, fresh_database_url, machine_load
from flask import Flask
from sqlalchemy import create_engine, func, select, text

RATIO_TARGET = 0.3
DEFAULT_CLIENTS = 200
DEFAULT_SLOTS = 50
DEFAULT_PROCESSES = 4  # the README's production: gunicorn -w 4


@dataclass
class RunFigures:
    label: str
    seconds: float
    bookings: int
    attempts: int
    refused: int
    errors: list[str] = field(default_factory=list)
    cpu: float = 0.0  # the clients' own CPU seconds in the timed window (threads summed)

    @property
    def per_second(self) -> float:
        return self.bookings / self.seconds if self.seconds else 0.0


def connection_budget(url: str, clients: int) -> int:
    """Connections this bench may open: one per client, within what the server has left."""
    if not url.startswith("postgresql"):
        return clients
    engine = create_engine(url)
    with engine.connect() as conn:
        limit = int(conn.execute(text("SHOW max_connections")).scalar())
        reserved = int(conn.execute(text("SHOW superuser_reserved_connections")).scalar())
        used = int(conn.execute(text("SELECT count(*) FROM pg_stat_activity")).scalar())
    engine.dispose()
    # Leave room for the rest of the machine (other test sessions, the admin connection).
    return max(8, min(clients, limit - reserved - used - 10))


def connect_args(url: str) -> dict[str, Any]:
    """The service's own SQLite connection settings (WAL, a 30 s wait for the write lock) for
    both sides: without them a writer queueing behind 200 others fails after sqlite3's 5 s."""
    if not url.startswith("sqlite"):
        return {}
    from config import sqlite_connect_args

    return {"connect_args": sqlite_connect_args()}


def race_app(url: str, storage: str, pool: int) -> Flask:
    """The app with a pool of `pool` connections (create_bench_app's default pool is 5 + 10)."""
    from app import create_app

    return create_app(
        {
            "TESTING": True,
            "SQLALCHEMY_DATABASE_URI": url,
            "SQLALCHEMY_ENGINE_OPTIONS": {
                "pool_size": pool,
                "max_overflow": 0,
                "pool_timeout": 120,
                **connect_args(url),
            },
            "STORAGE_DIR": storage,
            "RATELIMIT_STORAGE_URI": "memory://",
            "REDIS_URL": "",
            "SERVER_NAME": "localhost",
            # Every client books once; the limit is not what is measured.
            "MAX_UPCOMING_DUTY_BOOKINGS": 2,
        }
    )


def seed(app: Flask, clients: int, slots: int) -> list[int]:
    """One duty doctor with `slots` slots tomorrow, `clients` patients; returns patient ids."""
    from app.accounts import create_doctor, hash_password
    from app.extensions import db
    from app.scheduling import generate_slots
    from models import DutyShift, OblakoUser, Patient

    with app.app_context():
        doctor = create_doctor(
            username="duty-bench",
            password="Bench2026secret",
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
        shift = DutyShift(
            doctor=doctor,
            doctor_id=doctor.id,
            starts_at=start,
            ends_at=start + timedelta(minutes=minutes * slots),
            slot_minutes=minutes,
            topics="Профилактика",
        )
        if slots * minutes > 24 * 60:
            raise SystemExit("too many slots for one shift")
        db.session.add(shift)
        db.session.add_all(generate_slots(shift))
        password = hash_password("Bench2026secret")
        patients = []
        for n in range(clients):
            user = OblakoUser(
                first_name="Пациент",
                last_name=f"Гонкин{n}",
                username=f"+7900{n:07d}",
                email=f"race{n}@example.org",
                password=password,
                active=True,
                timezone="Asia/Yekaterinburg",
            )
            patient = Patient(
                user=user,
                surname=f"Гонкин{n}",
                name="Пациент",
                birth_date=date(1970, 1, 1),
                sex="male",
                phone=f"+7900{n:07d}",
                region="Свердловская область",
                timezone="Asia/Yekaterinburg",
                notify_sms=True,
                notify_email=False,
            )
            db.session.add_all([user, patient])
            patients.append(patient)
        db.session.commit()
        return [p.id for p in patients]


Result = tuple[int, int, int, str | None]  # bookings, attempts, refused, error
# A client: (its index, wait) -> Result. It calls wait() once its own preparation is done; the
# call returns when every client of the run (in every process) is ready.
Client = Callable[[int, Callable[[], None]], Result]
# Run in the process that hosts the clients: (its share of the connections) -> (client, done).
Setup = Callable[[int], tuple[Client, Callable[[], None]]]


Hosted = tuple[Result, float, float, float]  # result, released at, done at, CPU seconds


def _host(indices: list[int], client: Client, barrier: Any) -> list[Hosted]:
    """Run these clients on threads of this process: (result, released at, done at, CPU) each.

    The stamps are time.perf_counter(), CLOCK_MONOTONIC on Linux, comparable across processes;
    CPU is the thread's own time after its release (time.thread_time()), which, unlike the
    wall clock, other load on the machine hardly changes.
    """
    out: list[Hosted] = [((0, 0, 0, None), 0.0, 0.0, 0.0)] * len(indices)

    def target(k: int) -> None:
        released = [0.0, 0.0]

        def wait() -> None:
            barrier.wait()
            released[:] = [time.perf_counter(), time.thread_time()]

        result = client(indices[k], wait)
        cpu = time.thread_time() - released[1] if released[0] else 0.0
        out[k] = (result, released[0], time.perf_counter(), cpu)

    threads = [threading.Thread(target=target, args=(k,)) for k in range(len(indices))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def _child(indices, setup: Setup, pool: int, barrier: Any, queue: Any) -> None:
    try:
        client, done = setup(pool)
    except Exception as exc:  # reported by every client of this process, never hidden
        error = f"setup: {type(exc).__name__}: {exc}"[:300]
        barrier.abort()
        queue.put([((0, 0, 0, error), 0.0, 0.0, 0.0)] * len(indices))
        return
    try:
        queue.put(_host(indices, client, barrier))
    finally:
        done()


def run_clients(
    n: int, setup: Setup, *, processes: int, connections: int
) -> tuple[float, list[Result], float]:
    """n clients, as threads of `processes` processes (one: this process), sharing
    `connections` connections; returns the timed seconds, each client's result and the
    clients' CPU seconds.

    The clock starts when the barrier releases the clients (the first release stamp; they are
    all released together) and stops when the last client is done: process and thread start-up
    and each side's own preparation stay outside the timed window. The service and the
    baseline run through this same function with the same arguments.
    """
    if processes <= 1:
        client, done = setup(connections)
        try:
            hosted = _host(list(range(n)), client, threading.Barrier(n))
        finally:
            done()
    else:
        ctx = multiprocessing.get_context("fork")  # the parent has no threads left here
        barrier = ctx.Barrier(n)
        queue = ctx.Queue()
        shares = [list(range(n))[k::processes] for k in range(processes)]
        pool = max(2, connections // processes)
        children = [
            ctx.Process(target=_child, args=(share, setup, pool, barrier, queue))
            for share in shares
        ]
        for child in children:
            child.start()
        hosted = [item for _ in children for item in queue.get()]
        for child in children:
            child.join()
    results = [h[0] for h in hosted]
    released = [h[1] for h in hosted if h[1]]
    cpu = sum(h[3] for h in hosted)
    if len(released) < n:  # the barrier never released (a client failed before it)
        return 0.0, results, cpu
    return max(h[2] for h in hosted) - min(released), results, cpu


def _figures(label: str, timed: tuple[float, list[Result], float]) -> RunFigures:
    seconds, results, cpu = timed
    return RunFigures(
        label,
        seconds,
        sum(r[0] for r in results),
        sum(r[1] for r in results),
        sum(r[2] for r in results),
        [r[3] for r in results if r[3]],
        cpu,
    )


def service_run(
    url: str, storage: str, patient_ids: list[int], *, processes: int, connections: int
) -> RunFigures:
    def setup(pool: int) -> tuple[Client, Callable[[], None]]:
        from app.booking import BookingError, book_slot, free_slots
        from app.db import unit_of_work
        from app.extensions import db
        from models import Patient

        app = race_app(url, storage, pool)

        def client(i: int, wait: Callable[[], None]) -> Result:
            rng = random.Random(i)
            attempts = refused = 0
            with app.test_request_context():
                try:
                    patient = db.session.get(Patient, patient_ids[i])
                    # With fewer connections than clients, no one may hold one across the wait.
                    db.session.commit()
                    wait()
                    while True:
                        # What the booking page reads (its listing query), as a browser would.
                        free = [s.public_id for s in free_slots()]
                        if not free:
                            return 0, attempts, refused, None
                        attempts += 1
                        try:
                            with unit_of_work():
                                book_slot(patient, rng.choice(free), question="", document_ids=())
                            return 1, attempts, refused, None
                        except BookingError:
                            refused += 1
                except Exception as exc:  # reported, never hidden
                    return 0, attempts, refused, f"{type(exc).__name__}: {exc}"[:300]
                finally:
                    db.session.remove()

        def done() -> None:
            with app.app_context():
                db.engine.dispose()

        return client, done

    timed = run_clients(len(patient_ids), setup, processes=processes, connections=connections)
    return _figures("book_slot() (service)", timed)


def baseline_run(url: str, clients: int, slots: int, *, processes: int, connections: int):
    admin = create_engine(url)
    with admin.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS slot_claim"))
        conn.execute(text("CREATE TABLE slot_claim (id INTEGER PRIMARY KEY, taken_by INTEGER)"))
        conn.execute(
            text("INSERT INTO slot_claim (id, taken_by) VALUES (:id, NULL)"),
            [{"id": n} for n in range(1, slots + 1)],
        )
    admin.dispose()  # no connection of the parent crosses a fork

    def setup(pool: int) -> tuple[Client, Callable[[], None]]:
        engine = create_engine(
            url, pool_size=pool, max_overflow=0, pool_timeout=120, **connect_args(url)
        )
        auto = engine.execution_options(isolation_level="AUTOCOMMIT")

        def client(i: int, wait: Callable[[], None]) -> Result:
            rng = random.Random(i)
            attempts = refused = 0
            try:
                wait()
                while True:
                    # A connection per statement, as the service's sessions get one per
                    # transaction.
                    with auto.connect() as conn:
                        free = (
                            conn.execute(text("SELECT id FROM slot_claim WHERE taken_by IS NULL"))
                            .scalars()
                            .all()
                        )
                    if not free:
                        return 0, attempts, refused, None
                    attempts += 1
                    with auto.connect() as conn:
                        claimed = conn.execute(
                            text(
                                "UPDATE slot_claim SET taken_by = :c "
                                "WHERE id = :id AND taken_by IS NULL"
                            ),
                            {"c": i, "id": rng.choice(free)},
                        ).rowcount
                    if claimed == 1:
                        return 1, attempts, refused, None
                    refused += 1
            except Exception as exc:
                return 0, attempts, refused, f"{type(exc).__name__}: {exc}"[:300]

        return client, engine.dispose

    timed = run_clients(clients, setup, processes=processes, connections=connections)
    figures = _figures("bare conditional UPDATE (baseline)", timed)
    admin = create_engine(url)
    with admin.connect() as conn:
        doubled = conn.execute(
            text(
                "SELECT taken_by FROM slot_claim WHERE taken_by IS NOT NULL "
                "GROUP BY taken_by HAVING count(*) > 1"
            )
        ).all()
        conn.execute(text("DROP TABLE slot_claim"))
        conn.commit()
    admin.dispose()
    if doubled:
        figures.errors.append(f"baseline: {len(doubled)} clients claimed two slots")
    return figures


def verify(app: Flask, slots: int) -> list[str]:
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
    if doubled:
        problems.append(f"{len(doubled)} slots booked twice: {doubled[:5]}")
    if twice:
        problems.append(f"{len(twice)} clients hold two bookings")
    if total != slots:
        problems.append(f"{total} bookings, expected exactly {slots}")
    return problems


def print_run(f: RunFigures) -> None:
    print(
        f"  {f.label:<36} {f.bookings:>4} bookings in {f.seconds:6.2f} s  "
        f"{f.per_second:8.1f} bookings/s  {f.attempts:>5} attempts, {f.refused:>5} refused"
    )
    per_attempt = f.cpu / f.attempts * 1000 if f.attempts else 0.0
    print(f"  {'':<36} clients' CPU {f.cpu:5.2f} s, {per_attempt:4.1f} ms an attempt")
    for error in f.errors[:5]:
        print(f"      error: {error}")
    if len(f.errors) > 5:
        print(f"      … {len(f.errors) - 5} more errors")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=DEFAULT_CLIENTS)
    parser.add_argument("--slots", type=int, default=DEFAULT_SLOTS)
    parser.add_argument(
        "--processes",
        type=int,
        default=DEFAULT_PROCESSES,
        help="client processes (the clients are split across them as threads), both sides",
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)

    with fresh_database_url() as url, tempfile.TemporaryDirectory() as storage:
        backend = url.split(":", 1)[0]
        print(f"Booking race: {args.clients} clients, {args.slots} slots, {backend}")
        create_bench_app(url, storage)  # a fresh database migrated to head
        pool = connection_budget(url, args.clients)
        note = "" if pool >= args.clients else " (capped by the server's max_connections)"
        print(f"  connections: {pool} for {args.clients} clients{note}")
        print(
            f"  clients: {args.processes} process(es) × ~{args.clients // args.processes} "
            "threads, the same for the service and the baseline"
        )
        app = race_app(url, storage, pool)
        patient_ids = seed(app, args.clients, args.slots)
        from app.extensions import db

        with app.app_context():
            db.engine.dispose()  # the clients bring their own connections (and processes)
        harness = {"processes": args.processes, "connections": pool}
        service = service_run(url, storage, patient_ids, **harness)
        problems = verify(app, args.slots)
        with app.app_context():
            db.engine.dispose()  # the baseline gets the same number of connections
        baseline = baseline_run(url, args.clients, args.slots, **harness)

        print()
        print_run(service)
        print_run(baseline)
        if baseline.bookings != args.slots:
            problems.append(f"baseline: {baseline.bookings} claims, expected {args.slots}")
        problems += service.errors + baseline.errors
        ratio = service.per_second / baseline.per_second if baseline.per_second else 0.0
        met = ratio >= RATIO_TARGET
        print()
        print(
            f"  ratio service/baseline {ratio:.2f} (target ≥ {RATIO_TARGET}): "
            f"{'met' if met else 'TARGET MISSED'}"
        )
        print(
            "  no slot doubled, exactly one booking per slot: " + ("yes" if not problems else "NO")
        )
        for p in problems:
            print(f"    problem: {p}")
        print(f"  {machine_load()}")
        ok = met and not problems
        return 0 if ok or not args.strict else 1


if __name__ == "__main__":
    sys.exit(main())
