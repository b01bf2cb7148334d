"""The baseline the referral import is measured against (one subprocess:
`bench_referral_import.py --child baseline`): the simplest fast way to do the same work — the same
file read with openpyxl's read-only mode, the same rows bulk inserted with SQLAlchemy Core
`executemany` (ab_user, ab_user_role, patient, consultation, sign_in_link, outbound_message; ids
by RETURNING), one transaction per `BASELINE_CHUNK` rows.
"""

from __future__ import annotations

import gc
import io
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from common import create_bench_app, fresh_database_url
from flask import Flask
from referral_data import SIGN_IN_URL, set_up_world
from referral_probes import RssPeak, _counts
from sqlalchemy import insert, select

BASELINE_CHUNK = 1_000


# ---------------------------------------------------------------------------------------------
# The baseline (child): openpyxl read-only + SQLAlchemy Core executemany
# ---------------------------------------------------------------------------------------------


def _baseline_import(app: Flask, data: bytes) -> int:
    from openpyxl import load_workbook

    from app.extensions import db
    from app.otp import hash_one_time_password
    from app.passwords import generate_one_time_password
    from app.permissions import PATIENT
    from app.referrals.invitations import invitation_text
    from app.referrals.upload import _HEADER_KEYS, _norm_header
    from app.sign_in_links import link_url, new_link
    from models import Disease, MedicalCenter, Model, utcnow

    t = Model.metadata.tables
    with app.app_context():
        engine = db.engine
        with engine.connect() as conn:
            role_id = conn.execute(
                select(t["ab_role"].c.id).where(t["ab_role"].c.name == PATIENT)
            ).scalar_one()
            diseases = dict(conn.execute(select(Disease.icd10_code, Disease.id)).all())
            centres = {
                n.lower(): i for n, i in conn.execute(select(MedicalCenter.name, MedicalCenter.id))
            }
        # The SMS text: translated once, filled per row (with the one-time link, as the service).
        sms = invitation_text(
            link="\x00K", sign_in_url=SIGN_IN_URL, login="\x00L", password="\x00P"
        )
        link_prefix = link_url(SIGN_IN_URL, "")

        wb = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
        ws = wb.worksheets[0]
        values = ws.iter_rows(values_only=True)
        titles = next(values)
        col = {_HEADER_KEYS.get(_norm_header(title)): i for i, title in enumerate(titles)}
        total = 0

        def flush(batch: list[tuple]) -> None:
            expires = utcnow() + timedelta(days=7)
            users, patients = [], []
            passwords = []
            for v in batch:
                phone = "+" + "".join(ch for ch in str(v[col["phone"]]) if ch.isdigit())
                surname, name, *rest = str(v[col["full_name"]]).split()
                born = v[col["birth_date"]]
                born = (
                    born.date()
                    if isinstance(born, datetime)
                    else datetime.strptime(born, "%d.%m.%Y").date()
                )
                email = v[col["email"]] or None
                password = generate_one_time_password()
                passwords.append(password)
                users.append(
                    {
                        "username": phone,
                        "first_name": name,
                        "last_name": surname,
                        "email": email or f"{phone}@users.invalid",
                        "active": True,
                        "password": hash_one_time_password(password),
                        "must_change_password": True,
                        "password_expires_at": expires,
                        "session_generation": 1,
                    }
                )
                patients.append(
                    {
                        "surname": surname,
                        "name": name,
                        "patronymic": " ".join(rest),
                        "birth_date": born,
                        "sex": "female" if v[col["sex"]] == "ж" else "male",
                        "phone": phone,
                        "email": email,
                        "snils": v[col["snils"]] or None,
                        "source": "referral",
                    }
                )
            with engine.begin() as conn:
                # Ids by RETURNING with each row's unique key, mapped back: RETURNING in parameter
                # order (sort_by_parameter_order) is one INSERT per row on SQLite.
                user_by_name = dict(
                    conn.execute(
                        insert(t["ab_user"]).returning(t["ab_user"].c.username, t["ab_user"].c.id),
                        users,
                    ).all()
                )
                user_ids = [user_by_name[u["username"]] for u in users]
                conn.execute(
                    insert(t["ab_user_role"]),
                    [{"user_id": u, "role_id": role_id} for u in user_ids],
                )
                for p, u in zip(patients, user_ids, strict=True):
                    p["user_id"] = u
                patient_by_user = dict(
                    conn.execute(
                        insert(t["patient"]).returning(t["patient"].c.user_id, t["patient"].c.id),
                        patients,
                    ).all()
                )
                patient_ids = [patient_by_user[p["user_id"]] for p in patients]
                conn.execute(
                    insert(t["consultation"]),
                    [
                        {
                            "kind": "referral",
                            "status": "awaiting_documents",
                            "patient_id": pid,
                            "center_id": centres[str(v[col["centre"]]).lower()],
                            "disease_id": diseases[str(v[col["icd10"]])],
                        }
                        for v, pid in zip(batch, patient_ids, strict=True)
                    ],
                )
                links = [new_link(p["user_id"], expires) for p in patients]
                conn.execute(insert(t["sign_in_link"]), [values for _token, values in links])
                conn.execute(
                    insert(t["outbound_message"]),
                    [
                        {
                            "channel": "sms",
                            "recipient": p["phone"],
                            "body": sms.replace("\x00L", p["phone"])
                            .replace("\x00P", pw)
                            .replace("\x00K", link_prefix + token),
                            "user_id": p["user_id"],
                            "dedupe_key": f"bench-invite:{p['phone']}",
                            "status": "queued",
                        }
                        for p, pw, (token, _values) in zip(patients, passwords, links, strict=True)
                    ],
                )

        batch: list[tuple] = []
        for v in values:
            if not any(x not in (None, "") for x in v):
                continue
            batch.append(v)
            if len(batch) >= BASELINE_CHUNK:
                flush(batch)
                total += len(batch)
                batch = []
        if batch:
            flush(batch)
            total += len(batch)
        wb.close()
    return total


def child_baseline(rows: int, path: Path, *, traced: bool) -> dict[str, Any]:
    import tracemalloc

    from app.extensions import db

    with fresh_database_url() as url, tempfile.TemporaryDirectory() as storage:
        app = create_bench_app(url, storage)
        try:
            set_up_world(app)
            data = path.read_bytes()
            gc.collect()
            if traced:
                tracemalloc.start()
            with RssPeak() as rss:
                t0, c0 = time.perf_counter(), time.process_time()
                inserted = _baseline_import(app, data)
                seconds = time.perf_counter() - t0
                cpu_s = time.process_time() - c0
                peak_rss = rss.peak_kib() * 1024
            peak_traced = tracemalloc.get_traced_memory()[1] if traced else 0
            if traced:
                tracemalloc.stop()
            counts = _counts(app)
        finally:
            with app.app_context():
                db.session.remove()
                db.engine.dispose()
    return {
        "rows": rows,
        "inserted": inserted,
        "seconds": seconds,
        "cpu_s": cpu_s,
        "peak_rss": peak_rss,
        "peak_traced": peak_traced,
        "counts": counts,
    }
