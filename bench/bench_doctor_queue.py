"""Bench: the centre doctor's «Заявки» page (/care/queue) over HTTP, against a plain Flask view.

Data: applications to a centre (kind centre_request, status requested or needs_documents) spread
over two centres, each from its own patient; besides them a quarter as many consultations that
left the queue (scheduled, completed) at the same centres. First 1,000 applications are loaded
and measured, then the same database is grown to 100,000 and measured again.

Pages, signed in as the Doctor of the first centre: page 1 of the queue and a deep page (page
20: OFFSET 380). Each is caught in-process (statements with parameters; the body checked:
exactly the 20 applications of the doctor's centre that the queue's order puts on that page),
then measured over HTTP (gunicorn, a real session cookie) against a plain Flask view replaying
the same statements into the same layout, alternated by bench/fair.py (ratio plain/service
≥ 0.5). Statements per page: ≤ 8 and the same at both sizes, checked (exit 1 otherwise).

Run: `.venv/bin/python bench/bench_doctor_queue.py` (DATABASE_URL picks PostgreSQL: a fresh
database bench_<pid> is created and dropped). `--explain` prints the plan of the page's main
statement at the large size (EXPLAIN ANALYZE on PostgreSQL, EXPLAIN QUERY PLAN on SQLite);
`--strict` exits 1 when a ratio is missed too; `--small 800 --large 2000` for a quick try.
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from common import (
    BENCH_PASSWORD,
    QueryCounter,
    Stopwatch,
    analyze,
    bulk_insert,
    create_bench_app,
    fresh_database_url,
    load_patient_accounts,
    login,
    machine_load,
    next_id,
    reset_sequences,
)
from fair import MIN_ROUNDS, print_summary
from flask import Flask, url_for
from flask.testing import FlaskClient
from served import PageProbe, Served, check_statements, compare_pages, served_env
from sqlalchemy import Engine, event, select

CENTRES = 2  # the Doctor's centre is the first: half the applications are in its queue
DEEP_PAGE = 20
PAGE_SIZE = 20  # app.consultations.QUEUE_PAGE_SIZE, checked at start
OTHERS_PER_QUEUED = 0.25  # scheduled/completed consultations per application in the queue

QUEUE_PAGE = "CareView.queue"


# Every NOT NULL column is given explicitly: COPY applies no Python-side defaults.
CONSULTATION_COLUMNS = (
    "id public_id number kind status patient_id center_id doctor_id disease_id diagnosis_text "
    "complaints question staff_message mode scheduled_at duration_minutes due_by reject_reason "
    "cancel_reason created_at submitted_at"
).split()

DATA_CONSULTATION_RE = re.compile(r'data-consultation="([0-9a-f-]{36})"')


@dataclass
class World:
    """What the loader needs to keep between the two sizes."""

    patient_role_id: int
    centre_ids: list[int]
    doctor_id: int
    disease_ids: list[int]
    queued: int = 0  # applications in the queue statuses, both centres
    others: int = 0  # scheduled / completed
    patients: int = 0
    expected: dict[int, list[str]] = field(default_factory=dict)  # page → public ids, in order


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def set_up_world(app: Flask) -> World:
    """Roles, catalogue, two centres and the first centre's Doctor: through the real services."""
    from app.accounts import create_doctor, get_role
    from app.catalogue import load_catalogue
    from app.demo import ensure_roles
    from app.extensions import db
    from app.permissions import PATIENT
    from models import Disease, Doctor, MedicalCenter

    with app.app_context():
        ensure_roles()
        load_catalogue()
        centres = [
            MedicalCenter(name=f"Центр №{i}", profile="cardiology", region="Москва")
            for i in range(1, CENTRES + 1)
        ]
        db.session.add_all(centres)
        db.session.flush()
        create_doctor(
            username="bench-doctor",
            password=BENCH_PASSWORD,
            surname="Сердцев",
            name="Алексей",
            patronymic="Викторович",
            specialty="Кардиолог",
            email="bench-doctor@example.org",
            center_id=centres[0].id,
            is_duty=False,
        )
        doctor = db.session.execute(
            select(Doctor).where(Doctor.center_id == centres[0].id)
        ).scalar_one()
        world = World(
            patient_role_id=get_role(PATIENT).id,
            centre_ids=[c.id for c in centres],
            doctor_id=doctor.id,
            disease_ids=sorted(db.session.execute(select(Disease.id)).scalars()),
        )
        db.session.commit()
    return world


def load_applications(app: Flask, world: World, *, queued: int) -> None:
    """Add `queued` applications in the queue (each from a new patient: user, role link,
    patient) and a quarter as many scheduled/completed consultations of the same patients.
    """
    from app.accounts import hash_password
    from app.extensions import db
    from models import allocate_consultation_numbers

    rng = random.Random(20261123 + world.queued)  # reproducible figures run to run
    now = datetime.now(UTC)
    others = int(queued * OTHERS_PER_QUEUED)
    with app.app_context(), db.engine.begin() as conn:
        password_hash = hash_password(BENCH_PASSWORD)  # once: per row it would dominate
        first_n = world.patients  # running patient number: phones and e-mails stay unique
        consultation0 = next_id(conn, "consultation")
        patient0 = load_patient_accounts(
            conn, count=queued, first_n=first_n, role_id=world.patient_role_id,
            password_hash=password_hash, phone_prefix="+7901", email_prefix="queue",
            patronymic="Очередевич", now=now,
        )  # fmt: skip

        numbers = allocate_consultation_numbers(conn, queued + others)  # COPY sets no default

        def consultation_rows() -> Iterator[tuple]:
            for i in range(queued + others):
                n = first_n + i % queued
                submitted = now - timedelta(minutes=rng.randint(1, 60 * 24 * 365))
                # Half the applications name a disease from the catalogue (in both centres);
                # the ones that left the queue name none: one open application per patient,
                # centre and disease (uq_consultation_open_application), NULLs are distinct.
                named = n // 2 % 2 and i < queued
                disease = world.disease_ids[n % len(world.disease_ids)] if named else None
                if i < queued:  # in the queue: 4 in 5 requested, 1 in 5 needs documents
                    status = "needs_documents" if n % 5 == 4 else "requested"
                    doctor, scheduled = None, None
                else:  # left the queue: scheduled (by the bench doctor) or completed
                    status = rng.choice(("scheduled", "completed"))
                    doctor = world.doctor_id
                    scheduled = submitted + timedelta(days=rng.randint(1, 14))
                yield (
                    consultation0 + i,
                    uuid.uuid4(),
                    numbers[i],
                    "centre_request",
                    status,
                    patient0 + i % queued,
                    world.centre_ids[n % CENTRES],
                    doctor,
                    disease,
                    "" if disease else "Нарушение ритма сердца",
                    "Одышка при нагрузке",
                    "",
                    "",
                    "video",
                    scheduled,
                    30,
                    submitted + timedelta(days=3),  # due_by: the older ones are overdue
                    "",
                    "",
                    submitted,
                    submitted,
                )

        bulk_insert(conn, "consultation", CONSULTATION_COLUMNS, consultation_rows())
        reset_sequences(conn, ("ab_user", "ab_user_role", "patient", "consultation"))
    with app.app_context(), db.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            analyze(conn)
    world.queued += queued
    world.others += others
    world.patients += queued


def expected_pages(app: Flask, world: World, pages: tuple[int, ...]) -> None:
    """What each page must list: the doctor's centre's queue in the queue's order (computed
    here with a plain statement, independently of the service)."""
    from app.consultations import QUEUE_STATUSES
    from app.extensions import db
    from models import Consultation

    with app.app_context():
        for page in pages:
            world.expected[page] = [
                str(p)
                for p in db.session.execute(
                    select(Consultation.public_id)
                    .where(
                        Consultation.center_id == world.centre_ids[0],
                        Consultation.status.in_([s.value for s in QUEUE_STATUSES]),
                    )
                    .order_by(Consultation.submitted_at, Consultation.id)
                    .limit(PAGE_SIZE)
                    .offset((page - 1) * PAGE_SIZE)
                ).scalars()
            ]
        db.session.remove()


# ---------------------------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------------------------


def _shows_page(world: World, page: int) -> Callable[[str], None]:
    def check(body: str) -> None:
        shown = DATA_CONSULTATION_RE.findall(body)
        expected = world.expected[page]
        if len(expected) != PAGE_SIZE:
            raise RuntimeError(f"page {page}: only {len(expected)} applications expected")
        if shown != expected:
            raise RuntimeError(
                f"page {page} of the queue shows {len(shown)} applications, not the "
                f"{len(expected)} expected in the queue's order (scope, order or clamping?)"
            )

    return check


def build_probes(app: Flask, world: World) -> list[PageProbe]:
    with app.test_request_context():
        first = url_for(QUEUE_PAGE)
        deep = url_for(QUEUE_PAGE, page=DEEP_PAGE)
    return [
        PageProbe(
            "queue-1", "queue, page 1 (Doctor)", first, "bench-doctor", _shows_page(world, 1)
        ),
        PageProbe(
            f"queue-{DEEP_PAGE}", f"queue, page {DEEP_PAGE} (Doctor)", deep, "bench-doctor",
            _shows_page(world, DEEP_PAGE),
        ),
    ]  # fmt: skip


class StatementCatcher:
    """Keeps the last statement (with its parameters) that lists the queue: to EXPLAIN it."""

    MARK = "ORDER BY consultation.submitted_at"

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.caught: tuple[str, Any] | None = None
        event.listen(engine, "before_cursor_execute", self._before)

    def _before(self, conn, cursor, statement, parameters, context, executemany) -> None:
        if self.MARK in statement and "LIMIT" in statement and "EXPLAIN" not in statement:
            self.caught = (statement, parameters)

    def close(self) -> None:
        event.remove(self.engine, "before_cursor_execute", self._before)


def explain(
    app: Flask, client: FlaskClient, probes: list[PageProbe], catcher: StatementCatcher
) -> None:
    from app.extensions import db

    for probe in probes:
        catcher.caught = None
        client.get(probe.path)
        if catcher.caught is None:
            print(f"\n  plan of «{probe.label}»: the listing statement was not seen")
            continue
        statement, parameters = catcher.caught
        print(f"\n  plan of «{probe.label}»:")
        print(f"    {' '.join(statement.split())[:400]}")
        with app.app_context(), db.engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                prefix = "EXPLAIN (ANALYZE, BUFFERS) "
            else:
                prefix = "EXPLAIN QUERY PLAN "
            rows = conn.exec_driver_sql(prefix + statement, parameters).fetchall()
            for row in rows:
                print("    " + " | ".join(str(v) for v in row))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", type=int, default=1_000, help="applications, first size")
    parser.add_argument("--large", type=int, default=100_000, help="applications, second size")
    parser.add_argument("--rounds", type=int, default=MIN_ROUNDS, help="alternated rounds")
    parser.add_argument("--requests", type=int, default=20, help="GETs per page and round")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a ratio is missed")
    parser.add_argument("--explain", action="store_true", help="plan of the listing statement")
    args = parser.parse_args(argv)
    if args.large <= args.small:
        parser.error("--large must be bigger than --small")
    if args.small // CENTRES < DEEP_PAGE * PAGE_SIZE:
        parser.error(f"--small must fill {DEEP_PAGE} pages of the first centre's queue")

    with fresh_database_url() as url, tempfile.TemporaryDirectory() as storage:
        backend = url.split(":", 1)[0]
        print(f"bench_doctor_queue: {backend}, over HTTP (gunicorn), service vs plain view")
        with Stopwatch("migrating a fresh database"):
            app = create_bench_app(url, storage)
        from app.consultations import QUEUE_PAGE_SIZE
        from app.extensions import db

        if QUEUE_PAGE_SIZE != PAGE_SIZE:
            raise RuntimeError(f"the queue's page size is {QUEUE_PAGE_SIZE}, not {PAGE_SIZE}")
        with app.app_context():
            counter = QueryCounter(db.engine)
            catcher = StatementCatcher(db.engine)
        env = served_env(url, storage)
        captured, comparisons = [], []
        try:
            with Stopwatch("accounts, centres, catalogue"):
                world = set_up_world(app)
            probes = []
            with Served("served:service_app()", env) as service_url:
                for size in (args.small, args.large):
                    more = size - world.queued
                    others = int(more * OTHERS_PER_QUEUED)
                    with Stopwatch(f"loading {more:,} applications (+{others:,} scheduled/done)"):
                        load_applications(app, world, queued=more)
                    expected_pages(app, world, (1, DEEP_PAGE))
                    probes = probes or build_probes(app, world)
                    print(f"\n{world.queued:,} applications, {world.others:,} scheduled/done")
                    pages, compared = compare_pages(
                        app, counter, probes, service_url=service_url, env=env,
                        workdir=Path(storage), rounds=args.rounds, requests=args.requests,
                    )  # fmt: skip
                    captured.append(pages)
                    comparisons += compared
                    print(f"  {machine_load()}")
            if args.explain:
                client = app.test_client()
                login(client, "bench-doctor")
                explain(app, client, probes, catcher)
        finally:
            counter.close()
            catcher.close()
            with app.app_context():
                db.session.remove()
                db.engine.dispose()  # let the PostgreSQL database be dropped
    problems = check_statements((args.small, args.large), *captured)
    missed = print_summary(comparisons)
    if problems:
        print("\nSTATEMENTS OVER BUDGET OR GROWING:\n  - " + "\n  - ".join(problems))
        return 1
    return missed if args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
