"""Backups that restore (issue 18 item 4): deploy/backup.sh → wipe → deploy/restore.sh, and
`flask oblako verify-storage` on the result; and what verify-storage reports when a stored
file is missing, altered or belongs to no row.

The drill backs up the suite's database (pg_dump on PostgreSQL, SQLite's online backup on the
embedded default) and its storage, wipes the storage, and restores both onto an empty database
(a new server) and the wiped storage, with the scripts an administrator runs.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, inspect, select, table
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"


def row_counts(url: str) -> dict[str, int]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            names = inspect(conn).get_table_names()
            return {
                n: conn.execute(select(func.count()).select_from(table(n))).scalar_one()
                for n in sorted(names)
            }
    finally:
        engine.dispose()


def file_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def libpq_url(url: str) -> str:
    """The URL as the scripts get it in production (DATABASE_URL, any accepted spelling)."""
    return make_url(url).render_as_string(hide_password=False)


def service_env(app, database_url: str, tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "OBLAKO_ENV_FILE": "/dev/null",
        "OBLAKO_PYTHON": sys.executable,
        "DATABASE_URL": libpq_url(database_url),
        "STORAGE_DIR": app.config["STORAGE_DIR"],
        "MEDIA_RECORDINGS_DIR": app.config["MEDIA_RECORDINGS_DIR"],
        "SECRET_KEY": str(app.config["SECRET_KEY"]),
        "REDIS_URL": app.config["REDIS_URL"],
        "OBLAKO_ENV": "test",
        "OBLAKO_INSTANCE_DIR": str(tmp_path / "instance"),
        "FLASK_APP": str(ROOT / "run.py"),
    }


def run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.fixture
def own_recordings(app, monkeypatch) -> Path:
    """Recordings inside this session's storage (the default lies under instance/)."""
    path = Path(app.config["STORAGE_DIR"]) / "recordings"
    shutil.rmtree(path, ignore_errors=True)
    monkeypatch.setitem(app.config, "MEDIA_RECORDINGS_DIR", str(path))
    return path


def add_recording(app, consultation_public_id: uuid.UUID, content: bytes) -> str:
    """A recording as the media server leaves it: the file in the fan-out, then its row."""
    from app.extensions import db
    from app.recordings import recordings_root
    from models import Consultation, Recording, stored_file_path

    key = uuid.uuid4().hex
    with app.app_context():
        path = stored_file_path(recordings_root(), key)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        c = db.session.execute(
            select(Consultation).where(Consultation.public_id == consultation_public_id)
        ).scalar_one()
        db.session.add(
            Recording(
                consultation_id=c.id,
                storage_key=key,
                content_type="video/webm",
                size_bytes=len(content),
                sha256=hashlib.sha256(content).hexdigest(),
            )
        )
        db.session.commit()
    return key


def issue_a_conclusion(app, world) -> None:
    from app.conclusions.form import ConclusionData
    from app.conclusions.issue import issue_conclusion
    from app.extensions import db
    from models import Consultation, Doctor
    from tests.consultation_world import make_consultation

    public_id = make_consultation(
        app, world, status="in_progress", doctor_id=world.doctors["doctor_c1"]
    )
    with app.app_context():
        c = db.session.execute(
            select(Consultation).where(Consultation.public_id == public_id)
        ).scalar_one()
        doctor = db.session.get(Doctor, world.doctors["doctor_c1"])
        conclusion = issue_conclusion(
            c,
            by=doctor,
            data=ConclusionData(
                complaints_history="Перебои в работе сердца",
                findings="Ритм неправильный",
                diagnosis="Фибрилляция предсердий",
                icd10_code="I48",
                recommendations="Покой",
            ),
        )
        db.session.commit()
        assert conclusion.pdf_sha256 and len(conclusion.pdf_sha256) == 64


def test_backup_wipe_restore_gives_the_same_rows_and_files(
    app, empty_storage, own_recordings, world, database_url, scratch_database_url, tmp_path
):
    from app.demo import load_demo_data
    from app.extensions import db
    from tests.consultation_world import make_consultation

    with app.app_context():
        assert load_demo_data()
        db.session.commit()
    issue_a_conclusion(app, world)
    add_recording(app, make_consultation(app, world, status="completed"), b"webm" * 1000)

    storage = Path(app.config["STORAGE_DIR"])
    counts = row_counts(database_url)
    hashes = file_hashes(storage)
    assert counts["medical_document"] >= 3 and counts["conclusion"] == 1
    assert counts["recording"] == 1 and counts["ab_user"] > 5
    assert any(k.startswith("recordings/") for k in hashes)

    backup = run(
        [str(DEPLOY / "backup.sh"), str(tmp_path / "backups")],
        service_env(app, database_url, tmp_path),
    )
    assert backup.returncode == 0, backup.stderr
    made = Path(backup.stdout.strip().splitlines()[-1])
    dump = "db.dump" if database_url.startswith("postgresql") else "db.sqlite"
    assert sorted(p.name for p in made.iterdir()) == sorted(["SHA256SUMS", dump, "storage.tar"])

    # The wipe: the files are gone; the database is restored onto an empty one (a new server).
    shutil.rmtree(storage)
    storage.mkdir()
    assert row_counts(scratch_database_url) == {}

    restored_env = service_env(app, scratch_database_url, tmp_path)
    restore = run([str(DEPLOY / "restore.sh"), str(made)], restored_env)
    assert restore.returncode == 0, restore.stderr
    upgrade = run([sys.executable, "-m", "flask", "db", "upgrade"], restored_env)
    assert upgrade.returncode == 0, upgrade.stderr

    assert row_counts(scratch_database_url) == counts
    assert file_hashes(storage) == hashes
    verify = run([sys.executable, "-m", "flask", "oblako", "verify-storage"], restored_env)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert f"{counts['medical_document'] + 2} row(s) checked" in verify.stdout
    assert "0 problem(s)" in verify.stdout

    # Restoring over what is there is refused, never mixed in.
    again = run([str(DEPLOY / "restore.sh"), str(made)], restored_env)
    assert again.returncode == 2 and "not empty" in again.stderr


def test_a_damaged_backup_is_not_restored(app, empty_storage, world, database_url, tmp_path):
    env = service_env(app, database_url, tmp_path)
    backup = run([str(DEPLOY / "backup.sh"), str(tmp_path / "b")], env)
    assert backup.returncode == 0, backup.stderr
    made = Path(backup.stdout.strip().splitlines()[-1])
    with (made / "storage.tar").open("r+b") as fh:
        fh.seek(700)
        fh.write(b"X")
    target = tmp_path / "new-storage"
    restore = run(
        [str(DEPLOY / "restore.sh"), str(made)],
        {**env, "STORAGE_DIR": str(target), "DATABASE_URL": "sqlite:///" + str(tmp_path / "n.db")},
    )
    assert restore.returncode != 0
    assert "storage.tar: FAILED" in restore.stdout + restore.stderr
    assert not target.exists() and not (tmp_path / "n.db").exists()


def test_verify_storage_reports_missing_altered_and_unreferenced_files(
    app, empty_storage, own_recordings, world
):
    from app.extensions import db
    from app.storage import path_for_key
    from models import MedicalDocument
    from tests.consultation_world import make_consultation

    recording_key = add_recording(app, make_consultation(app, world, status="completed"), b"rec")
    runner = app.test_cli_runner()
    clean = runner.invoke(args=["oblako", "verify-storage"])
    assert clean.exit_code == 0, clean.output
    assert "0 problem(s)" in clean.output

    with app.app_context():
        keys = dict(
            db.session.execute(
                select(MedicalDocument.public_id, MedicalDocument.storage_key).where(
                    MedicalDocument.public_id.in_([world.ecg, world.conclusion_doc])
                )
            ).all()
        )
        altered = path_for_key(keys[world.ecg])
        altered.write_bytes(altered.read_bytes() + b"tampered")
        path_for_key(keys[world.conclusion_doc]).unlink()
        stray_key = uuid.uuid4().hex
        stray = path_for_key(stray_key)
        stray.parent.mkdir(parents=True, exist_ok=True)
        stray.write_bytes(b"no row points here")
        from app.recordings import recordings_root
        from models import stored_file_path

        stored_file_path(recordings_root(), recording_key).unlink()

    result = runner.invoke(args=["oblako", "verify-storage"])
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert any(
        line.startswith("altered") and str(world.ecg) in line and keys[world.ecg] in line
        for line in lines
    ), result.output
    assert any(
        line.startswith("missing") and str(world.conclusion_doc) in line for line in lines
    ), result.output
    assert any(line.startswith("missing") and recording_key in line for line in lines)
    assert any(line.startswith("unreferenced") and stray_key in line for line in lines)
    assert "4 problem(s)" in result.output
    assert stray.exists()  # reported, never removed
