"""Recordings of video consultations: consent in the ledger, listing, scope-checked playback.

Issue 5 item 6: a call is recorded only when both the patient and the consultation's doctor
have consented for that consultation (a `Consent` row of kind `recording` with its
`consultation_id`, not withdrawn). That rule is models.recording_consents: the media server
runs the same function when the doctor starts a recording and while it runs.

The files are written by the media server under MEDIA_RECORDINGS_DIR (outside static/, random
keys, fsynced, SHA-256 kept) and are served only from views/recordings.py, to the patient the
consultation belongs to and to the consultation's doctor, audited like medical documents
(action `recording.play` / `recording.download`; a refused attempt on an existing recording is
audited as denied). A recording is its own kind of consultation document: `Recording` rows
are linked to the consultation; they are not `MedicalDocument`s, whose types, upload checks
and deletion by the patient do not fit a call recording.

Services take the acting user explicitly and never commit (the view's unit of work does).
"""

from __future__ import annotations

import uuid
from datetime import UTC
from pathlib import Path

from flask import current_app
from flask_babel import lazy_gettext as _l
from sqlalchemy import select, update

from app.audit import audit, audit_consultation
from app.dates import zone
from app.errors import DomainError
from app.extensions import db
from models import (
    AuditOutcome,
    Consent,
    ConsentKind,
    Consultation,
    Doctor,
    Patient,
    Recording,
    RecordingConsents,
    parse_public_id,
    recording_consents,
    stored_file_path,
    utcnow,
)

PATIENT, DOCTOR = "patient", "doctor"


class RecordingError(DomainError):
    """A recording action was refused; str() is shown to the user."""


# ---------------------------------------------------------------------------------------------
# Who: the patient of the consultation, or its doctor — nobody else
# ---------------------------------------------------------------------------------------------


def role_in(user, c: Consultation) -> str | None:
    """ "patient" or "doctor" when `user` is that person of `c`, else None.

    Row scope for recordings is narrower than for documents: not the whole centre, not admins,
    only the two people who consented to be recorded.
    """
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    patient_user = db.session.execute(
        select(Patient.user_id).where(Patient.id == c.patient_id)
    ).scalar_one_or_none()
    if patient_user == user.id:
        return PATIENT
    if c.doctor_id is not None:
        doctor_user = db.session.execute(
            select(Doctor.user_id).where(Doctor.id == c.doctor_id, Doctor.active.is_(True))
        ).scalar_one_or_none()
        if doctor_user == user.id:
            return DOCTOR
    return None


def consultation_for(user, public_id: str | uuid.UUID) -> tuple[Consultation, str] | None:
    """The consultation and the user's role in it, or None (the view answers 404)."""
    pid = parse_public_id(public_id)
    if pid is None:
        return None
    c = db.session.execute(
        select(Consultation).where(Consultation.public_id == pid)
    ).scalar_one_or_none()
    if c is None:
        return None
    role = role_in(user, c)
    return (c, role) if role else None


# ---------------------------------------------------------------------------------------------
# Consent
# ---------------------------------------------------------------------------------------------


def consent_state(c: Consultation) -> RecordingConsents:
    """Each party's active consent to the recording of `c` (models.recording_consents)."""
    return recording_consents(db.session, c.id)


def both_consented(c: Consultation) -> bool:
    return consent_state(c).both


def give_consent(c: Consultation, *, by, ip: str | None = None) -> Consent:
    """Record `by`'s consent to the recording of `c` (idempotent while one is active)."""
    role = role_in(by, c)
    if role is None:
        raise RecordingError(_l("Only the patient and the doctor of the consultation can do this."))
    # Consent may be given or withdrawn until the consultation is over; then it is history.
    if c.is_closed:
        raise RecordingError(_l("The consultation is over: consent can no longer be changed."))
    existing = consent_state(c).of(role)
    if existing is not None:
        return existing
    consent = Consent(
        user_id=by.id,
        consultation_id=c.id,
        kind=ConsentKind.RECORDING,
        policy_version=current_app.config["CONSENT_POLICY_VERSION"],
        accepted_at=utcnow(),
        ip=ip,
    )
    db.session.add(consent)
    db.session.flush()
    audit_consultation("recording.consent", c, by)
    return consent


def withdraw_consent(c: Consultation, *, by) -> int:
    """Withdraw `by`'s active consent(s) for `c`: the ledger row keeps its acceptance and gets
    withdrawn_at. The media server re-reads the ledger during a recording and stops it within
    seconds (media_server/peers/hub.py); the next start is refused."""
    role = role_in(by, c)
    if role is None:
        raise RecordingError(_l("Only the patient and the doctor of the consultation can do this."))
    if c.is_closed:
        raise RecordingError(_l("The consultation is over: consent can no longer be changed."))
    result = db.session.execute(
        update(Consent)
        .where(
            Consent.consultation_id == c.id,
            Consent.user_id == by.id,
            Consent.kind == ConsentKind.RECORDING,
            Consent.withdrawn_at.is_(None),
        )
        .values(withdrawn_at=utcnow())
        .execution_options(synchronize_session="fetch")
    )
    if not result.rowcount:
        raise RecordingError(_l("There is no consent to withdraw."))
    audit_consultation("recording.consent_withdraw", c, by)
    return result.rowcount


# ---------------------------------------------------------------------------------------------
# Recordings
# ---------------------------------------------------------------------------------------------


def recordings_of(c: Consultation) -> list[Recording]:
    stmt = (
        select(Recording)
        .where(Recording.consultation_id == c.id)
        .order_by(Recording.started_at, Recording.id)
    )
    return list(db.session.execute(stmt).scalars())


def find_recording(
    user, public_id: str | uuid.UUID, *, action: str, audit_ok: bool = True
) -> tuple[Recording, Consultation] | None:
    """The recording if `user` is the patient or the doctor of its consultation, else None.

    Like app.documents.access.find_document: an allowed look is audited ok, an existing recording
    outside the user's scope is audited as denied, and the caller answers 404 either way.
    """
    pid = parse_public_id(public_id)
    if pid is None:
        return None
    found = db.session.execute(
        select(Recording, Consultation)
        .join(Consultation, Consultation.id == Recording.consultation_id)
        .where(Recording.public_id == pid)
    ).first()
    if found is None:
        return None
    recording, c = found
    if role_in(user, c) is None:
        audit(
            action,
            actor=user if getattr(user, "is_authenticated", False) else None,
            obj_type="recording",
            obj_id=recording.public_id,
            patient_id=c.patient_id,
            outcome=AuditOutcome.DENIED,
        )
        return None
    if audit_ok:
        audit(
            action,
            actor=user,
            obj_type="recording",
            obj_id=recording.public_id,
            patient_id=c.patient_id,
        )
    return recording, c


def recordings_root() -> Path:
    root = Path(current_app.config["MEDIA_RECORDINGS_DIR"]).resolve()
    static = Path(current_app.static_folder or "").resolve()
    if current_app.static_folder and root.is_relative_to(static):
        raise RuntimeError("MEDIA_RECORDINGS_DIR must not be inside the static folder")
    return root


def recording_path(recording: Recording) -> Path:
    """The recording's file (models.stored_file_path, where the media server wrote it)."""
    return stored_file_path(recordings_root(), recording.storage_key)


def download_name(recording: Recording, c: Consultation) -> str:
    """Named in the consultation's local time (its patient's zone), as its pages show it:
    a file started at 09:05 in Omsk is «…-0905…», not the UTC hour."""
    started = recording.started_at
    if started.tzinfo is None:  # SQLite hands back naive UTC
        started = started.replace(tzinfo=UTC)
    local = started.astimezone(zone(c.patient.timezone if c.patient else None))
    return f"recording-{c.display_number}-{local:%Y%m%d-%H%M%S}.webm"
