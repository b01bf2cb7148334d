"""Recording consent in the ledger, the recordings page, playback and download (views/recordings).

Only the consultation's patient and its doctor may consent, list and play; everybody else (the
other doctor of the same centre, a doctor of another centre, another patient, the admin) gets
404, and an existing recording they reach for is audited as denied.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import select

from tests.conftest import csrf_token, login, patient_username

# The page speaks Russian by default (the service's language).
AGREE = "Я согласен(на) на запись"
NOT_AGREED = "Согласия нет"
BOTH = "Согласие дали оба"
FILE_BYTES = b"\x1aE\xdf\xa3" + b"OblakoRecordingBytes" * 512  # an EBML (WebM) head + filler


@pytest.fixture
def world(app, make_patient, make_center, make_doctor, make_staff, tmp_path, monkeypatch):
    from app.extensions import db
    from models import Consultation, utcnow

    monkeypatch.setitem(app.config, "MEDIA_RECORDINGS_DIR", str(tmp_path / "recordings"))
    c1, c2 = make_center(), make_center()
    w = {
        "d1": make_doctor(username="rec_d1", center_id=c1),
        "d2": make_doctor(username="rec_d2", center_id=c1),
        "d3": make_doctor(username="rec_d3", center_id=c2),
        "p": make_patient(surname="Записова"),
        "q": make_patient(surname="Чужова"),
        "admin": make_staff("Admin", "rec_admin"),
    }
    with app.app_context():
        c = Consultation(
            public_id=uuid.uuid4(),
            kind="centre_request",
            status="scheduled",
            patient_id=w["p"],
            center_id=c1,
            doctor_id=w["d1"],
            scheduled_at=utcnow() + timedelta(minutes=10),
        )
        db.session.add(c)
        db.session.commit()
        w["cid"], w["cpub"] = c.id, str(c.public_id)
    return w


def client_for(app, username: str):
    client = app.test_client()
    assert login(client, username).status_code == 302, "login failed"
    return client


def patient(app, w, key="p"):
    return client_for(app, patient_username(app, w[key]))


def page_url(w) -> str:
    return f"/consultations/recordings/{w['cpub']}/"


def post(client, w, action: str, *, with_csrf: bool = True):
    data = {"csrf_token": csrf_token(client, page_url(w))} if with_csrf else {}
    return client.post(f"/consultations/recordings/{w['cpub']}/{action}", data=data)


def consents(app, w):
    from app.extensions import db
    from models import Consent, ConsentKind

    with app.app_context():
        rows = db.session.execute(
            select(Consent.user_id, Consent.withdrawn_at).where(
                Consent.consultation_id == w["cid"], Consent.kind == ConsentKind.RECORDING
            )
        ).all()
        return [(r.user_id, r.withdrawn_at) for r in rows]


def both(app, w) -> bool:
    from app import recordings as svc
    from app.extensions import db
    from models import Consultation

    with app.app_context():
        return svc.both_consented(db.session.get(Consultation, w["cid"]))


def audit_rows(app, action: str):
    from app.extensions import db
    from models import AuditEvent

    with app.app_context():
        return [
            (e.actor_id, e.object_id, e.outcome, e.patient_id)
            for e in db.session.execute(
                select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)
            ).scalars()
        ]


def user_id_of(app, w, key: str) -> int:
    from app.extensions import db
    from models import Doctor, Patient

    with app.app_context():
        model = Patient if key in ("p", "q") else Doctor
        return db.session.get(model, w[key]).user_id


def add_recording(app, w) -> str:
    """A Recording row and its file, laid out as media_server/peers/recorder.py writes them."""
    from app import recordings as svc
    from app.extensions import db
    from models import Recording, utcnow

    key = uuid.uuid4().hex
    with app.app_context():
        rec = Recording(
            public_id=uuid.uuid4(),
            consultation_id=w["cid"],
            storage_key=key,
            content_type="video/webm",
            size_bytes=len(FILE_BYTES),
            sha256=hashlib.sha256(FILE_BYTES).hexdigest(),
            duration_seconds=12.4,
            started_at=utcnow(),
            ended_at=utcnow(),
        )
        path = svc.recording_path(rec)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(FILE_BYTES)
        db.session.add(rec)
        db.session.commit()
        return str(rec.public_id)


# --- consent ---------------------------------------------------------------------------------


def test_patient_and_doctor_consent_then_withdraw(app, world):
    w = world
    p, d1 = patient(app, w), client_for(app, "rec_d1")
    page = p.get(page_url(w)).get_data(as_text=True)
    assert AGREE in page and NOT_AGREED in page

    assert post(p, w, "consent").status_code == 302
    assert not both(app, w)  # the doctor has not agreed yet
    assert post(d1, w, "consent").status_code == 302
    assert both(app, w)
    assert BOTH in p.get(page_url(w)).get_data(as_text=True)

    # Consenting twice keeps one active row.
    post(p, w, "consent")
    assert len(consents(app, w)) == 2

    assert post(p, w, "withdraw").status_code == 302
    assert not both(app, w)
    rows = dict(consents(app, w))
    # The ledger keeps the row: withdrawn, not deleted.
    assert rows[user_id_of(app, w, "p")] is not None
    assert rows[user_id_of(app, w, "d1")] is None
    page = p.get(page_url(w)).get_data(as_text=True)
    assert AGREE in page

    assert [r[0] for r in audit_rows(app, "recording.consent")] == [
        user_id_of(app, w, "p"),
        user_id_of(app, w, "d1"),
    ]
    assert [r[0] for r in audit_rows(app, "recording.consent_withdraw")] == [
        user_id_of(app, w, "p")
    ]


def test_consent_needs_csrf(app, world):
    p = patient(app, world)
    # The app turns a CSRF refusal into "the form has expired" and a redirect back (303).
    assert post(p, world, "consent", with_csrf=False).status_code == 303
    assert consents(app, world) == []


@pytest.mark.parametrize("who", ["q", "rec_d2", "rec_d3", "rec_admin"])
def test_others_cannot_see_or_consent(app, world, who):
    client = patient(app, world, "q") if who == "q" else client_for(app, who)
    assert client.get(page_url(world)).status_code == 404
    # A token from a page the persona may open: the refusal is the scope, not the CSRF check.
    token = csrf_token(client, "/account/password/")
    response = client.post(
        f"/consultations/recordings/{world['cpub']}/consent", data={"csrf_token": token}
    )
    assert response.status_code == 404
    assert consents(app, world) == []


def test_no_consent_change_after_the_consultation(app, world):
    from app.extensions import db
    from models import Consultation

    p = patient(app, world)
    token = csrf_token(p, page_url(world))
    with app.app_context():
        db.session.get(Consultation, world["cid"]).status = "completed"
        db.session.commit()
    response = p.post(
        f"/consultations/recordings/{world['cpub']}/consent", data={"csrf_token": token}
    )
    assert response.status_code == 302
    assert consents(app, world) == []


def test_anonymous_is_sent_to_sign_in(app, world):
    rid = add_recording(app, world)
    client = app.test_client()
    for url in (page_url(world), f"/consultations/recordings/download/{rid}"):
        response = client.get(url)
        assert response.status_code == 302 and "/login" in response.headers["Location"]
    assert audit_rows(app, "recording.download") == []


# --- listing and playback --------------------------------------------------------------------


@pytest.mark.parametrize("who", ["p", "rec_d1"])
def test_owner_and_doctor_play_and_download(app, world, who):
    rid = add_recording(app, world)
    client = patient(app, world) if who == "p" else client_for(app, who)
    actor = user_id_of(app, world, "p" if who == "p" else "d1")

    page = client.get(page_url(world)).get_data(as_text=True)
    assert f"/consultations/recordings/play/{rid}" in page
    assert "0:00:12" in page  # the duration

    response = client.get(f"/consultations/recordings/download/{rid}")
    assert response.status_code == 200
    assert response.data == FILE_BYTES
    assert response.headers["Content-Type"] == "video/webm"
    assert response.headers["Content-Disposition"].startswith("attachment;")
    assert ".webm" in response.headers["Content-Disposition"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"] == "no-store"

    played = client.get(f"/consultations/recordings/play/{rid}")
    assert played.status_code == 200 and played.data == FILE_BYTES
    assert played.headers["Content-Disposition"].startswith("inline;")
    assert played.headers["X-Content-Type-Options"] == "nosniff"
    assert played.headers["Cache-Control"] == "no-store"
    # A seek is a Range request: served (206), scope-checked, but one playback = one audit row.
    seek = client.get(f"/consultations/recordings/play/{rid}", headers={"Range": "bytes=100-199"})
    assert seek.status_code == 206 and seek.data == FILE_BYTES[100:200]

    patient_id = world["p"]
    assert audit_rows(app, "recording.download") == [(actor, rid, "ok", patient_id)]
    assert audit_rows(app, "recording.play") == [(actor, rid, "ok", patient_id)]


@pytest.mark.parametrize("who", ["q", "rec_d2", "rec_d3", "rec_admin"])
def test_others_get_404_and_are_audited_as_denied(app, world, who):
    rid = add_recording(app, world)
    client = patient(app, world, "q") if who == "q" else client_for(app, who)
    for kind in ("download", "play"):
        response = client.get(f"/consultations/recordings/{kind}/{rid}")
        assert response.status_code == 404
        assert FILE_BYTES[:64] not in response.data
    assert client.get(page_url(world)).status_code == 404
    denied = audit_rows(app, "recording.download") + audit_rows(app, "recording.play")
    assert [(r[1], r[2], r[3]) for r in denied] == [
        (rid, "denied", world["p"]),
        (rid, "denied", world["p"]),
    ]


def test_unknown_recording_is_404(app, world):
    p = patient(app, world)
    assert p.get(f"/consultations/recordings/download/{uuid.uuid4()}").status_code == 404
    assert p.get(f"/consultations/recordings/{uuid.uuid4()}/").status_code == 404


def test_missing_file_is_404_not_500(app, world):
    from app import recordings as svc
    from app.extensions import db
    from models import Recording

    rid = add_recording(app, world)
    with app.app_context():
        rec = db.session.execute(
            select(Recording).where(Recording.public_id == uuid.UUID(rid))
        ).scalar_one()
        svc.recording_path(rec).unlink()
    assert patient(app, world).get(f"/consultations/recordings/download/{rid}").status_code == 404


def test_download_is_named_in_the_consultations_local_time(app, world):
    """Started at 03:05 UTC, the patient in Omsk (UTC+6): the file says 09:05, as her pages."""
    from datetime import UTC, datetime

    from app.extensions import db
    from models import Patient, Recording

    rid = add_recording(app, world)
    with app.app_context():
        db.session.get(Patient, world["p"]).timezone = "Asia/Omsk"
        rec = db.session.execute(
            select(Recording).where(Recording.public_id == uuid.UUID(rid))
        ).scalar_one()
        rec.started_at = datetime(2026, 3, 2, 3, 5, 7, tzinfo=UTC)
        db.session.commit()
    response = patient(app, world).get(f"/consultations/recordings/download/{rid}")
    assert response.status_code == 200
    assert "-20260302-090507.webm" in response.headers["Content-Disposition"]
