"""The file store: medical files under random keys, written kill-safe, swept of leftovers.

DESIGN §4: a file is streamed into a temp file, fsynced and atomically renamed to
`<STORAGE_DIR>/documents/ab/cd/<key>`; its row is inserted in the same transaction, and the
file follows that transaction (on_commit / on_rollback below). A process killed mid-way leaves
one of two things, which the sweep removes (issue 15 item 10):

- a temp file `tmp/.upload-*.part`: its writer holds an exclusive flock on it until the rename,
  and the kernel drops the lock when the writer dies. A temp file whose lock can be taken is
  abandoned and removed, at start-up (web app and worker) and periodically, whatever its age;
  one still locked is an upload in flight and is left alone.
- a whole file no row points to (killed after the rename, before the commit; or after a
  delete's commit, before the unlink). Once older than STORAGE_ORPHAN_GRACE_SECONDS, and only
  if no `medical_document`, `conclusion` or `recording` row names its key, it is moved aside
  into `<root>/orphans/` (never deleted: a person decides) and its key is logged.

Recordings are written by the media server under MEDIA_RECORDINGS_DIR in the same layout; its
temp files (`.rec-*.part`, beside the final name) carry no lock, so they are removed only when
nothing has written to them for the grace period (a recording in progress writes every second).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import logging
import os
import re
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from flask import Flask, current_app
from sqlalchemy import event, select
from sqlalchemy.orm import Session

from app.extensions import db
from models import STORAGE_KEY_RE, stored_file_path

log = logging.getLogger(__name__)

T = TypeVar("T")

_FANOUT_RE = re.compile(r"^[0-9a-f]{2}$")
UPLOAD_PREFIX, TEMP_SUFFIX = ".upload-", ".part"
TEMP_DIR = "tmp"
ORPHANS_DIR = "orphans"
KEYS_PER_QUERY = 500

# Test hook (issue 15 item 10): OBLAKO_TEST_PAUSE_UPLOAD makes every upload stop for good at
# this point, after writing `<STORAGE_DIR>/.paused-<point>` (the file's path), so that a test
# can kill the process there. Read once at start-up; refused outside OBLAKO_ENV=test.
PAUSE_POINTS = ("after_write", "after_rename")


# ---------------------------------------------------------------------------------------------
# Where files live
# ---------------------------------------------------------------------------------------------


def storage_root() -> Path:
    root = Path(current_app.config["STORAGE_DIR"]).resolve()
    static = Path(current_app.static_folder or "").resolve()
    # A misconfigured STORAGE_DIR under static/ would publish every medical file.
    if current_app.static_folder and root.is_relative_to(static):
        raise RuntimeError("STORAGE_DIR must not be inside the static folder")
    return root / "documents"


def path_for_key(key: str) -> Path:
    """Two levels of fan-out keep directories small: ab/cd/abcd… (models.stored_file_path,
    the layout the media server's recordings share)."""
    return stored_file_path(storage_root(), key)


def remove_stored(key: str) -> None:
    try:
        path_for_key(key).unlink(missing_ok=True)
    except OSError:
        log.exception("could not remove stored file %s", key)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Written:
    key: str
    path: Path
    size: int
    sha256: str


def _locked_temp(directory: Path) -> tuple[int, Path]:
    """A new temp file, exclusively locked by this process for as long as the fd is open."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    while True:
        fd, name = tempfile.mkstemp(dir=directory, prefix=UPLOAD_PREFIX, suffix=TEMP_SUFFIX)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            # A sweep may have taken the unlocked file between mkstemp and flock.
            if os.stat(name).st_ino == os.fstat(fd).st_ino:
                return fd, Path(name)
        except FileNotFoundError:
            pass
        os.close(fd)


def write_atomically(
    chunks: Iterable[bytes], *, check: Callable[[Path, int], T]
) -> tuple[Written, T]:
    """Write `chunks` into a locked temp file, fsync, `check(temp, size)`, rename into place.

    Whatever goes wrong (the chunks or the check raise, disk full, client gone), the temp file
    is removed: nothing partial is ever left behind by a living process. `check` returns what
    it learnt about the content (its kind), and refuses bad content by raising.
    """
    key = uuid.uuid4().hex
    final = path_for_key(key)
    fd, tmp = _locked_temp(storage_root() / TEMP_DIR)
    digest = hashlib.sha256()
    size = 0
    try:
        with os.fdopen(fd, "wb", closefd=False) as out:
            for chunk in chunks:
                size += len(chunk)
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        _pause_for_test("after_write", tmp)
        checked = check(tmp, size)
        final.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.replace(tmp, final)
        _fsync_dir(final.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)  # releases the lock: the file is in place or gone
    _pause_for_test("after_rename", final)
    return Written(key=key, path=final, size=size, sha256=digest.hexdigest()), checked


def _pause_for_test(point: str, path: Path) -> None:
    if current_app.config.get("TEST_PAUSE_UPLOAD") != point:
        return
    marker = Path(current_app.config["STORAGE_DIR"]) / f".paused-{point}"
    marker.write_text(str(path))
    threading.Event().wait()  # until the test kills the process


# --- files follow the transaction -------------------------------------------------------------
# session.info holds callbacks for the current transaction: on commit the "commit" list runs
# (files of deleted rows go), otherwise the "rollback" list runs (files of rows that were never
# recorded go). after_transaction_end also fires on Session.close(), so a request that ends
# without committing cleans up too.

_ON_COMMIT = "oblako_documents_on_commit"
_ON_ROLLBACK = "oblako_documents_on_rollback"


def on_commit(fn: Callable[[], None]) -> None:
    db.session.info.setdefault(_ON_COMMIT, []).append(fn)


def on_rollback(fn: Callable[[], None]) -> None:
    db.session.info.setdefault(_ON_ROLLBACK, []).append(fn)


def _run(callbacks: Iterable[Callable[[], None]]) -> None:
    for fn in callbacks:
        try:
            fn()
        except Exception:
            log.exception("file storage callback failed")


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    session.info.pop(_ON_ROLLBACK, None)
    _run(session.info.pop(_ON_COMMIT, []))


@event.listens_for(Session, "after_transaction_end")
def _after_transaction_end(session: Session, transaction) -> None:
    if transaction.parent is not None or transaction.nested:
        return  # a savepoint: the outer transaction decides
    session.info.pop(_ON_COMMIT, None)
    _run(session.info.pop(_ON_ROLLBACK, []))


# ---------------------------------------------------------------------------------------------
# Sweeping
# ---------------------------------------------------------------------------------------------


@dataclass
class SweepReport:
    temp_removed: int = 0
    orphans_moved: int = 0


def _remove_if_abandoned(path: Path) -> bool:
    """Remove a locked-temp file whose writer is gone (its lock can be taken)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return False  # an upload in flight
            raise
        try:
            if os.stat(path).st_ino != os.fstat(fd).st_ino:
                return False  # its writer finished and renamed it meanwhile
        except FileNotFoundError:
            return False
        path.unlink(missing_ok=True)
        return True
    finally:
        os.close(fd)


def sweep_temp_files() -> int:
    """Remove the upload temp files of dead writers (cheap: one directory; start-up)."""
    directory = storage_root() / TEMP_DIR
    if not directory.is_dir():
        return 0
    removed = 0
    for path in directory.iterdir():
        if path.name.endswith(TEMP_SUFFIX) and _remove_if_abandoned(path):
            removed += 1
    if removed:
        log.warning("storage: removed %d abandoned upload temp file(s)", removed)
    return removed


def _roots() -> list[Path]:
    from app.recordings import recordings_root

    roots = [storage_root(), recordings_root()]
    return [r for i, r in enumerate(roots) if r not in roots[:i] and r.is_dir()]


def stored_files(root: Path) -> Iterator[Path]:
    """Every file in the ab/cd/ fan-out of `root` (temp files included)."""
    for first in os.scandir(root):
        if not (first.is_dir(follow_symlinks=False) and _FANOUT_RE.match(first.name)):
            continue
        for second in os.scandir(first.path):
            if not (second.is_dir(follow_symlinks=False) and _FANOUT_RE.match(second.name)):
                continue
            for entry in os.scandir(second.path):
                if entry.is_file(follow_symlinks=False):
                    yield Path(entry.path)


def referenced_keys(keys: list[str]) -> set[str]:
    """Those of `keys` that some row points to: documents, conclusion PDFs, recordings."""
    from models import Conclusion, MedicalDocument, Recording

    found: set[str] = set()
    for start in range(0, len(keys), KEYS_PER_QUERY):
        batch = keys[start : start + KEYS_PER_QUERY]
        for column in (
            MedicalDocument.storage_key,
            Conclusion.pdf_storage_key,
            Recording.storage_key,
        ):
            found.update(db.session.execute(select(column).where(column.in_(batch))).scalars())
    return found


def _move_aside(root: Path, path: Path) -> bool:
    target_dir = root / ORPHANS_DIR
    target_dir.mkdir(exist_ok=True, mode=0o700)
    target = target_dir / path.name
    if target.exists():
        target = target_dir / f"{path.name}.{uuid.uuid4().hex[:8]}"
    try:
        os.replace(path, target)
    except FileNotFoundError:
        return False  # another sweeper (another host) was first
    # The key only: which patient it belonged to is exactly what nobody knows any more.
    log.warning("storage: moved file %s, which no row points to, to %s", path.name, target)
    return True


def sweep_storage(*, grace_seconds: float | None = None, now: float | None = None) -> SweepReport:
    """The periodic sweep: abandoned temp files, then stored files no row points to."""
    grace = float(
        current_app.config["STORAGE_ORPHAN_GRACE_SECONDS"]
        if grace_seconds is None
        else grace_seconds
    )
    cutoff = (time.time() if now is None else now) - grace
    report = SweepReport(temp_removed=sweep_temp_files())
    for root in _roots():
        candidates: dict[str, Path] = {}
        for path in stored_files(root):
            try:
                old = path.stat().st_mtime < cutoff
            except FileNotFoundError:
                continue
            if path.name.endswith(TEMP_SUFFIX):
                # An upload temp left beside its final name (older layout) or the media
                # server's recording temp: untouched for the grace period means dead.
                if old and (
                    _remove_if_abandoned(path)
                    if path.name.startswith(UPLOAD_PREFIX)
                    else _unlink(path)
                ):
                    report.temp_removed += 1
            elif old and STORAGE_KEY_RE.fullmatch(path.name):
                candidates[path.name] = path
        if candidates:
            kept = referenced_keys(list(candidates))
            for key, path in candidates.items():
                if key not in kept and _move_aside(root, path):
                    report.orphans_moved += 1
    db.session.rollback()  # read-only: end the transaction the reads opened
    return report


def _unlink(path: Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    log.warning("storage: removed stale temp file %s", path.name)
    return True


# ---------------------------------------------------------------------------------------------
# Start-up
# ---------------------------------------------------------------------------------------------


def init_app(app: Flask) -> None:
    """Check the test hook and remove what a killed upload left (every process start)."""
    pause = app.config.get("TEST_PAUSE_UPLOAD") or ""
    if pause:
        if pause not in PAUSE_POINTS:
            raise RuntimeError(f"OBLAKO_TEST_PAUSE_UPLOAD must be one of {PAUSE_POINTS}")
        if app.config.get("OBLAKO_ENV") != "test":
            raise RuntimeError("OBLAKO_TEST_PAUSE_UPLOAD is a test hook: OBLAKO_ENV=test only")
    with app.app_context():
        try:
            sweep_temp_files()
        except OSError:
            log.exception("storage: the start-up sweep of temp files failed")
