"""Kill-safe files (issue 15 item 10): a web process killed mid-upload leaves nothing for good.

A real web app (`python run.py`) serves HTTP on a free port with the test hook
OBLAKO_TEST_PAUSE_UPLOAD, which stops every upload at one point for good and says where by a
marker file. The test uploads through HTTP, waits for the marker, SIGKILLs the process, then:
- after_write (the temp file is written, not yet renamed): starting the web app again removes
  the abandoned `.upload-*.part`, and leaves alone a temp file whose writer is alive;
- after_rename (the file is in place, its row never committed): the periodic sweep moves the
  file into `documents/orphans/` once it is older than the grace period, and logs its key
  only; files that rows point to (a document, a conclusion PDF, a recording) and files younger
  than the grace period stay where they are.
"""

from __future__ import annotations

import http.cookiejar
import io
import logging
import os
import re
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import func, select

from tests.conftest import TEST_PASSWORD, make_pdf, patient_username
from tests.media_fixtures import ROOT, free_port

HOUR = 3600


# ---------------------------------------------------------------------------------------------
# A web app process and a small HTTP client for it
# ---------------------------------------------------------------------------------------------


@dataclass
class WebProcess:
    env: dict[str, str]
    port: int
    log_path: Path
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90) -> WebProcess:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "run.py"],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"web app exited: {self.log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/login/", timeout=2) as resp:  # noqa: S310
                    if resp.status == 200:
                        return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("web app did not start")

    def kill(self) -> None:
        """SIGKILL: no cleanup of any kind, as when the machine goes away."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        self.kill()


@pytest.fixture
def web_process(app, tmp_path) -> Iterator:
    """Start `python run.py` (web app only) on the test database and storage."""
    started: list[WebProcess] = []

    def factory(*, pause: str = "") -> WebProcess:
        env = {
            **os.environ,
            "OBLAKO_ENV": "test",
            "OBLAKO_WORKER": "0",
            "OBLAKO_MEDIA": "0",
            "HOST": "127.0.0.1",
            "PORT": str(free_port()),
            "SECRET_KEY": str(app.config["SECRET_KEY"]),
            "DATABASE_URL": str(app.config["SQLALCHEMY_DATABASE_URI"]),
            "STORAGE_DIR": str(app.config["STORAGE_DIR"]),
            "REDIS_URL": str(app.config["REDIS_URL"]),
            "OBLAKO_INSTANCE_DIR": str(tmp_path / "instance"),
            "OBLAKO_TEST_PAUSE_UPLOAD": pause,
            "PYTHONUNBUFFERED": "1",
        }
        web = WebProcess(env, int(env["PORT"]), tmp_path / f"web-{len(started)}.log")
        started.append(web)
        return web.start()

    yield factory
    for web in started:
        web.stop()


class Browser:
    """Cookies and CSRF tokens over real HTTP (urllib: no extra dependency)."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )

    def get(self, path: str) -> str:
        with self.opener.open(self.base + path, timeout=30) as resp:
            return resp.read().decode()

    def csrf(self, path: str) -> str:
        match = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', self.get(path))
        assert match, f"no csrf token on {path}"
        return match.group(1)

    def login(self, username: str) -> None:
        form = {"username": username, "password": TEST_PASSWORD, "csrf_token": self.csrf("/login/")}
        body = urllib.parse.urlencode(form).encode()
        with self.opener.open(self.base + "/login/", data=body, timeout=30) as resp:
            assert "/login/" not in resp.url, "login failed"

    def upload(self, content: bytes, filename: str, type_id: int) -> None:
        path = "/cabinet/documents/upload"
        fields = {"csrf_token": self.csrf(path), "document_type": str(type_id)}
        boundary = uuid.uuid4().hex
        parts = [
            f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
            for k, v in fields.items()
        ]
        parts.append(
            f"--{boundary}\r\nContent-Disposition: form-data; "
            f'name="file"; filename="{filename}"\r\n'
            "Content-Type: application/pdf\r\n\r\n".encode()
            + content
            + f"\r\n--{boundary}--\r\n".encode()
        )
        request = urllib.request.Request(  # noqa: S310
            self.base + path,
            data=b"".join(parts),
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        with self.opener.open(request, timeout=120) as resp:
            resp.read()


def upload_until_paused(app, web: WebProcess, patient_id: int, type_id: int, point: str) -> Path:
    """Upload through HTTP; when the process has stopped at `point`, kill it. Returns the path
    of the file it was holding there."""
    marker = Path(app.config["STORAGE_DIR"]) / f".paused-{point}"
    marker.unlink(missing_ok=True)
    browser = Browser(web.url)
    browser.login(patient_username(app, patient_id))
    errors: list[BaseException] = []

    def send() -> None:
        try:
            browser.upload(make_pdf(), "Выписка.pdf", type_id)
        except BaseException as exc:  # the connection dies with the process
            errors.append(exc)

    sender = threading.Thread(target=send)
    sender.start()
    deadline = time.monotonic() + 60
    while not marker.exists() or not marker.read_text():
        assert time.monotonic() < deadline, "the upload never reached " + point
        assert sender.is_alive(), f"the upload ended without pausing: {errors}"
        time.sleep(0.05)
    held = Path(marker.read_text())
    web.kill()
    sender.join(30)
    assert errors, "the upload should have died with the process"
    marker.unlink()
    return held


# ---------------------------------------------------------------------------------------------
# Rows that point to files
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def world(app, make_patient, make_center, make_doctor, tmp_path, monkeypatch):
    """A patient with a stored document, a conclusion PDF and a recording, each with its row."""
    import shutil

    from app import recordings
    from app.catalogue import load_catalogue
    from app.documents.access import document_path
    from app.documents.checks import write_file
    from app.documents.upload import store_document
    from app.extensions import db
    from models import Conclusion, Consultation, Patient, Recording, utcnow

    shutil.rmtree(Path(app.config["STORAGE_DIR"]) / "documents", ignore_errors=True)
    monkeypatch.setitem(app.config, "MEDIA_RECORDINGS_DIR", str(tmp_path / "recordings"))
    center = make_center()
    doctor_id = make_doctor(center_id=center)
    pid = make_patient(surname="Файлова")
    with app.test_request_context():
        types = load_catalogue()
        patient = db.session.get(Patient, pid)
        doc = store_document(
            patient,
            by=patient.user,
            stream=io.BytesIO(make_pdf()),
            filename="Старое.pdf",
            document_type=types["discharge"],
        )
        c = Consultation(
            public_id=uuid.uuid4(),
            kind="centre_request",
            status="completed",
            patient_id=pid,
            center_id=center,
            doctor_id=doctor_id,
            scheduled_at=utcnow(),
        )
        db.session.add(c)
        db.session.flush()
        pdf = write_file(io.BytesIO(make_pdf()), max_bytes=10**6)
        db.session.add(
            Conclusion(
                public_id=uuid.uuid4(),
                consultation_id=c.id,
                author_id=doctor_id,
                pdf_storage_key=pdf.key,
            )
        )
        rec = Recording(
            public_id=uuid.uuid4(),
            consultation_id=c.id,
            storage_key=uuid.uuid4().hex,
            content_type="video/webm",
        )
        db.session.add(rec)
        rec_path = recordings.recording_path(rec)
        rec_path.parent.mkdir(parents=True)
        rec_path.write_bytes(b"\x1aE\xdf\xa3" + b"webm" * 100)
        db.session.commit()
        return {
            "patient": pid,
            "type_id": types["discharge"].id,
            "kept": [document_path(doc), pdf.path, rec_path],
            "recordings": recordings.recordings_root(),
        }


def document_count(app, patient_id: int) -> int:
    from app.extensions import db
    from models import MedicalDocument

    with app.app_context():
        return db.session.execute(
            select(func.count())
            .select_from(MedicalDocument)
            .where(MedicalDocument.patient_id == patient_id)
        ).scalar_one()


def age(*paths: Path, seconds: float = 2 * HOUR) -> None:
    """As if the files had last been written `seconds` ago."""
    then = time.time() - seconds
    for path in paths:
        os.utime(path, (then, then))


# ---------------------------------------------------------------------------------------------
# The tests
# ---------------------------------------------------------------------------------------------


def test_killed_while_writing_the_temp_file_is_removed_at_start_up(app, world, web_process):
    from app import storage

    kept = {p: p.read_bytes() for p in world["kept"]}
    web = web_process(pause="after_write")
    part = upload_until_paused(app, web, world["patient"], world["type_id"], "after_write")
    assert part.name.startswith(".upload-") and part.name.endswith(".part") and part.is_file()
    assert document_count(app, world["patient"]) == 1  # the old one only

    # An upload in flight in another process (this one): its temp file is locked.
    with app.app_context():
        live_fd, live = storage._locked_temp(storage.storage_root() / storage.TEMP_DIR)
    try:
        web_process()  # the web app starts again: its start-up sweeps
        assert not part.exists()
        assert live.exists()
    finally:
        os.close(live_fd)
    with app.app_context():
        assert storage.sweep_temp_files() == 1  # its writer is gone now too
    assert not live.exists()
    assert {p: p.read_bytes() for p in kept} == kept


def test_killed_after_the_rename_the_file_is_moved_aside_after_the_grace_period(
    app, world, web_process, caplog
):
    from app.tasks import run_storage_sweep

    kept = {p: p.read_bytes() for p in world["kept"]}
    web = web_process(pause="after_rename")
    orphan = upload_until_paused(app, web, world["patient"], world["type_id"], "after_rename")
    assert orphan.is_file() and re.fullmatch(r"[0-9a-f]{32}", orphan.name)
    assert document_count(app, world["patient"]) == 1  # never committed

    # A recording the media server renamed into place and was killed before its row, and
    # recording temp files: one abandoned long ago, one being written now.
    rec_root = world["recordings"]
    rec_orphan = rec_root / "ab" / "cd" / ("abcd" + uuid.uuid4().hex[4:])
    rec_orphan.parent.mkdir(parents=True)
    rec_orphan.write_bytes(b"webm")
    stale_rec_part, live_rec_part = (rec_root / "ab" / "cd" / f".rec-{n}.part" for n in "12")
    stale_rec_part.write_bytes(b"half")
    live_rec_part.write_bytes(b"growing")

    # Within the grace period nothing moves: it may be a transaction still in flight.
    with app.app_context():
        assert run_storage_sweep() == {"temp_removed": 0, "orphans_moved": 0}
    assert orphan.is_file() and rec_orphan.is_file() and stale_rec_part.is_file()

    age(orphan, rec_orphan, stale_rec_part, *kept)
    young = orphan.parent / uuid.uuid4().hex  # written a moment ago, no row yet
    young.write_bytes(b"in flight")
    with caplog.at_level(logging.WARNING, logger="app.storage"), app.app_context():
        assert run_storage_sweep() == {"temp_removed": 1, "orphans_moved": 2}

    documents_root = Path(app.config["STORAGE_DIR"]) / "documents"
    assert not orphan.exists()
    assert (documents_root / "orphans" / orphan.name).read_bytes()[:5] == b"%PDF-"
    assert not rec_orphan.exists() and (rec_root / "orphans" / rec_orphan.name).is_file()
    assert not stale_rec_part.exists() and live_rec_part.is_file() and young.is_file()
    assert {p: p.read_bytes() for p in kept} == kept  # rows point to them
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert orphan.name in logged and rec_orphan.name in logged
    assert "Файлова" not in logged and "Выписка" not in logged  # no patient data in the log


@pytest.mark.no_db
def test_the_test_hook_is_refused_outside_tests(app):
    from app import create_app

    with pytest.raises(RuntimeError, match="test hook"):
        create_app(
            {
                "OBLAKO_ENV": "production",
                "TEST_PAUSE_UPLOAD": "after_write",
                "STORAGE_DIR": app.config["STORAGE_DIR"],
                "SQLALCHEMY_DATABASE_URI": app.config["SQLALCHEMY_DATABASE_URI"],
            }
        )
