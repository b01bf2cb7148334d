"""The service's side of the referral import bench (one subprocess: `bench_referral_import.py
--child pipeline`): the upload and the confirmation through the real views, signed in as a
Manager (Flask's test client; the Huey task runs inline), timed, its statements counted and its
memory peaks taken per phase. Optionally under cProfile (`--profile`).
"""

from __future__ import annotations

import gc
import io
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import QueryCounter, create_bench_app, fresh_database_url, login
from flask import url_for
from referral_data import set_up_world
from referral_probes import RssPeak, _counts

# ---------------------------------------------------------------------------------------------
# The pipeline (child)
# ---------------------------------------------------------------------------------------------


def child_pipeline(rows: int, path: Path, *, traced: bool, profile: bool) -> dict[str, Any]:
    import tracemalloc

    from app.extensions import db

    with fresh_database_url() as url, tempfile.TemporaryDirectory() as storage:
        app = create_bench_app(url, storage)
        try:
            set_up_world(app)
            with app.app_context():
                # Not the parameters: a bulk insert's are every row of the file, and the
                # bench's copy of them would count in the pipeline's memory peak.
                counter = QueryCounter(db.engine, keep_parameters=False)
            client = app.test_client()
            login(client, "bench-manager")
            with app.test_request_context():
                upload_url = url_for("ReferralImportView.upload")
            data = path.read_bytes()  # the upload's bytes: read before measuring
            profiler = None
            if profile:
                import cProfile

                profiler = cProfile.Profile()
            gc.collect()
            if traced:
                tracemalloc.start()
            with RssPeak() as rss:
                if profiler:
                    profiler.enable()
                with counter.counting() as statements:
                    t0, c0 = time.perf_counter(), time.process_time()
                    r = client.post(
                        upload_url,
                        data={"file": (io.BytesIO(data), "направления.xlsx")},
                        content_type="multipart/form-data",
                    )
                    t1, c1 = time.perf_counter(), time.process_time()
                preview_sql, preview_statements = counter.sql_seconds, len(statements)
                # Each phase's own peak (both from the same starting point): which one holds it.
                preview_rss = rss.peak_kib() * 1024
                rss.reset_peak()
                preview_traced = tracemalloc.get_traced_memory()[1] if traced else 0
                if traced:
                    tracemalloc.reset_peak()
                if r.status_code not in (302, 303) or "/referrals/" not in r.location:
                    raise RuntimeError(f"upload answered {r.status_code} → {r.location!r}")
                confirm_url = r.location.rstrip("/") + "/confirm"
                with counter.counting() as statements:
                    t2, c2 = time.perf_counter(), time.process_time()
                    r = client.post(confirm_url)
                    t3, c3 = time.perf_counter(), time.process_time()
                import_sql, import_statements = counter.sql_seconds, len(statements)
                if profiler:
                    profiler.disable()
                import_rss = rss.peak_kib() * 1024
            import_traced = tracemalloc.get_traced_memory()[1] if traced else 0
            if traced:
                tracemalloc.stop()
            if r.status_code not in (302, 303):
                raise RuntimeError(f"confirm answered {r.status_code}")
            counter.close()
            counts = _counts(app)
            if profiler:
                _print_profile(profiler)
        finally:
            with app.app_context():
                db.session.remove()
                db.engine.dispose()
    return {
        "rows": rows,
        "preview_s": t1 - t0,
        "import_s": t3 - t2,
        "seconds": (t1 - t0) + (t3 - t2),
        "cpu_s": (c1 - c0) + (c3 - c2),
        "preview_sql_s": preview_sql,
        "import_sql_s": import_sql,
        "preview_statements": preview_statements,
        "import_statements": import_statements,
        "peak_rss": max(preview_rss, import_rss),
        "peak_traced": max(preview_traced, import_traced),
        "preview_rss": preview_rss,
        "import_rss": import_rss,
        "preview_traced": preview_traced,
        "import_traced": import_traced,
        "counts": counts,
        "file_bytes": len(data),
    }


def _print_profile(profiler: Any) -> None:
    import pstats

    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("cumulative").print_stats(45)
    stats.sort_stats("tottime").print_stats(30)
    print(out.getvalue(), file=sys.stderr)
