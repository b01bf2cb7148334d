"""Background jobs on Huey: outbox every minute, reminders every 5, unconfirmed registrations
removed every 10, storage sweep every 15, and stalled referral imports resumed at start-up and
every minute (app/referrals/recovery.py).

The queue's storage comes from the environment, so `huey_consumer app.tasks.huey` and
`flask oblako worker` find the same one as the web app:

  HUEY_BACKEND=sqlite   instance/huey.db (embedded default; `make run` starts one worker)
  HUEY_BACKEND=redis    REDIS_URL (production; the default whenever REDIS_URL is set)
  HUEY_IMMEDIATE=1      tasks run inline in the caller, in memory (tests: OBLAKO_ENV=test)

A task runs inside a Flask app context: the caller's if it has one (immediate mode, CLI),
otherwise the worker process's own app, created once per process on first use.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from flask import Flask, has_app_context
from huey import Huey, MemoryHuey, RedisHuey, SqliteHuey, crontab
from huey import signals as huey_signals

import config as config_module
import logs

log = logging.getLogger(__name__)

T = TypeVar("T")


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def make_huey(env: Mapping[str, str] = os.environ) -> Huey:
    """The queue configured by the environment (see the module docstring)."""
    redis_url = env.get("REDIS_URL", "")
    backend = env.get("HUEY_BACKEND") or ("redis" if redis_url else "sqlite")
    immediate = _truthy(env.get("HUEY_IMMEDIATE")) or env.get("OBLAKO_ENV") == "test"
    name = env.get("HUEY_NAME", "oblako")
    if immediate:
        return MemoryHuey(name, immediate=True)
    if backend == "redis":
        if not redis_url:
            raise RuntimeError("HUEY_BACKEND=redis needs REDIS_URL")
        return RedisHuey(name, url=redis_url)
    if backend == "sqlite":
        path = Path(env.get("HUEY_SQLITE_PATH") or config_module.INSTANCE_DIR / "huey.db")
        path.parent.mkdir(parents=True, exist_ok=True)
        return SqliteHuey(name, filename=str(path))
    if backend == "memory":
        return MemoryHuey(name)
    raise RuntimeError(f"unknown HUEY_BACKEND {backend!r} (sqlite, redis)")


huey = make_huey()

# The request id travels in the job's payload: a job enqueued while a request (or a job) is
# handled carries its id as a keyword the worker takes off again before the task runs, and
# the worker's lines about the job (and the task's own) carry it. Periodic jobs have none.
REQUEST_ID_KWARG = "_request_id"
_job_log = logging.getLogger("oblako.job")


@huey.signal(huey_signals.SIGNAL_ENQUEUED)
def _payload_request_id(signal: str, task: Any, *args: Any) -> None:
    if request_id := logs.request_id_var.get():
        task.kwargs[REQUEST_ID_KWARG] = request_id


@huey.pre_execute()
def _job_started(task: Any) -> None:
    request_id = task.kwargs.pop(REQUEST_ID_KWARG, "") if task.kwargs else ""
    request_id = logs.clean_request_id(request_id)  # a periodic job gets one of its own
    task.oblako_request_token = logs.request_id_var.set(request_id)
    fields = {"task": task.name, "task_id": task.id, "event": "start"}
    _job_log.info("job", extra={"request_id": request_id, "fields": fields})


@huey.post_execute()
def _job_finished(task: Any, value: Any, exc: BaseException | None) -> None:
    _job_log.info(
        "job",
        extra={
            "request_id": logs.request_id_var.get(),
            "fields": {
                "task": task.name,
                "task_id": task.id,
                "event": "error" if exc else "done",
                "error": type(exc).__name__ if exc else None,
            },
        },
    )
    token = getattr(task, "oblako_request_token", None)
    if token is not None:
        try:
            logs.request_id_var.reset(token)
        except ValueError:  # set in another context: leave a clean one
            logs.request_id_var.set("")


_app: Flask | None = None
_app_lock = threading.Lock()


def bind_app(app: Flask) -> None:
    """Use this app for tasks that run outside any app context (`flask oblako worker`)."""
    global _app
    _app = app


def worker_app() -> Flask:
    """The worker process's app: created once, on first use."""
    global _app
    with _app_lock:
        if _app is None:
            from app import create_app

            _app = create_app()
        return _app


def in_app_context(fn: Callable[..., T]) -> Callable[..., T]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        if has_app_context():
            return fn(*args, **kwargs)
        with worker_app().app_context():
            return fn(*args, **kwargs)

    return wrapper


# ---------------------------------------------------------------------------------------------
# Tasks
# ---------------------------------------------------------------------------------------------


@in_app_context
def run_outbox_delivery(limit: int = 100) -> dict[str, int]:
    from app.outbox import deliver_pending

    report = deliver_pending(limit=limit)
    return {"sent": report.sent, "retried": report.retried, "failed": report.failed}


@in_app_context
def run_reminders() -> dict[str, int]:
    from app.reminders import send_reminders

    report = send_reminders()
    return {"day_before": report.day_before, "hour_before": report.hour_before}


@in_app_context
def run_referral_import(import_id: int, sign_in_url: str | None = None) -> dict[str, int]:
    from flask import current_app

    from app.referrals.importer import CHUNK_SIZE, run_import

    chunk = int(current_app.config.get("REFERRAL_IMPORT_CHUNK_ROWS") or CHUNK_SIZE)
    return run_import(import_id, sign_in_url=sign_in_url, chunk_size=chunk)


@in_app_context
def run_import_recovery() -> list[int]:
    """Re-enqueue the referral imports whose job died (app/referrals/recovery.py)."""
    from app.referrals.recovery import claim_stalled

    claimed = claim_stalled()
    for import_id in claimed:
        log.warning("referral import %s had stalled: resuming it", import_id)
        import_referrals(import_id)  # sign-in URL: PUBLIC_SIGN_IN_URL (no request here)
    return claimed


@in_app_context
def run_registration_purge() -> int:
    from app.extensions import db
    from app.phone_confirmation import purge_expired_registrations

    removed = purge_expired_registrations()
    db.session.commit()
    return removed


@in_app_context
def run_storage_sweep() -> dict[str, int]:
    from app.storage import sweep_storage

    report = sweep_storage()
    return {"temp_removed": report.temp_removed, "orphans_moved": report.orphans_moved}


@huey.task()
def import_referrals(import_id: int, sign_in_url: str | None = None) -> dict[str, int]:
    """Import a confirmed referral table in chunks (resumable: started again, it skips
    the rows already imported)."""
    return run_referral_import(import_id, sign_in_url)


@huey.task()
def deliver_outbox(limit: int = 100) -> dict[str, int]:
    """Deliver now (e.g. right after queueing a one-time password) instead of within a minute."""
    return run_outbox_delivery(limit)


@huey.task()
def send_reminders() -> dict[str, int]:
    return run_reminders()


@huey.periodic_task(crontab(minute="*"), name="oblako.outbox_every_minute")
def deliver_outbox_periodically() -> None:
    run_outbox_delivery()


@huey.periodic_task(crontab(minute="*"), name="oblako.resume_stalled_imports")
def resume_stalled_imports_periodically() -> None:
    run_import_recovery()


@huey.periodic_task(crontab(minute="*/5"), name="oblako.reminders_every_5_minutes")
def send_reminders_periodically() -> None:
    run_reminders()


@huey.periodic_task(crontab(minute="*/10"), name="oblako.registrations_purge_every_10_minutes")
def purge_registrations_periodically() -> None:
    """Unconfirmed self-registrations (their data, the password's hash) do not outlive their
    expiry by more than ten minutes."""
    run_registration_purge()


@huey.periodic_task(crontab(minute="*/15"), name="oblako.storage_every_15_minutes")
def sweep_storage_periodically() -> None:
    """Temp files of killed uploads, and stored files no row points to (app/storage.py)."""
    run_storage_sweep()


def run_worker(app: Flask, *, workers: int = 2) -> None:
    """Run the Huey consumer with its periodic tasks until SIGINT / SIGTERM."""
    if huey.immediate:
        raise RuntimeError("the queue runs in immediate mode (tests): there is nothing to consume")
    bind_app(app)
    logs.configure()
    log.info("worker: %s storage, %d thread(s)", type(huey).__name__, workers)
    try:
        run_storage_sweep()  # at start-up too: a crash may have left files behind
    except Exception:
        log.exception("worker: the start-up storage sweep failed")
    try:
        run_import_recovery()  # an import left by a worker that died resumes now
    except Exception:  # the database may be down at start-up: the periodic task retries
        log.exception("worker: could not look for stalled imports")
    huey.create_consumer(workers=workers, worker_type="thread", periodic=True).run()
