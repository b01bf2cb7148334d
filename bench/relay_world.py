"""What the relay bench sets up, the same for the relay and its floor: the source (FFmpeg's
`testsrc`, 640×480 at 30 fps), the media server as a process of its own (`python -m
media_server` on the fresh database, so that its CPU, read from /proc, is its own) and the
consultations with their join tokens.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import date
from pathlib import Path

import av
from common import ROOT

ORIGIN = "http://bench.oblako.local"
SOURCE = "testsrc=size=640x480:rate=30"
CLK_TCK = os.sysconf("SC_CLK_TCK")
MEDIA_LOG = Path(tempfile.gettempdir()) / "bench_relay_media.log"


# ---------------------------------------------------------------------------------------------
# The source (this process)
# ---------------------------------------------------------------------------------------------


def source_frames(count: int) -> list[av.VideoFrame]:
    with av.open(SOURCE, format="lavfi") as container:
        frames = []
        for frame in container.decode(video=0):
            frames.append(frame.reformat(format="yuv420p"))
            if len(frames) == count:
                return frames
    return frames


# ---------------------------------------------------------------------------------------------
# The media server (another process)
# ---------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """A process's CPU time: the sum of its threads' run time in ns (/proc/…/schedstat), as
    /proc/…/stat counts only in ticks of 10 ms (the floor's round is a few ticks)."""
    total, counted = 0, False
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
            counted = True
        except (OSError, ValueError, IndexError):  # a thread that just ended, or no schedstat
            continue
    if counted:
        return total / 1e9
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def start_media_server(database_url: str, workdir: str) -> tuple[subprocess.Popen, str]:
    import urllib.request

    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "MEDIA_HOST": "127.0.0.1",
        "MEDIA_PORT": str(port),
        "MEDIA_ALLOWED_ORIGINS": ORIGIN,
        "MEDIA_REDIS_URL": "",
        "MEDIA_RECORDINGS_DIR": str(Path(workdir) / "recordings"),
        "OBLAKO_INSTANCE_DIR": str(Path(workdir) / "instance"),
    }
    log = open(MEDIA_LOG, "wb")  # kept after the run, for a failed one
    proc = subprocess.Popen(
        [sys.executable, "-m", "media_server"], cwd=ROOT, env=env, stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"media server exited: see {MEDIA_LOG}")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=1):  # noqa: S310
                return proc, url
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("media server did not start")


# ---------------------------------------------------------------------------------------------
# People: a doctor, patients, their consultations and join tokens
# ---------------------------------------------------------------------------------------------


def make_consultations(app, count: int) -> list[dict]:
    from app.accounts import create_doctor, create_patient
    from app.extensions import db
    from app.media_tokens import JoinGrant, mint_join_token
    from app.recordings import give_consent
    from models import Consultation

    out = []
    with app.app_context():
        doctor = create_doctor(
            username=f"bench_doc_{uuid.uuid4().hex[:6]}",
            password="Bench2026secret",
            surname="Врачев",
            name="Пётр",
            patronymic="",
            specialty="Кардиолог",
            email=None,
            center_id=None,
            is_duty=True,
        )
        db.session.flush()
        for n in range(count):
            patient = create_patient(
                surname=f"Скамейкина{n}",
                name="Анна",
                patronymic="",
                birth_date=date(1980, 1, 2),
                sex="female",
                phone=f"+7999{uuid.uuid4().int % 10**7:07d}",
                email=None,
                region="Москва",
                timezone="Europe/Moscow",
                password="Bench2026secret",
                check_policy=False,
            )
            db.session.flush()
            c = Consultation(
                kind="duty", status="in_progress", patient_id=patient.id, doctor_id=doctor.id
            )
            db.session.add(c)
            db.session.flush()
            give_consent(c, by=patient.user)
            give_consent(c, by=doctor.user)
            out.append((c, patient.user_id, doctor.user_id))
        db.session.commit()
        out = [(c.id, c.public_id, p, d) for c, p, d in out]

        def minting(cid: int, cpub: uuid.UUID, user_id: int, role: str):
            def mint() -> str:
                with app.app_context():
                    grant = JoinGrant(
                        user_id=user_id,
                        consultation_id=cid,
                        consultation_public_id=cpub,
                        role=role,
                        name=role,
                        media=True,
                        chat=True,
                        session_generation=0,  # a fresh account, never signed out
                    )
                    return mint_join_token(grant)

            return mint

        return [
            {
                "doctor": minting(cid, cpub, doctor_user, "doctor"),
                "patient": minting(cid, cpub, patient_user, "patient"),
            }
            for cid, cpub, patient_user, doctor_user in out
        ]


def recorded_file(app, public_id: str) -> tuple[int, float]:
    from sqlalchemy import select

    from app.extensions import db
    from models import Recording

    with app.app_context():
        row = db.session.execute(
            select(Recording).where(Recording.public_id == uuid.UUID(public_id))
        ).scalar_one()
        return row.size_bytes, row.duration_seconds or 0.0
