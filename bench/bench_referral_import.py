"""Bench: the referral import (issue 4) — a 10,000-row XLSX to accounts, consultations and SMS.

What the manager triggers, through the real views (Flask's test client, signed in as a Manager):
the upload (`validate_upload`: read the file, check every row, store the preview) and the
confirmation (`start_import`, then the Huey task `import_referrals`, which runs inline here: the
bench app runs the queue in immediate mode, so `run_import` goes to completion in the request).
Afterwards the counts are checked: one account (user + Patient role), one patient, one referral
consultation and one invitation SMS in the outbox per row, the import `done` with no error rows.

Baseline: the same file read with openpyxl in read-only mode (streamed) and the same rows bulk
inserted with SQLAlchemy Core executemany (ab_user, ab_user_role, patient, consultation,
outbound_message; ids come back with RETURNING, batched), one transaction per 1,000 rows.

Targets: rows per second of the pipeline ≥ 0.5 × the baseline's (bench/fair.py: alternated
rounds, median of the per-round ratios, at both sizes); peak memory at 10,000 rows ≤ 1.3 × the
peak at 1,000 rows. Every measurement runs in its own subprocess on its own fresh database
(PostgreSQL bench_<pid> with DATABASE_URL, else SQLite in a temporary folder), so the peaks are
comparable: once untraced (wall clock, statements, and the peak resident set above the start),
once under tracemalloc (peak Python allocation; its timing is not used). The uploaded bytes are
read before measuring starts and count in neither peak.

Run: `.venv/bin/python bench/bench_referral_import.py` (`--small N`, `--large N`, `--rounds N`,
`--strict` exits 1 when a target is missed, `--profile` adds a cProfile of the large pipeline).

Where the parts are: `referral_data.py` (the file and the world, the same for both sides),
`referral_pipeline.py` (the service's side: the views), `referral_baseline.py` (what it is
measured against: openpyxl + Core executemany), `referral_probes.py` (the memory peak and the
row counts both sides report); this script runs the rounds in subprocesses, checks the counts and
prints the verdicts.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import machine_load, short_count
from fair import MIN_ROUNDS, Comparison, compare, print_summary
from referral_baseline import child_baseline
from referral_data import SIGN_IN_URL, _catalogue_codes, build_xlsx
from referral_pipeline import child_pipeline

SPEED_TARGET = 0.5  # pipeline rows/s ÷ baseline rows/s, at the large size
MEMORY_TARGET = 1.3  # peak at the large size ÷ peak at the small size


# ---------------------------------------------------------------------------------------------
# The parent: files, one subprocess per measurement, the table
# ---------------------------------------------------------------------------------------------


def _run_child(args: list[str]) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.stderr.strip() and "--profile" in args:
        print(proc.stderr)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    tail = [line[:300] for line in (proc.stdout + proc.stderr).splitlines()[-40:]]
    print("\n".join(tail), file=sys.stderr)
    raise RuntimeError(f"child {' '.join(args)} failed (exit {proc.returncode})")


def _check_counts(label: str, result: dict[str, Any], rows: int, *, pipeline: bool) -> list[str]:
    c = result["counts"]
    problems = [
        f"{label}: {what} {c[what]:,} ≠ {rows:,}"
        for what in ("users", "patient_role", "patients", "consultations", "sms")
        if c[what] != rows
    ]
    if pipeline:
        imp = c.get("import") or {}
        expected = {"status": "done", "total": rows, "valid": rows, "errors": 0, "imported": rows}
        for key, value in expected.items():
            if imp.get(key) != value:
                problems.append(f"{label}: import {key} {imp.get(key)!r} ≠ {value!r}")
        body = c["sms_sample"]
        if "+7912" not in body or SIGN_IN_URL not in body:
            problems.append(f"{label}: the SMS lacks the login or the address: {body!r}")
        if any(code in body for code in _catalogue_codes()):
            problems.append(f"{label}: the SMS names a diagnosis: {body!r}")
    return problems


@dataclass
class SizeFigures:
    rows: int
    comparison: Comparison  # alternated rounds: pipeline rows/s against the baseline's
    pipeline: dict[str, Any]  # the round with the median time: its details are printed
    pipeline_traced: dict[str, Any]
    baseline: dict[str, Any]
    baseline_traced: dict[str, Any]
    runs: dict[str, list[dict[str, Any]]]  # every untraced run, to check its counts


def _mib(n: float) -> str:
    return f"{n / 1024 / 1024:.1f}"


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]


def measure_size(rows: int, path: Path, *, rounds: int) -> SizeFigures:
    print(f"\n{rows:,} rows ({path.stat().st_size / 1024:.0f} KiB XLSX)", flush=True)
    runs: dict[str, list[dict[str, Any]]] = {"pipeline": [], "baseline": []}

    def side(key: str) -> Any:
        def one_round() -> float:
            start = time.perf_counter()
            result = _run_child([key, "--rows", str(rows), "--file", str(path)])
            runs[key].append(result)
            print(f"  {key:<16} subprocess {time.perf_counter() - start:5.1f} s", flush=True)
            return rows / result["seconds"]

        return one_round

    comparison = compare(
        f"referral import, {rows:,} rows (upload + confirm vs openpyxl + executemany)",
        side("pipeline"),
        side("baseline"),
        unit="rows/s",
        target=SPEED_TARGET,
        higher_is_better=True,
        rounds=rounds,
    )
    traced = {}
    for key in ("pipeline", "baseline"):
        start = time.perf_counter()
        traced[key] = _run_child([key, "--traced", "--rows", str(rows), "--file", str(path)])
        print(f"  {key + ' traced':<16} subprocess {time.perf_counter() - start:5.1f} s")
    f = SizeFigures(
        rows,
        comparison,
        _median_run(runs["pipeline"]),
        traced["pipeline"],
        _median_run(runs["baseline"]),
        traced["baseline"],
        runs,
    )
    p = f.pipeline
    print(
        f"  pipeline: preview {p['preview_s']:.2f} s ({p['preview_statements']:,} statements, "
        f"SQL {p['preview_sql_s']:.2f} s), import {p['import_s']:.2f} s "
        f"({p['import_statements']:,} statements = {p['import_statements'] / rows:.1f} a row, "
        f"SQL {p['import_sql_s']:.2f} s)"
    )
    t = f.pipeline_traced
    print(
        f"  pipeline peaks (MiB): preview {_mib(t['preview_traced'])} traced / "
        f"{_mib(p['preview_rss'])} resident, import {_mib(t['import_traced'])} traced / "
        f"{_mib(p['import_rss'])} resident"
    )
    print(
        f"  baseline: {f.baseline['seconds']:.2f} s;  CPU of the bench process: pipeline "
        f"{p['cpu_s']:.2f} s, baseline {f.baseline['cpu_s']:.2f} s;  {machine_load()}"
    )
    return f


def print_memory(small: SizeFigures, large: SizeFigures) -> list[str]:
    misses: list[str] = []
    print(f"\nPeak memory, {large.rows:,} / {small.rows:,} rows (target ≤ {MEMORY_TARGET}×)")
    header = (
        f"  {'peak memory (MiB)':<34} {short_count(small.rows):>7} {short_count(large.rows):>8} "
        f"{'ratio':>6}  verdict"
    )
    print(header)
    print("  " + "-" * (len(header) - 2))
    for label, key, field, held in (
        ("pipeline, tracemalloc peak", "pipeline_traced", "peak_traced", True),
        ("pipeline, resident set peak Δ", "pipeline", "peak_rss", True),
        ("baseline, tracemalloc peak", "baseline_traced", "peak_traced", False),
        ("baseline, resident set peak Δ", "baseline", "peak_rss", False),
    ):
        a = getattr(small, key)[field]
        b = getattr(large, key)[field]
        ratio = b / a if a else float("inf")
        if held:
            ok = ratio <= MEMORY_TARGET
            verdict = "ok" if ok else f"TARGET MISSED: {ratio:.2f} > {MEMORY_TARGET}"
            if not ok:
                misses.append(f"{label}: {ratio:.2f}× > {MEMORY_TARGET}×")
        else:
            verdict = "(for reference)"
        print(f"  {label:<34} {_mib(a):>7} {_mib(b):>8} {ratio:>6.2f}  {verdict}")
    return misses


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", type=int, default=1_000, help="rows, small file")
    parser.add_argument("--large", type=int, default=10_000, help="rows, large file")
    parser.add_argument("--rounds", type=int, default=MIN_ROUNDS, help="alternated rounds (≥ 5)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--profile", action="store_true", help="cProfile the large pipeline")
    parser.add_argument("--child", choices=("pipeline", "baseline"), help=argparse.SUPPRESS)
    parser.add_argument("--traced", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child == "pipeline":
        result = child_pipeline(args.rows, args.file, traced=args.traced, profile=args.profile)
        print("RESULT " + json.dumps(result))
        return 0
    if args.child == "baseline":
        result = child_baseline(args.rows, args.file, traced=args.traced)
        print("RESULT " + json.dumps(result))
        return 0
    if args.large <= args.small:
        parser.error("--large must be bigger than --small")

    backend = (
        "postgresql" if os.environ.get("DATABASE_URL", "").startswith("postgres") else "sqlite"
    )
    print(
        f"bench_referral_import: {backend}; upload + confirm through the views (Huey immediate), "
        "against openpyxl read-only + Core executemany; one subprocess and fresh database each"
    )
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="oblako-bench-xlsx-") as tmp:
        codes = _catalogue_codes()
        figures = []
        for rows in (args.small, args.large):
            path = Path(tmp) / f"referrals-{rows}.xlsx"
            build_xlsx(path, rows, codes)
            figures.append(measure_size(rows, path, rounds=args.rounds))
            f = figures[-1]
            for key in ("pipeline", "baseline"):
                for run in f.runs[key]:
                    problems += _check_counts(
                        f"{key} {rows:,}", run, rows, pipeline=key == "pipeline"
                    )
            problems += _check_counts(
                f"pipeline (traced) {rows:,}", f.pipeline_traced, rows, pipeline=True
            )
        if args.profile:
            print(f"\ncProfile of the {args.large:,}-row pipeline (upload + confirm):")
            _run_child(
                [
                    "pipeline",
                    "--profile",
                    "--rows",
                    str(args.large),
                    "--file",
                    str(Path(tmp) / f"referrals-{args.large}.xlsx"),
                ]
            )
    small, large = figures
    print(
        f"\nChecked after each run: {large.rows:,} accounts (user + Patient role), patients, "
        "referral consultations awaiting documents, queued SMS; import done, no error rows."
    )
    misses = print_memory(small, large)
    speed_missed = print_summary([small.comparison, large.comparison])
    if problems:
        print("\nCOUNTS WRONG:\n  - " + "\n  - ".join(problems))
        return 1
    if misses or speed_missed:
        print("\nTargets missed:\n  - " + "\n  - ".join(misses or ["speed (above)"]))
        return 1 if args.strict else 0
    print("\nNo target missed (a comparison without a verdict says so above).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
