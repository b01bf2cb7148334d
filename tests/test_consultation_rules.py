"""The rules the web app and the media server share, in their one place (models.py): which
statuses are closed, when the room and the chat are open, who consented to recording, where a
stored file (a recording) lives.

Each rule's Python form and its SQL form (the media server decides in its insert statement)
must agree for every kind and status, on the database under test.
"""

from __future__ import annotations

import uuid
from itertools import product

import pytest
from sqlalchemy import select

from models import (
    CLOSED_STATUSES,
    ROOM_STATUSES,
    Consultation,
    ConsultationKind,
    ConsultationStatus,
)

# The rules as the contract states them (docs/media-contract.md), spelled out once more here
# so that a change to models.py shows up as a failing expectation, not a silent new rule.
CHAT_OPEN = {
    (ConsultationKind.DUTY, ConsultationStatus.SCHEDULED),
    *((kind, ConsultationStatus.IN_PROGRESS) for kind in ConsultationKind),
}


def _every_combination(app, make_patient) -> dict[int, tuple[str, str]]:
    from app.extensions import db

    patient = make_patient()
    ids = {}
    with app.app_context():
        for kind, status in product(ConsultationKind, ConsultationStatus):
            c = Consultation(public_id=uuid.uuid4(), kind=kind, status=status, patient_id=patient)
            db.session.add(c)
            db.session.flush()
            ids[c.id] = (kind, status)
        db.session.commit()
    return ids


def test_each_rule_in_python_and_in_sql_agrees_for_every_kind_and_status(app, make_patient):
    from app.extensions import db

    ids = _every_combination(app, make_patient)
    with app.app_context():
        sql = {
            row.id: (bool(row.is_closed), bool(row.chat_open), bool(row.guest_chat_open))
            for row in db.session.execute(
                select(
                    Consultation.id,
                    Consultation.is_closed.label("is_closed"),
                    Consultation.chat_open.label("chat_open"),
                    Consultation.guest_chat_open.label("guest_chat_open"),
                ).where(Consultation.id.in_(ids))
            )
        }
        python = {
            c.id: (c.is_closed, c.chat_open, c.guest_chat_open)
            for c in db.session.scalars(select(Consultation).where(Consultation.id.in_(ids)))
        }
    expected = {
        cid: (
            status in CLOSED_STATUSES,
            (kind, status) in CHAT_OPEN,
            status == ConsultationStatus.IN_PROGRESS,
        )
        for cid, (kind, status) in ids.items()
    }
    assert python == expected
    assert sql == expected


def test_the_room_and_the_chat_are_open_only_in_open_statuses():
    """No status is both closed and a room status; chat never opens outside the room."""
    assert not ROOM_STATUSES & CLOSED_STATUSES
    assert {status for _, status in CHAT_OPEN} <= ROOM_STATUSES


def test_recording_consents_need_the_patient_and_the_assigned_doctor(
    app, make_patient, make_center, make_doctor
):
    """models.recording_consents: both parties' active consents for this consultation; a
    withdrawn one, another consultation's, or another kind does not count; no doctor
    assigned, nobody's consent is enough."""
    from app.extensions import db
    from models import Consent, ConsentKind, Doctor, Patient, recording_consents, utcnow

    center = make_center()
    doctor, patient = make_doctor(center_id=center), make_patient()
    with app.app_context():
        c, other, unassigned = (
            Consultation(
                public_id=uuid.uuid4(),
                kind="centre_request",
                status="scheduled",
                patient_id=patient,
                center_id=center,
                doctor_id=doc,
            )
            for doc in (doctor, doctor, None)
        )
        db.session.add_all([c, other, unassigned])
        db.session.flush()
        patient_user = db.session.get(Patient, patient).user_id
        doctor_user = db.session.get(Doctor, doctor).user_id

        def consent(user_id: int, cid: int, kind: str = ConsentKind.RECORDING, **kw) -> Consent:
            row = Consent(user_id=user_id, consultation_id=cid, kind=kind, policy_version="1", **kw)
            db.session.add(row)
            db.session.flush()
            return row

        def state(cid: int) -> tuple[bool, bool, bool, bool]:
            s = recording_consents(db.session, cid)
            return s.patient is not None, s.doctor is not None, s.doctor_assigned, s.both

        assert state(c.id) == (False, False, True, False)
        given = consent(patient_user, c.id)
        consent(doctor_user, c.id, withdrawn_at=utcnow())  # withdrawn: does not count
        consent(doctor_user, other.id)  # another consultation's
        consent(doctor_user, c.id, kind=ConsentKind.TELEMEDICINE)  # another kind
        assert state(c.id) == (True, False, True, False)
        assert recording_consents(db.session, c.id).of("patient") is given
        consent(doctor_user, c.id)
        assert state(c.id) == (True, True, True, True)
        consent(patient_user, unassigned.id)
        assert state(unassigned.id) == (True, False, False, False)
        assert state(-1) == (False, False, False, False)  # no such consultation
        db.session.rollback()


def test_stored_files_fan_out_by_key_and_bad_keys_never_reach_the_disk(tmp_path):
    """models.stored_file_path: the layout the media server writes recordings in and the web
    app reads them from. Only 32 hex digits make a key (a trailing newline, which a `$` regex
    let through, is refused too)."""
    from models import stored_file_path

    key = uuid.uuid4().hex
    assert stored_file_path(tmp_path, key) == tmp_path / key[:2] / key[2:4] / key
    for bad in (key + "\n", key.upper(), key[:-1], "../" + key[3:], "", None):
        with pytest.raises(ValueError):
            stored_file_path(tmp_path, bad)  # type: ignore[arg-type]


@pytest.mark.no_db
def test_a_public_id_is_parsed_once_and_junk_is_no_id():
    """models.parse_public_id: the documents, recordings, booking and conclusions all read the
    ids in URLs and forms through it; whatever is not a UUID is None (the caller's 404)."""
    from models import parse_public_id

    pid = uuid.uuid4()
    assert parse_public_id(pid) is pid
    assert parse_public_id(str(pid)) == pid
    assert parse_public_id(pid.hex.upper()) == pid
    for junk in ("", "abc", "1", None, 42, f"{pid}x", "../etc/passwd"):
        assert parse_public_id(junk) is None
