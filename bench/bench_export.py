"""Bench: exporting the consultations report (CSV and XLSX) at 10,000 and 1,000,000 rows.

Through the real app (the manager signed in, GET /reports/consultations/export.csv|xlsx with a
period covering every row, the response consumed chunk by chunk as a client would), it measures
per size and format:

  rows/s       the export's rows over the wall-clock time of the whole request
  baseline     the same SQL statement (caught as the export sent it) read from a raw DB-API
               cursor (a named server-side cursor on PostgreSQL, fetchmany on SQLite) into
               csv.writer — the fastest a CSV of this query can be; for XLSX also the same
               cursor into openpyxl's write-only workbook with plain values
  peak memory  tracemalloc's peak during the request (a second run: tracing slows it down),
               and the process's peak resident set during it (sampled /proc/self/statm)

Targets (issue 6): peak memory at the large size within 1.3× of the small size's; CSV rows/s at
least 0.5 of the raw-cursor baseline (bench/fair.py: alternated rounds, median of the per-round
ratios, at both sizes). The XLSX export is compared the same way with openpyxl's plain write
(no target), at the small size only unless `--xlsx-rounds-at-large` (a million-row XLSX takes
minutes a round).

Run: `.venv/bin/python bench/bench_export.py` (SQLite file in a temp folder; DATABASE_URL picks
PostgreSQL: a fresh database beside it). Sizes: `--small 10000 --large 1000000`; `--no-xlsx`
skips the XLSX exports (the slow part), `--no-trace` skips the tracemalloc runs, `--rounds N`.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import random
import sys
import tempfile
import threading
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from common import (
    BENCH_PASSWORD,
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
from fair import MIN_ROUNDS, Comparison, compare, print_summary

PATIENTS = 2_000
CENTRES = 4
DOCTORS = 20
CONSULTATION_COLUMNS = (
    "id public_id number kind status patient_id center_id doctor_id disease_id diagnosis_text "
    "complaints question staff_message mode scheduled_at duration_minutes due_by reject_reason "
    "cancel_reason created_at submitted_at scheduled_set_at completed_at"
).split()
KINDS = ("centre_request", "centre_request", "referral", "duty")
STATUSES = ("requested", "scheduled", "completed", "completed", "cancelled", "missed")
PAGE = 4096
CSV_TARGET = 0.5  # the report's CSV rows/s ÷ the raw cursor's into csv.writer
MEMORY_TARGET = 1.3  # peak at the large size ÷ peak at the small size


@dataclass
class World:
    patient_role_id: int
    centre_ids: list[int]
    doctor_ids: list[int]
    first_patient: int
    rows: int = 0


def set_up(app) -> World:
    from sqlalchemy import select

    from app.accounts import create_doctor, create_user, get_role, hash_password
    from app.demo import ensure_roles
    from app.extensions import db
    from app.permissions import MANAGER, PATIENT
    from models import Doctor, MedicalCenter

    with app.app_context():
        ensure_roles()
        centres = [
            MedicalCenter(name=f"Центр №{i}", profile="cardiology", region="Москва")
            for i in range(1, CENTRES + 1)
        ]
        db.session.add_all(centres)
        db.session.flush()
        for i in range(DOCTORS):
            create_doctor(
                username=f"bench-doctor-{i}", password=BENCH_PASSWORD, surname=f"Врачев{i}",
                name="Пётр", patronymic="Ильич", specialty="Кардиолог",
                email=f"bench-doctor-{i}@example.org", center_id=centres[i % CENTRES].id,
                is_duty=False,
            )  # fmt: skip
        create_user(
            username="bench-manager", password=BENCH_PASSWORD, role_names=[MANAGER],
            first_name="Мария", last_name="Менеджерова", email="bench-manager@example.org",
        )  # fmt: skip
        db.session.commit()
        doctor_ids = sorted(db.session.execute(select(Doctor.id)).scalars())
        role_id = get_role(PATIENT).id
        centre_ids = [c.id for c in centres]
        with db.engine.begin() as conn:
            first_patient = load_patient_accounts(
                conn, count=PATIENTS, first_n=0, role_id=role_id,
                password_hash=hash_password(BENCH_PASSWORD), phone_prefix="+7902",
                email_prefix="export", patronymic="Выгрузкович", now=datetime.now(UTC),
            )  # fmt: skip
            reset_sequences(conn, ("ab_user", "ab_user_role", "patient"))
    return World(role_id, centre_ids, doctor_ids, first_patient)


def load_consultations(app, world: World, count: int) -> None:
    from app.extensions import db
    from models import allocate_consultation_numbers

    rng = random.Random(20261125 + world.rows)
    now = datetime.now(UTC)
    with app.app_context(), db.engine.begin() as conn:
        first = next_id(conn, "consultation")
        numbers = allocate_consultation_numbers(conn, count)  # COPY sets no default

        def rows() -> Iterator[tuple]:
            for i in range(count):
                n = world.rows + i
                kind, status = KINDS[n % 4], STATUSES[n % 6]
                created = now - timedelta(minutes=rng.randint(60, 60 * 24 * 300))
                doctor = None if status == "requested" else world.doctor_ids[n % DOCTORS]
                scheduled_set = None if doctor is None else created + timedelta(hours=n % 120)
                scheduled = None if doctor is None else created + timedelta(days=5)
                completed = scheduled + timedelta(minutes=30) if status == "completed" else None
                # One in fifty complaints looks like a formula: the exports must neutralise it.
                complaints = "=1+1" if n % 50 == 0 else "Одышка при нагрузке"
                yield (
                    first + i, uuid.uuid4(), numbers[i], kind, status,
                    world.first_patient + n % PATIENTS,
                    None if kind == "duty" else world.centre_ids[n % CENTRES], doctor, None,
                    "", complaints, "", "", "video", scheduled, 30,
                    None if kind == "duty" else created + timedelta(days=3), "",
                    "Пациент передумал" if status == "cancelled" else "", created, created,
                    scheduled_set, completed,
                )  # fmt: skip

        bulk_insert(conn, "consultation", CONSULTATION_COLUMNS, rows())
        reset_sequences(conn, ("consultation",))
        if conn.dialect.name == "postgresql":
            analyze(conn)
    world.rows += count


# ---------------------------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------------------------


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class RssSampler:
    """The highest resident set seen while active (a thread samples every 20 ms)."""

    def __init__(self) -> None:
        self.start = rss_bytes()
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss_bytes())

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.start) / 1e6


@dataclass
class Run:
    seconds: float
    rows: int
    bytes: int
    peak_mb: float | None = None
    rss_peak_mb: float | None = None

    @property
    def rate(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


def traced(fn: Callable[[], Run]) -> tuple[float, float]:
    """(tracemalloc peak MB, peak resident set MB of the process) of one more call of fn."""
    import gc

    gc.collect()
    tracemalloc.start()
    tracemalloc.reset_peak()
    with RssSampler() as rss:
        fn()
    _current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 1e6, rss.peak / 1e6


def export_via_app(client, fmt: str, query: str, expected_rows: int) -> Run:
    start = time.perf_counter()
    response = client.get(f"/reports/consultations/export.{fmt}?{query}", buffered=False)
    if response.status_code != 200:
        raise RuntimeError(f"export {fmt} answered {response.status_code}")
    size = 0
    newlines = 0
    for chunk in response.response:
        size += len(chunk)
        if fmt == "csv":
            newlines += chunk.count(b"\r\n")
    response.close()
    seconds = time.perf_counter() - start
    if fmt == "csv" and newlines - 1 != expected_rows:
        raise RuntimeError(f"CSV has {newlines - 1} rows, expected {expected_rows}")
    return Run(seconds, expected_rows, size)


class StatementCatcher:
    """The export's own SELECT as it reached the driver (statement and parameters)."""

    def __init__(self, engine) -> None:
        from sqlalchemy import event

        self.engine = engine
        self.caught: tuple[str, object] | None = None
        event.listen(engine, "before_cursor_execute", self._before)

    def _before(self, conn, cursor, statement, parameters, context, executemany) -> None:
        if "FROM consultation" in statement and "ORDER BY consultation.id" in statement:
            self.caught = (statement, parameters)

    def close(self) -> None:
        from sqlalchemy import event

        event.remove(self.engine, "before_cursor_execute", self._before)


def raw_rows(engine, statement: str, parameters) -> Iterator[tuple]:
    raw = engine.raw_connection()
    try:
        if engine.dialect.name == "postgresql":
            cursor = raw.driver_connection.cursor(name="bench_baseline")
            cursor.itersize = 1000
        else:
            cursor = raw.cursor()
        cursor.execute(statement, parameters)
        while rows := cursor.fetchmany(1000):
            yield from rows
        cursor.close()
    finally:
        raw.close()


def baseline_csv(engine, caught) -> Run:
    start = time.perf_counter()
    out = io.StringIO()
    writer = csv.writer(out, delimiter=";", lineterminator="\r\n")
    rows = size = 0
    for row in raw_rows(engine, *caught):
        writer.writerow(row)
        rows += 1
        if rows % 1000 == 0:
            size += len(out.getvalue().encode())
            out.seek(0)
            out.truncate()
    size += len(out.getvalue().encode())
    return Run(time.perf_counter() - start, rows, size)


def baseline_xlsx(engine, caught) -> Run:
    from openpyxl import Workbook

    start = time.perf_counter()
    wb = Workbook(write_only=True)
    ws = wb.create_sheet("baseline")
    rows = 0
    for row in raw_rows(engine, *caught):
        ws.append([v if isinstance(v, (str, int, float)) or v is None else str(v) for v in row])
        rows += 1
    with tempfile.TemporaryFile() as fh:
        wb.save(fh)
        size = fh.tell()
    return Run(time.perf_counter() - start, rows, size)


def measure(
    app,
    client,
    world: World,
    query: str,
    *,
    formats: list[str],
    trace: bool,
    rounds: int,
    xlsx_rounds: bool,
) -> tuple[dict[str, Run], list[Comparison]]:
    """One run of each export (figures, memory when traced), then the fair comparisons: CSV
    against the raw cursor into csv.writer; XLSX against the raw cursor into openpyxl's
    write-only workbook with plain values (no target: information), when `xlsx_rounds`."""
    from app.extensions import db

    with app.app_context():
        engine = db.engine
    catcher = StatementCatcher(engine)
    results: dict[str, Run] = {}
    try:
        for fmt in formats:
            run = export_via_app(client, fmt, query, world.rows)
            if trace:
                run.peak_mb, run.rss_peak_mb = traced(
                    lambda fmt=fmt: export_via_app(client, fmt, query, world.rows)
                )
            results[fmt] = run
    finally:
        catcher.close()
    caught = catcher.caught
    if caught is None:
        raise RuntimeError("the export's statement was not caught")
    base = baseline_csv(engine, caught)
    if trace:
        base.peak_mb, base.rss_peak_mb = traced(lambda: baseline_csv(engine, caught))
    results["baseline csv"] = base
    if "xlsx" in formats:
        results["baseline xlsx"] = baseline_xlsx(engine, caught)
    for name, run in results.items():
        if run.rows != world.rows:
            raise RuntimeError(f"{name}: {run.rows} rows, expected {world.rows}")

    def checked(run: Run) -> float:
        if run.rows != world.rows:
            raise RuntimeError(f"{run.rows} rows, expected {world.rows}")
        return run.rate

    comparisons = [
        compare(
            f"CSV export, {world.rows:,} rows: rows/s, the report vs raw cursor → csv.writer",
            lambda: checked(export_via_app(client, "csv", query, world.rows)),
            lambda: checked(baseline_csv(engine, caught)),
            unit="rows/s",
            target=CSV_TARGET,
            higher_is_better=True,
            rounds=rounds,
        )
    ]
    if "xlsx" in formats and xlsx_rounds:
        comparisons.append(
            compare(
                f"XLSX export, {world.rows:,} rows: rows/s, the report vs raw cursor → "
                "openpyxl write-only, plain values",
                lambda: checked(export_via_app(client, "xlsx", query, world.rows)),
                lambda: checked(baseline_xlsx(engine, caught)),
                unit="rows/s",
                target=None,
                higher_is_better=True,
                rounds=rounds,
            )
        )
    return results, comparisons


def print_size(rows: int, results: dict[str, Run], comparisons: list[Comparison]) -> None:
    print(f"\n{rows:,} consultations")
    print(f"  {'export':<15}{'seconds':>9}{'rows/s':>11}{'MB out':>9}{'peak MB':>10}{'RSS MB':>9}")
    for name, r in results.items():
        peak = f"{r.peak_mb:10.2f}" if r.peak_mb is not None else f"{'—':>10}"
        rss = f"{r.rss_peak_mb:9.1f}" if r.rss_peak_mb is not None else f"{'—':>9}"
        print(f"  {name:<15}{r.seconds:9.2f}{r.rate:11,.0f}{r.bytes / 1e6:9.1f}{peak}{rss}")
    for comparison in comparisons:
        print(f"  {comparison.report()}")
    print(f"  {machine_load()}")


def memory_summary(
    small: dict[str, Run], large: dict[str, Run], sizes: tuple[int, int]
) -> list[str]:
    misses: list[str] = []
    print(f"\nPeak memory ({sizes[0]:,} → {sizes[1]:,} rows; target: ratio ≤ {MEMORY_TARGET})")
    for fmt in ("csv", "xlsx"):
        if fmt not in large:
            continue
        s, big = small[fmt], large[fmt]
        if s.peak_mb and big.peak_mb:
            ratio = big.peak_mb / s.peak_mb
            verdict = "ok" if ratio <= MEMORY_TARGET else "MISSED"
            print(
                f"  {fmt}: tracemalloc peak {s.peak_mb:.2f} → {big.peak_mb:.2f} MB "
                f"(×{ratio:.2f}) {verdict}; process RSS peak {s.rss_peak_mb:.1f} → "
                f"{big.rss_peak_mb:.1f} MB (×{big.rss_peak_mb / s.rss_peak_mb:.2f})"
            )
            if ratio > MEMORY_TARGET:
                misses.append(f"{fmt} peak memory ×{ratio:.2f} > {MEMORY_TARGET}")
    return misses


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument("--no-xlsx", action="store_true", help="CSV only")
    parser.add_argument("--no-trace", action="store_true", help="skip the tracemalloc runs")
    parser.add_argument("--rounds", type=int, default=MIN_ROUNDS, help="alternated rounds")
    parser.add_argument(
        "--xlsx-rounds-at-large",
        action="store_true",
        help="compare XLSX at the large size too (else at the small size only: slow)",
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    if args.large <= args.small:
        parser.error("--large must be bigger than --small")
    formats = ["csv"] if args.no_xlsx else ["csv", "xlsx"]
    trace = not args.no_trace

    with fresh_database_url() as url, tempfile.TemporaryDirectory() as storage:
        backend = url.split(":", 1)[0]
        print(f"bench_export: {backend}, consultations report, formats {', '.join(formats)}")
        with Stopwatch("migrating a fresh database"):
            app = create_bench_app(url, storage)
        from app.extensions import db

        try:
            with Stopwatch(f"centres, {DOCTORS} doctors, {PATIENTS:,} patients, the manager"):
                world = set_up(app)
            with Stopwatch(f"loading {args.small:,} consultations"):
                load_consultations(app, world, args.small)
            client = app.test_client()
            login(client, "bench-manager")
            today = datetime.now(UTC).date()
            query = (
                f"date_from={(today - timedelta(days=400)).isoformat()}"
                f"&date_to={today + timedelta(days=1)}"
            )
            options = {"formats": formats, "trace": trace, "rounds": args.rounds}
            with Stopwatch("measuring"):
                small, comparisons = measure(app, client, world, query, **options, xlsx_rounds=True)
            print_size(world.rows, small, comparisons)
            with Stopwatch(f"loading {args.large - args.small:,} more consultations"):
                load_consultations(app, world, args.large - args.small)
            with Stopwatch("measuring"):
                large, more = measure(
                    app, client, world, query, **options, xlsx_rounds=args.xlsx_rounds_at_large
                )
            comparisons += more
            print_size(world.rows, large, more)
            misses = memory_summary(small, large, (args.small, args.large))
        finally:
            with app.app_context():
                db.session.remove()
                db.engine.dispose()
    missed = print_summary(comparisons)
    if misses or missed:
        print("\nTargets missed:\n  - " + "\n  - ".join(misses or ["speed (above)"]))
        return 1 if args.strict else 0
    print("\nNo target missed (a comparison without a verdict says so above).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
