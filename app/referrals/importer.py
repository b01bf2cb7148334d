"""The import job (a Huey task, app/tasks.py): the confirmed rows imported in chunks, one commit
and one heartbeat (app/referrals/recovery.py) per chunk, rows already done skipped — so an
interrupted import resumes without duplicates. A chunk the database refuses is retried one row
at a time through the same chunked path; there is no second, row-by-row implementation."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date
from typing import Any

from flask import current_app
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from app.accounts import get_role, public_sign_in_url
from app.audit import audit, audit_values
from app.emails import emails_in_use
from app.errors import DomainError
from app.extensions import db
from app.notifications import outbox_values
from app.permissions import PATIENT
from app.referrals.common import (
    DONE_OUTCOMES,
    IMPORTED,
    INVALID,
    LINKED,
    PENDING,
    ReferralError,
    chunks,
)
from app.referrals.invitations import (
    invitation_format,
    invite_dedupe_key,
    invited_by,
    notify_linked,
)
from app.referrals.recovery import beat
from app.referrals.validation import existing_patients
from app.sign_in_links import link_url, new_link
from models import (
    OPEN_STATUSES,
    AuditEvent,
    Consultation,
    ConsultationKind,
    ConsultationStatus,
    ImportStatus,
    OblakoUser,
    OutboundChannel,
    OutboundMessage,
    Patient,
    PatientSource,
    ReferralImport,
    ReferralImportRow,
    SignInLink,
    utcnow,
)

CHUNK_SIZE = 500


def start_import(imp: ReferralImport, *, by) -> None:
    """Confirm the preview: the rows are imported by the background job. No commit."""
    if imp.status == ImportStatus.DONE:
        raise ReferralError(_l("This table has already been imported."))
    if imp.valid_rows == 0:
        raise ReferralError(_l("The table has no valid rows to import."))
    imp.status = ImportStatus.IMPORTING
    beat(imp)  # queued now: no start within IMPORT_STALL_SECONDS means the message was lost
    audit("referral_import.confirm", actor=by, obj_type="referral_import", obj_id=imp.public_id)


class _NewPatient:
    """A patient (and account) to insert in bulk: what the chunk's later rows and the SMS need."""

    def __init__(self, data: dict, email: str | None, password_hash: str, expires_at) -> None:
        self.id: int | None = None
        self.user_id: int | None = None
        self.public_id = uuid.uuid4()  # the SMS dedupe key names it
        self.phone = data["phone"]
        self.birth_date = date.fromisoformat(data["birth_date"])
        self.user_values = {
            "username": data["phone"],
            "first_name": data["name"],
            "last_name": data["surname"],
            "email": email or f"{data['phone']}@users.invalid",
            "active": True,
            # the one-time password is set in the INSERT itself: no UPDATE follows
            "password": password_hash,
            "must_change_password": True,
            "password_expires_at": expires_at,
            "timezone": None,
            "session_generation": 1,  # as issue_one_time_password leaves a new account
        }
        self.values = {
            "public_id": self.public_id,
            "surname": data["surname"],
            "name": data["name"],
            "patronymic": data.get("patronymic", ""),
            "birth_date": self.birth_date,
            "sex": data["sex"],
            "phone": data["phone"],
            "email": email,
            "snils": data.get("snils"),
            "source": PatientSource.REFERRAL,
        }


class _NewConsultation:
    def __init__(self, values: dict) -> None:
        self.id: int | None = None
        self.values = values


def _planned_patient(data: dict, email: str | None) -> tuple[_NewPatient, str]:
    from app.otp import new_one_time_password  # the sign-in part's module (fast hash, 7 days)

    password, hashed, expires_at = new_one_time_password()
    return _NewPatient(data, email, hashed, expires_at), password


def _insert_rows(table, values: list[dict], key: str) -> list[int]:
    """INSERT the rows, one executemany; their new ids in order. `key` names a column unique
    to each row (set in `values`). On PostgreSQL the ids are taken from the table's sequence
    first (one statement), so the INSERT needs no RETURNING and psycopg pipelines one short
    prepared statement instead of a huge multi-VALUES one. Elsewhere RETURNING gives each id
    with its row's key: asking SQLAlchemy for the ids in parameter order instead
    (`sort_by_parameter_order`) sends one INSERT per row on SQLite, which has no sentinel to
    sort a batch by; unordered, insertmanyvalues batches it."""
    if not values:
        return []
    if db.engine.dialect.name == "postgresql":
        ids = list(
            db.session.execute(
                select(func.nextval(func.pg_get_serial_sequence(table.name, "id"))).select_from(
                    func.generate_series(1, len(values))
                )
            ).scalars()
        )
        if all(i is not None for i in ids):  # else the id has no owned sequence: RETURNING
            db.session.execute(
                insert(table), [{**v, "id": i} for v, i in zip(values, ids, strict=True)]
            )
            return ids
    result = db.session.execute(insert(table).returning(table.c.id, table.c[key]), values)
    id_by_key = {k: i for i, k in result}
    return [id_by_key[v[key]] for v in values]


def _insert_patients(new: list[_NewPatient], role) -> None:
    from flask_appbuilder.security.sqla.models import assoc_user_role

    user_ids = _insert_rows(OblakoUser.__table__, [p.user_values for p in new], "username")
    if user_ids:
        db.session.execute(
            insert(assoc_user_role), [{"user_id": u, "role_id": role.id} for u in user_ids]
        )
    for patient, user_id in zip(new, user_ids, strict=True):
        patient.user_id = user_id
        patient.values["user_id"] = user_id
    ids = _insert_rows(Patient.__table__, [p.values for p in new], "user_id")
    for patient, new_id in zip(new, ids, strict=True):
        patient.id = new_id


@dataclass(slots=True)
class _PendingRow:
    """A pending row as the bulk path reads and writes it: plain values, loaded by one SELECT
    and written back by one executemany UPDATE (no ORM object, history or JSON diff a row)."""

    id: int
    row_number: int
    patient_id: int | None
    data: dict
    errors: list
    outcome: str = PENDING


def _save_rows(rows: list[_PendingRow]) -> None:
    table = ReferralImportRow.__table__
    db.session.execute(
        update(table).where(table.c.id == bindparam("row_id")),
        [
            {
                "row_id": r.id,
                "outcome": r.outcome,
                "patient_id": r.patient_id,
                "data": r.data,
                "errors": r.errors,
            }
            for r in rows
        ],
    )


def _mark_invalid(row: _PendingRow, imp: ReferralImport) -> None:
    row.outcome = INVALID
    row.patient_id = None
    row.errors = [{"column": "", "message": _("The row could not be imported.")}]
    imp.valid_rows -= 1
    imp.error_rows += 1


def _import_chunk(rows: list[_PendingRow], imp: ReferralImport, role, sign_in_url: str) -> None:
    """Import a chunk of pending rows: set-based look-ups (a few IN queries for the whole
    chunk), then the new accounts, patients, consultations, SMS and audit events in two
    flushes, each one batched INSERT per table. Row after row in file order: a later row of
    the chunk links to the patient an earlier one created and reuses its consultation. A row
    the preview could not foresee (a phone registered since with another birth date) is marked
    invalid here; a refusal of the database raises, and the caller retries the chunk one row
    at a time (chunks of one: this is the only import path)."""
    datas = [dict(r.data) for r in rows]
    by_id: dict[int, Patient] = {}
    for chunk in chunks(sorted({r.patient_id for r in rows if r.patient_id})):
        for p in db.session.execute(select(Patient).where(Patient.id.in_(chunk))).scalars():
            by_id[p.id] = p
    by_snils, by_phone = existing_patients(datas)
    emails_taken = emails_in_use(d["email"].lower() for d in datas if d.get("email"))
    by_row: dict[int, Consultation] = {}
    for chunk in chunks([r.id for r in rows]):
        for c in db.session.execute(
            select(Consultation).where(Consultation.referral_row_id.in_(chunk))
        ).scalars():
            by_row[c.referral_row_id] = c
    known = sorted({p.id for p in (*by_id.values(), *by_snils.values(), *by_phone.values())})
    active: dict[tuple[int, int], Consultation] = {}
    for chunk in chunks(known):
        for c in db.session.execute(
            select(Consultation)
            .where(
                Consultation.patient_id.in_(chunk),
                Consultation.kind == ConsultationKind.REFERRAL,
                # an open referral consultation of the patient for the disease is reused
                Consultation.status.in_([s.value for s in OPEN_STATUSES]),
            )
            .order_by(Consultation.id)
        ).scalars():
            active.setdefault((c.patient_id, c.disease_id), c)

    plans: list[tuple[ReferralImportRow, dict, Any, str | None]] = []
    new_patients: list[_NewPatient] = []
    for row, data in zip(rows, datas, strict=True):
        patient = by_id.get(row.patient_id) if row.patient_id else None
        if patient is None and data.get("snils"):
            patient = by_snils.get(data["snils"])
        if patient is None:
            patient = by_phone.get(data["phone"])
            if patient is not None and patient.birth_date.isoformat() != data["birth_date"]:
                # Registered since the preview by someone else with this phone.
                current_app.logger.warning(
                    "referral row %s: the phone is registered with another birth date", row.id
                )
                _mark_invalid(row, imp)
                continue
        password = None
        if patient is None:
            email = data.get("email")
            if email and email.lower() in emails_taken:
                email = None  # taken since the preview; the e-mail is optional
            if email:
                emails_taken.add(email.lower())
            patient, password = _planned_patient(data, email)
            new_patients.append(patient)
            if data.get("snils"):
                by_snils[data["snils"]] = patient
            by_phone[data["phone"]] = patient
        plans.append((row, data, patient, password))
    _insert_patients(new_patients, role)  # ab_user, ab_user_role, patient

    messages: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    links: list[dict[str, Any]] = []
    invitation = invitation_format()
    link_prefix = link_url(sign_in_url, "")  # the site's link address, the secret appended
    for _row, _data, patient, password in plans:
        if password is not None:
            # The one-time sign-in link, for as long as the password (app/sign_in_links.py).
            token, link = new_link(patient.user_id, patient.user_values["password_expires_at"])
            links.append(link)
            # The rows queue_message() and audit() would add (their own builders), as one
            # executemany each (no ids needed back); the dedupe key names a patient created in
            # this transaction, so nothing can have queued it yet (queue_message's
            # new_dedupe_key), and the unique index still guards it.
            messages.append(
                outbox_values(
                    OutboundChannel.SMS,
                    patient.phone,
                    invitation
                    % {
                        "link": link_prefix + token,
                        "url": sign_in_url,
                        "login": patient.phone,
                        "password": password,
                    },
                    user_id=patient.user_id,
                    dedupe_key=invite_dedupe_key(patient, imp.file_sha256),
                )
            )
            events.append(
                audit_values(
                    "referral_import.patient_create",
                    obj_type="patient",
                    obj_id=patient.public_id,
                    patient_id=patient.id,
                )
            )
    new_consultations: list[_NewConsultation] = []
    for row, data, patient, _password in plans:
        consultation = by_row.get(row.id)
        key = (patient.id, data["disease_id"])
        if consultation is None:
            consultation = active.get(key)
        if consultation is None:
            consultation = _NewConsultation(
                {
                    "public_id": uuid.uuid4(),  # the linked patient's notification names it
                    "kind": ConsultationKind.REFERRAL,
                    "status": ConsultationStatus.AWAITING_DOCUMENTS,
                    "patient_id": patient.id,
                    "center_id": data["centre_id"],
                    "disease_id": data["disease_id"],
                    "referral_row_id": row.id,
                }
            )
            new_consultations.append(consultation)
            active[key] = consultation
        by_row[row.id] = consultation
    ids = _insert_rows(Consultation.__table__, [c.values for c in new_consultations], "public_id")
    for consultation, new_id in zip(new_consultations, ids, strict=True):
        consultation.id = new_id
    if messages:
        db.session.execute(insert(SignInLink.__table__), links)
        db.session.execute(insert(OutboundMessage.__table__), messages)
        db.session.execute(insert(AuditEvent.__table__), events)
    _notify_linked_patients(plans, by_row, new_consultations, imp, sign_in_url)

    for row, data, patient, password in plans:
        data["consultation_id"] = by_row[row.id].id
        row.data = data
        row.patient_id = patient.id
        row.outcome = IMPORTED if password is not None else LINKED
    _save_rows(rows)


def _notify_linked_patients(
    plans: list[tuple[ReferralImportRow, dict, Any, str | None]],
    by_row: dict[int, Any],
    new_consultations: list[_NewConsultation],
    imp: ReferralImport,
    sign_in_url: str,
) -> None:
    """notify() each registered patient whose row opened a new referral consultation: two IN
    queries for the chunk (invitations of this file, the patients' users), then the
    notifications and their outbox rows go out with the chunk's commit (one batched flush)."""
    new = {id(c) for c in new_consultations}
    linked = [
        (patient, by_row[row.id])
        for row, _data, patient, password in plans
        if password is None
        and isinstance(patient, Patient)  # registered before this chunk, not planned in it
        and id(by_row[row.id]) in new
        and by_row[row.id].values["referral_row_id"] == row.id
    ]
    if not linked:
        return
    # Created by an earlier chunk of this import (or an earlier run of it): invited, not linked.
    invited = invited_by({invite_dedupe_key(p, imp.file_sha256): p.id for p, _c in linked})
    users: dict[int, OblakoUser] = {}
    for chunk in chunks(sorted({p.user_id for p, _c in linked})):
        for user in db.session.execute(
            select(OblakoUser).where(OblakoUser.id.in_(chunk))
        ).scalars():
            users[user.id] = user
    for patient, consultation in linked:
        if patient.id not in invited and patient.user_id in users:
            notify_linked(
                users[patient.user_id], patient, consultation.values["public_id"], sign_in_url
            )


def _pending_rows(
    import_id: int, limit: int, after: int | None = None, *, ids: list[int] | None = None
) -> list[_PendingRow]:
    """The next pending rows in file order; `after` (the last row number of the previous
    chunk) starts the index walk there instead of stepping over every row already done;
    `ids` keeps to these rows (a refused chunk retried one row at a time)."""
    stmt = (
        select(
            ReferralImportRow.id,
            ReferralImportRow.row_number,
            ReferralImportRow.patient_id,
            ReferralImportRow.data,
            ReferralImportRow.errors,
        )
        .where(ReferralImportRow.import_id == import_id, ReferralImportRow.outcome == PENDING)
        .order_by(ReferralImportRow.row_number)
        .limit(limit)
    )
    if after is not None:
        stmt = stmt.where(ReferralImportRow.row_number > after)
    if ids is not None:
        stmt = stmt.where(ReferralImportRow.id.in_(ids))
    if db.engine.dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True)  # two workers never take the same rows
    return [_PendingRow(*r) for r in db.session.execute(stmt)]


def _count_done(import_id: int) -> int:
    return db.session.execute(
        select(func.count())
        .select_from(ReferralImportRow)
        .where(
            ReferralImportRow.import_id == import_id,
            ReferralImportRow.outcome.in_(DONE_OUTCOMES),
        )
    ).scalar_one()


def run_import(
    import_id: int,
    *,
    sign_in_url: str | None = None,
    chunk_size: int = CHUNK_SIZE,
    max_chunks: int | None = None,
) -> dict[str, int]:
    """Import the pending valid rows, one commit per chunk. Safe to run again at any point:
    rows already imported are skipped. `max_chunks` stops early (tests of resuming)."""
    sign_in_url = sign_in_url or public_sign_in_url()
    imp = db.session.get(ReferralImport, import_id)
    if imp is None or imp.status == ImportStatus.DONE:
        return {"imported": 0}
    imp.status = ImportStatus.IMPORTING
    beat(imp)
    db.session.commit()
    role = get_role(PATIENT)
    chunks = 0
    after: int | None = None
    while max_chunks is None or chunks < max_chunks:
        rows = _pending_rows(import_id, chunk_size, after)
        if not rows and after is not None:
            # Once more from the top: rows another worker held (PostgreSQL) and let go.
            after = None
            rows = _pending_rows(import_id, chunk_size)
        if not rows:
            break
        after = rows[-1].row_number
        row_ids = [r.id for r in rows]
        try:
            _import_chunk(rows, imp, role, sign_in_url)
            # Counted up in the database (another worker may add its chunks meanwhile), not
            # recounted: a COUNT per chunk reads every row of the import again.
            done = sum(r.outcome in DONE_OUTCOMES for r in rows)
            imp.imported_rows = ReferralImport.imported_rows + done
            beat(imp)
            db.session.commit()
        except (IntegrityError, DomainError, KeyError, ValueError):
            db.session.rollback()
            # Find the row that fails, import the others one by one, keep going.
            _import_one_by_one(row_ids, import_id, sign_in_url)
            imp = db.session.get(ReferralImport, import_id)
            imp.imported_rows = _count_done(import_id)
            beat(imp)
            db.session.commit()
        db.session.expunge_all()  # nothing is kept between chunks (memory stays flat)
        imp = db.session.get(ReferralImport, import_id)
        role = get_role(PATIENT)
        chunks += 1
    remaining = db.session.execute(
        select(func.count())
        .select_from(ReferralImportRow)
        .where(ReferralImportRow.import_id == import_id, ReferralImportRow.outcome == PENDING)
    ).scalar_one()
    imp.imported_rows = _count_done(import_id)
    if not remaining:
        imp.status = ImportStatus.DONE
        imp.finished_at = utcnow()
    db.session.commit()
    return {"imported": imp.imported_rows, "remaining": remaining}


def _import_one_by_one(row_ids: list[int], import_id: int, sign_in_url: str) -> None:
    """The rows of a refused chunk, each as a chunk of one (the one import path): the row the
    database refuses is marked invalid, the others are imported. Any other error (the database
    gone) propagates: the rows stay pending for a resume."""
    for row_id in row_ids:
        rows = _pending_rows(import_id, 1, ids=[row_id])
        if not rows:
            continue  # done meanwhile, or held by another worker (PostgreSQL)
        imp = db.session.get(ReferralImport, import_id)
        try:
            _import_chunk(rows, imp, get_role(PATIENT), sign_in_url)
            beat(imp)
            db.session.commit()
        except (IntegrityError, DomainError, KeyError, ValueError) as exc:
            # A row the preview could not foresee (e.g. the phone taken meanwhile as a login).
            db.session.rollback()
            current_app.logger.warning("referral row %s failed: %r", row_id, exc)
            row = db.session.get(ReferralImportRow, row_id)
            row.outcome = INVALID
            row.patient_id = None
            row.errors = [{"column": "", "message": _("The row could not be imported.")}]
            imp = db.session.get(ReferralImport, import_id)
            imp.valid_rows -= 1
            imp.error_rows += 1
            beat(imp)
            db.session.commit()


def import_progress(imp: ReferralImport) -> dict[str, Any]:
    percent = 100 if not imp.valid_rows else int(100 * imp.imported_rows / imp.valid_rows)
    return {
        "status": imp.status,
        "total_rows": imp.total_rows,
        "valid_rows": imp.valid_rows,
        "error_rows": imp.error_rows,
        "imported_rows": imp.imported_rows,
        "percent": min(percent, 100),
        "done": imp.status == ImportStatus.DONE,
    }
