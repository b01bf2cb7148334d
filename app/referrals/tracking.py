"""Following a referral import: each row's patient, consultation and stage (invited → signed in
→ documents → scheduled → concluded), the manager's lists, and the tracking table exported to
the regional specialists as XLSX."""

from __future__ import annotations

import io
from dataclasses import dataclass

from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from sqlalchemy import func, select

from app.extensions import db
from app.referrals.common import HEADERS, IMPORTED, INVALID, LINKED, PENDING, chunks
from app.spreadsheet import xlsx_text_cells
from models import (
    CLOSED_STATUSES,
    Consultation,
    ConsultationStatus,
    Patient,
    ReferralImport,
    ReferralImportRow,
)

STAGES = ("invited", "signed_in", "documents_uploaded", "scheduled", "concluded")
STAGE_LABELS = {
    "not_imported": _l("Not imported"),
    "invalid": _l("Error in the row"),
    "invited": _l("Invited"),
    "signed_in": _l("Signed in"),
    "documents_uploaded": _l("Documents uploaded"),
    "scheduled": _l("Scheduled"),
    "concluded": _l("Concluded"),
    "closed": _l("Closed"),
}
OUTCOME_LABELS = {
    PENDING: _l("Waiting for import"),
    INVALID: _l("Error"),
    IMPORTED: _l("Account created"),
    LINKED: _l("Linked to a registered patient"),
}


@dataclass
class TrackedRow:
    row: ReferralImportRow
    patient: Patient | None
    consultation: Consultation | None
    stage: str


def _stage(row: ReferralImportRow, patient: Patient | None, c: Consultation | None) -> str:
    if row.outcome == INVALID:
        return "invalid"
    if row.outcome == PENDING or patient is None:
        return "not_imported"
    if c is not None:
        if c.status == ConsultationStatus.COMPLETED:
            return "concluded"
        if c.status in (ConsultationStatus.SCHEDULED, ConsultationStatus.IN_PROGRESS):
            return "scheduled"
        if c.status in CLOSED_STATUSES:  # the other ways a consultation ends
            return "closed"
        if c.status != ConsultationStatus.AWAITING_DOCUMENTS or c.submitted_at is not None:
            return "documents_uploaded"
    if patient.user is not None and patient.user.last_login is not None:
        return "signed_in"
    return "invited"


def tracked_rows(rows: list[ReferralImportRow]) -> list[TrackedRow]:
    """Each row with its patient, consultation and stage (three queries for a page)."""
    patient_ids = {r.patient_id for r in rows if r.patient_id}
    consultation_ids = {r.data.get("consultation_id") for r in rows} - {None}
    patients = {}
    for chunk in chunks(sorted(patient_ids)):
        for p in db.session.execute(select(Patient).where(Patient.id.in_(chunk))).scalars():
            patients[p.id] = p
    consultations = {}
    for chunk in chunks(sorted(consultation_ids)):
        for c in db.session.execute(
            select(Consultation).where(Consultation.id.in_(chunk))
        ).scalars():
            consultations[c.id] = c
    result = []
    for row in rows:
        patient = patients.get(row.patient_id)
        c = consultations.get(row.data.get("consultation_id"))
        result.append(TrackedRow(row, patient, c, _stage(row, patient, c)))
    return result


def import_rows(
    imp: ReferralImport, *, errors_only: bool = False, page: int = 1, page_size: int = 100
) -> tuple[list[ReferralImportRow], int]:
    condition = ReferralImportRow.import_id == imp.id
    if errors_only:
        condition = condition & (ReferralImportRow.outcome == INVALID)
    total = db.session.execute(
        select(func.count()).select_from(ReferralImportRow).where(condition)
    ).scalar_one()
    rows = list(
        db.session.execute(
            select(ReferralImportRow)
            .where(condition)
            .order_by(ReferralImportRow.row_number)
            .offset((max(page, 1) - 1) * page_size)
            .limit(page_size)
        ).scalars()
    )
    return rows, total


def referral_patients(imp: ReferralImport) -> list[int]:
    return list(
        db.session.execute(
            select(ReferralImportRow.patient_id).where(
                ReferralImportRow.import_id == imp.id, ReferralImportRow.patient_id.is_not(None)
            )
        ).scalars()
    )


def export_tracking_xlsx(imp: ReferralImport) -> bytes:
    """The tracking table for the regional specialists. Text cells are always text: a value
    starting with = + - @ is never a formula when the file is opened (app/spreadsheet.py)."""
    from openpyxl import Workbook

    wb = Workbook(write_only=True)
    ws = wb.create_sheet("Направления")
    headers = [
        _("Row"),
        HEADERS["full_name"],
        HEADERS["birth_date"],
        HEADERS["phone"],
        HEADERS["icd10"],
        HEADERS["centre"],
        HEADERS["referring_org"],
        HEADERS["physician"],
        _("Outcome"),
        _("Stage"),
        _("Consultation"),
        _("Errors"),
    ]
    ws.append(headers)
    cell = xlsx_text_cells(ws)  # never a formula, whatever the text starts with

    import_id, last = imp.id, 0
    while True:
        rows = list(
            db.session.execute(
                select(ReferralImportRow)
                .where(
                    ReferralImportRow.import_id == import_id, ReferralImportRow.row_number > last
                )
                .order_by(ReferralImportRow.row_number)
                .limit(1000)
            ).scalars()
        )
        if not rows:
            break
        for t in tracked_rows(rows):
            raw = t.row.data.get("raw", {})
            ws.append(
                [
                    t.row.row_number,
                    cell(t.patient.full_name if t.patient else raw.get("full_name", "")),
                    cell(raw.get("birth_date", "")),
                    cell(t.patient.phone if t.patient else raw.get("phone", "")),
                    cell(raw.get("icd10", "")),
                    cell(raw.get("centre", "")),
                    cell(raw.get("referring_org", "")),
                    cell(raw.get("physician", "")),
                    cell(str(OUTCOME_LABELS.get(t.row.outcome, t.row.outcome))),
                    cell(str(STAGE_LABELS.get(t.stage, t.stage))),
                    cell(str(t.consultation) if t.consultation else ""),
                    cell("; ".join(f"{e['column']}: {e['message']}" for e in t.row.errors)),
                ]
            )
        last = rows[-1].row_number
        db.session.expunge_all()
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()


def recent_imports(limit: int = 100) -> list[ReferralImport]:
    return list(
        db.session.execute(
            select(ReferralImport).order_by(ReferralImport.created_at.desc()).limit(limit)
        ).scalars()
    )


def import_by_public_id(public_id) -> ReferralImport | None:
    return db.session.execute(
        select(ReferralImport).where(ReferralImport.public_id == public_id)
    ).scalar_one_or_none()
