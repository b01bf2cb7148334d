"""Bench: the list pages that grow with the data, over HTTP, against a plain Flask view.

Pages: the staff patient list signed in as a Manager (every patient) and as a Doctor (the
patients with a consultation at the doctor's centre: one centre in ten), and a patient's «Мои
документы» (50 documents of their own among all the documents in the table).

Sizes: 1,000 patients with 5,000 documents, then the same database grown to 100,000 patients
with 500,000 documents. At each size, every page is first caught in-process (the statements
one request sends, with their parameters; the body checked: the probe patient sees exactly
their own documents), then measured over HTTP: the app served by gunicorn, signed in with a
real session cookie, against a plain Flask view served by the same gunicorn settings that
replays the same statements and renders the same rows in the same layout (bench/served.py).
bench/fair.py alternates them (≥ 5 rounds; a round's figure is the median latency of
`--requests` sequential GETs): the ratio plain/service is held to ≥ 0.5. Statements per page:
≤ 8 and the same at both sizes, checked (exit 1 otherwise).

Run: `.venv/bin/python bench/bench_page_queries.py` (DATABASE_URL picks PostgreSQL: a fresh
database bench_<pid> is created and dropped). `--small 200 --large 2000` for a quick try;
`--strict` exits 1 when a ratio is missed too.
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from common import (
    BENCH_PASSWORD,
    QueryCounter,
    Stopwatch,
    analyze,
    bulk_insert,
    create_bench_app,
    fresh_database_url,
    load_patient_accounts,
    machine_load,
    next_id,
    reset_sequences,
)
from fair import MIN_ROUNDS, print_summary
from flask import Flask, url_for
from served import PageProbe, Served, check_statements, compare_pages, served_env

PROBE_DOCUMENTS = 50
CENTRES = 10  # the Doctor's centre is the first: a tenth of the patients are in its scope

# Endpoints of the pages under test (FAB endpoint = "<ViewClass>.<method>").
STAFF_PATIENT_LIST = "PatientStaffView.list"
MY_DOCUMENTS = "MyDocumentView.list"

DOC_NAMES = ["Выписка", "Заключение", "УЗИ сердца", "Анализы крови", "ЭКГ", "МРТ"]

# Every NOT NULL column is given explicitly: COPY applies no Python-side defaults.
CONSULTATION_COLUMNS = (
    "id public_id number kind status patient_id center_id diagnosis_text complaints question "
    "staff_message mode duration_minutes reject_reason cancel_reason created_at submitted_at"
).split()
DOCUMENT_COLUMNS = (
    "id public_id patient_id document_type_id storage_key original_name content_type size_bytes "
    "sha256 document_date note uploaded_by_id uploaded_at"
).split()


@dataclass
class World:
    """What the loader needs to keep between the two sizes."""

    patient_role_id: int
    document_type_ids: list[int]
    centre_ids: list[int]
    probe_username: str = ""
    patients: int = 0
    documents: int = 0


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def set_up_world(app: Flask) -> World:
    """Roles, catalogue, centres, one Manager and one Doctor: through the real services."""
    from app.accounts import create_doctor, create_manager, get_role
    from app.catalogue import load_catalogue
    from app.demo import ensure_roles
    from app.extensions import db
    from app.permissions import PATIENT
    from models import MedicalCenter

    with app.app_context():
        ensure_roles()
        types = load_catalogue()
        centres = [
            MedicalCenter(name=f"Центр №{i}", profile="cardiology", region="Москва")
            for i in range(1, CENTRES + 1)
        ]
        db.session.add_all(centres)
        db.session.flush()
        create_manager(
            username="bench-manager",
            password=BENCH_PASSWORD,
            first_name="Анна",
            last_name="Менеджерова",
            email="bench-manager@example.org",
        )
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
        world = World(
            patient_role_id=get_role(PATIENT).id,
            document_type_ids=sorted(t.id for t in types.values()),
            centre_ids=[c.id for c in centres],
        )
        db.session.commit()
    return world


def load_patients(app: Flask, world: World, *, patients: int, documents: int) -> None:
    """Add `patients` patients (user, role link, patient, one consultation each) and
    `documents` documents. The very first patient loaded is the probe with 50 documents.
    """
    from app.accounts import hash_password
    from app.extensions import db
    from models import allocate_consultation_numbers

    rng = random.Random(20261122 + world.patients)  # reproducible figures run to run
    now = datetime.now(UTC)
    with app.app_context(), db.engine.begin() as conn:
        # One hash for everybody, computed once: hashing per row would dominate the load time.
        password_hash = hash_password(BENCH_PASSWORD)
        first_n = world.patients  # running patient number: phones and e-mails stay unique
        # Read before the patients go in: the loader below takes the next ids itself.
        doc0, consultation0 = next_id(conn, "medical_document"), next_id(conn, "consultation")
        patient0 = load_patient_accounts(
            conn, count=patients, first_n=first_n, role_id=world.patient_role_id,
            password_hash=password_hash, phone_prefix="+7900", email_prefix="bench",
            patronymic="Бенчевич", now=now,
        )  # fmt: skip

        numbers = allocate_consultation_numbers(conn, patients)  # COPY sets no default

        def consultation_rows() -> Iterator[tuple]:
            for i in range(patients):
                submitted = now - timedelta(hours=rng.randint(1, 24 * 365))
                yield (
                    consultation0 + i,
                    uuid.uuid4(),
                    numbers[i],
                    "centre_request",
                    rng.choice(("requested", "scheduled", "completed")),
                    patient0 + i,
                    world.centre_ids[(first_n + i) % CENTRES],
                    "",
                    "",
                    "",
                    "",
                    "video",
                    30,
                    "",
                    "",
                    submitted,
                    submitted,
                )

        bulk_insert(conn, "consultation", CONSULTATION_COLUMNS, consultation_rows())

        # Who owns each document: the probe first (once, in the first batch), then round robin.
        owners: list[int] = []
        others = list(range(patient0, patient0 + patients))
        if world.patients == 0:
            world.probe_username = f"+7900{0:07d}"
            owners = [patient0] * PROBE_DOCUMENTS
            others = others[1:]
        owners += [others[k % len(others)] for k in range(documents - len(owners))]

        def document_rows() -> Iterator[tuple]:
            for k, owner in enumerate(owners):
                uploaded = now - timedelta(minutes=rng.randint(1, 60 * 24 * 730))
                yield (
                    doc0 + k,
                    uuid.uuid4(),
                    owner,
                    world.document_type_ids[k % 8],
                    uuid.uuid4().hex,
                    f"{DOC_NAMES[k % 6]} {k}.pdf",
                    "application/pdf",
                    40_000 + k % 1000,
                    f"{k:064x}",
                    uploaded.date(),
                    "",
                    None,
                    uploaded,
                )

        bulk_insert(conn, "medical_document", DOCUMENT_COLUMNS, document_rows())
        reset_sequences(
            conn, ("ab_user", "ab_user_role", "patient", "consultation", "medical_document")
        )
    with app.app_context(), db.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            analyze(conn)
    world.patients += patients
    world.documents += documents


# ---------------------------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------------------------


def _contains(*needles: str) -> Callable[[str], None]:
    def check(body: str) -> None:
        missing = [n for n in needles if n not in body]
        if missing:
            raise RuntimeError(f"the page does not show {missing!r}: is it the right page?")

    return check


DOC_NAME_RE = re.compile(r"(?:" + "|".join(map(re.escape, DOC_NAMES)) + r") (\d+)\.pdf")


def _only_probe_documents(body: str) -> None:
    """The page lists documents, and only the probe's (numbered below 50 by the loader)."""
    numbers = [int(n) for n in DOC_NAME_RE.findall(body)]
    if not numbers:
        raise RuntimeError("«Мои документы» shows no document: is it the right page?")
    if max(numbers) >= PROBE_DOCUMENTS:
        raise RuntimeError("«Мои документы» shows another patient's document: scope broken")


def build_probes(app: Flask, world: World) -> list[PageProbe]:
    with app.test_request_context():
        staff_list = url_for(STAFF_PATIENT_LIST)
        documents = url_for(MY_DOCUMENTS)
    return [
        PageProbe(
            "staff-manager", "staff patient list (Manager)", staff_list, "bench-manager",
            _contains("Бенчевич"),
        ),
        PageProbe(
            "staff-doctor", "staff patient list (Doctor)", staff_list, "bench-doctor",
            _contains("Бенчевич"),
        ),
        PageProbe(
            "documents", "Мои документы (Patient)", documents, world.probe_username,
            _only_probe_documents,
        ),
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", type=int, default=1_000, help="patients, first size")
    parser.add_argument("--large", type=int, default=100_000, help="patients, second size")
    parser.add_argument("--docs-per-patient", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=MIN_ROUNDS, help="alternated rounds")
    parser.add_argument("--requests", type=int, default=20, help="GETs per page and round")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a ratio is missed")
    args = parser.parse_args(argv)
    if args.large <= args.small:
        parser.error("--large must be bigger than --small")

    with fresh_database_url() as url, tempfile.TemporaryDirectory() as storage:
        backend = url.split(":", 1)[0]
        print(f"bench_page_queries: {backend}, over HTTP (gunicorn), service vs plain view")
        with Stopwatch("migrating a fresh database"):
            app = create_bench_app(url, storage)
        from app.extensions import db

        with app.app_context():
            counter = QueryCounter(db.engine)
        env = served_env(url, storage)
        captured, comparisons = [], []
        try:
            with Stopwatch("accounts, centres, catalogue"):
                world = set_up_world(app)
            probes = []
            with Served("served:service_app()", env) as service_url:
                for size in (args.small, args.large):
                    more = size - world.patients
                    more_docs = size * args.docs_per_patient - world.documents
                    with Stopwatch(f"loading {more:,} patients, {more_docs:,} documents"):
                        load_patients(app, world, patients=more, documents=more_docs)
                    probes = probes or build_probes(app, world)
                    print(f"\n{world.patients:,} patients, {world.documents:,} documents")
                    pages, compared = compare_pages(
                        app, counter, probes, service_url=service_url, env=env,
                        workdir=Path(storage), rounds=args.rounds, requests=args.requests,
                    )  # fmt: skip
                    captured.append(pages)
                    comparisons += compared
                    print(f"  {machine_load()}")
        finally:
            counter.close()
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
