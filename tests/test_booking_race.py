"""Concurrent bookings on real connections: a slot goes to exactly one patient.

RACERS threads, each with its own app context, session and database connection (PostgreSQL
when DATABASE_URL says so, else the SQLite file), wait on a barrier and book at once. The
connections are counted (distinct server pids / DBAPI connections) so that the race really is
between RACERS connections, not queued behind a small pool.

Two layers keep a slot to one booking, and each is raced on its own:
- the whole service (row locks on PostgreSQL, the write lock on SQLite, then the check);
- the database alone: the lock and the Python check switched off, every racer inserts and the
  partial unique index uq_consultation_active_slot must refuse all but one. This one fails if
  the index is dropped.
"""

from __future__ import annotations

import threading
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, text

from tests.conftest import TAKEN_RU, active_bookings, add_shift

RACERS = 16


@pytest.fixture(scope="module")
def race_app(app, database_url):
    """The same app on the same database, with a pool that gives every racer a connection."""
    from app import create_app

    application = create_app(
        {
            **{k: app.config[k] for k in ("SECRET_KEY", "STORAGE_DIR", "REDIS_URL")},
            "TESTING": True,
            "SQLALCHEMY_DATABASE_URI": database_url,
            "SQLALCHEMY_ENGINE_OPTIONS": {
                "pool_size": RACERS + 4,
                "max_overflow": 0,
                "pool_timeout": 30,
                "pool_pre_ping": True,
            },
            "RATELIMIT_STORAGE_URI": app.config["RATELIMIT_STORAGE_URI"],
            "SERVER_NAME": "localhost",
        }
    )
    yield application
    from app.extensions import db

    with application.app_context():
        db.engine.dispose()


def start_of_tomorrow() -> datetime:
    return datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)


def race(race_app, patient_ids: list[int], slot_ids: list[str]) -> tuple[list[str], set]:
    """Racer i books slot_ids[i] for patient_ids[i], all released together by a barrier.

    Returns each racer's outcome ("ok", the refusal text, or the unexpected exception) and the
    set of connection identities the racers held.
    """
    from app.booking import BookingError, book_slot
    from app.db import unit_of_work
    from app.extensions import db
    from models import Patient

    barrier = threading.Barrier(len(patient_ids))
    outcomes: list[str] = [""] * len(patient_ids)
    connections: list[object] = [None] * len(patient_ids)

    def racer(i: int) -> None:
        with race_app.test_request_context():  # force_locale (Russian messages) needs a request
            try:
                patient = db.session.get(Patient, patient_ids[i])
                conn = db.session.connection()
                if conn.dialect.name == "postgresql":
                    connections[i] = conn.execute(text("SELECT pg_backend_pid()")).scalar()
                else:
                    connections[i] = id(conn.connection.dbapi_connection)
                barrier.wait(timeout=30)
                with unit_of_work():
                    book_slot(patient, slot_ids[i], question="", document_ids=())
                outcomes[i] = "ok"
            except BookingError as exc:
                outcomes[i] = str(exc)
            except Exception as exc:
                outcomes[i] = f"unexpected {type(exc).__name__}: {exc}"
            finally:
                db.session.remove()

    threads = [threading.Thread(target=racer, args=(i,)) for i in range(len(patient_ids))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a racer hung"
    return outcomes, set(connections)


@pytest.fixture
def contenders(app, make_patient, make_doctor):
    doctor_id = make_doctor(is_duty=True)
    slot_id = add_shift(app, doctor_id, start_of_tomorrow() + timedelta(hours=10), slots=1)[0]
    return [make_patient() for _ in range(RACERS)], slot_id


def test_sixteen_connections_race_for_one_slot_exactly_one_wins(app, race_app, contenders):
    patients, slot_id = contenders
    outcomes, connections = race(race_app, patients, [slot_id] * RACERS)
    assert len(connections) == RACERS  # really RACERS connections at once
    assert Counter(outcomes) == {"ok": 1, TAKEN_RU: RACERS - 1}, Counter(outcomes)
    assert active_bookings(app, slot_id) == 1


def test_the_unique_index_alone_keeps_one_booking(app, race_app, contenders, monkeypatch):
    """No lock, no check in Python: every racer inserts; only the database stands between."""
    import app.booking.book as booking

    real_lock = booking._lock_booking
    monkeypatch.setattr(booking, "bookable_slot", lambda pid, now: None)
    monkeypatch.setattr(
        booking, "_lock_booking", lambda patient_id, pid: real_lock(patient_id, pid, lock=False)
    )
    patients, slot_id = contenders
    outcomes, connections = race(race_app, patients, [slot_id] * RACERS)
    assert len(connections) == RACERS
    assert active_bookings(app, slot_id) == 1
    assert Counter(outcomes) == {"ok": 1, TAKEN_RU: RACERS - 1}, Counter(outcomes)


def test_one_patient_racing_for_many_slots_stays_within_the_limit(
    app, race_app, make_patient, make_doctor
):
    from app.extensions import db
    from models import Consultation

    doctor_id = make_doctor(is_duty=True)
    slots = add_shift(
        app, doctor_id, start_of_tomorrow() + timedelta(hours=6), slots=RACERS, minutes=15
    )
    patient_id = make_patient()
    limit = race_app.config["MAX_UPCOMING_DUTY_BOOKINGS"]
    outcomes, connections = race(race_app, [patient_id] * RACERS, slots)
    assert len(connections) == RACERS
    counts = Counter("ok" if o == "ok" else "limit" if "максимальное" in o else o for o in outcomes)
    assert counts == {"ok": limit, "limit": RACERS - limit}, counts
    with app.app_context():
        held = db.session.execute(
            select(func.count(Consultation.id)).where(Consultation.patient_id == patient_id)
        ).scalar_one()
    assert held == limit
