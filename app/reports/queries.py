"""The reports' figures and lists, each a few aggregate statements and one page of rows:
consultations by period, centre, doctor, kind and status; doctor load; cancellations and
missed consultations; referral imports and each row's progress; outbox delivery.

The row statements (`*_rows`, `load_statement`) are also what the exports stream
(app/reports/export_columns.py); the service level has its own module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, case, exists, func, literal, or_, select
from sqlalchemy.orm import aliased

from app.extensions import db
from app.reports.filters import Filters
from app.reports.labels import LOAD_STATUSES
from app.reports.sql import (
    CENTRE_NAME,
    DOCTOR_NAME,
    PAGE_SIZE,
    Page,
    in_period,
    page_bounds,
    person_name,
    scope_conditions,
    with_people,
)
from models import (
    Consultation,
    ConsultationStatus,
    Disease,
    Doctor,
    MedicalCenter,
    OblakoUser,
    OutboundMessage,
    OutboundStatus,
    Patient,
    ReferralImport,
    ReferralImportRow,
)

C = Consultation

# ---------------------------------------------------------------------------------------------
# Consultations by period, centre, doctor, kind and status
# ---------------------------------------------------------------------------------------------


def _consultation_conditions(f: Filters) -> list[ColumnElement[bool]]:
    conditions = [in_period(C.created_at, f), *scope_conditions(f)]
    if f.status:
        conditions.append(C.status == f.status)
    return conditions


@dataclass
class ConsultationsReport:
    by_kind_status: dict[tuple[str, str], int]
    total: int
    page: Page

    def count(self, kind: str, status: str) -> int:
        return self.by_kind_status.get((kind, status), 0)

    def kind_total(self, kind: str) -> int:
        return sum(n for (k, _s), n in self.by_kind_status.items() if k == kind)

    def status_total(self, status: str) -> int:
        return sum(n for (_k, s), n in self.by_kind_status.items() if s == status)


def _consultation_columns() -> list:
    return [
        C.label.label("number"),
        C.kind,
        C.status,
        CENTRE_NAME,
        DOCTOR_NAME,
        func.coalesce(Disease.icd10_code, ""),
        C.created_at,
        C.submitted_at,
        C.due_by,
        C.scheduled_at,
        C.completed_at,
    ]


def consultation_rows(f: Filters) -> Select:
    stmt = select(*_consultation_columns()).select_from(C)
    stmt = with_people(stmt).outerjoin(Disease, Disease.id == C.disease_id)
    return stmt.where(*_consultation_conditions(f))


def consultations_report(f: Filters) -> ConsultationsReport:
    counts = db.session.execute(
        select(C.kind, C.status, func.count())
        .where(*_consultation_conditions(f))
        .group_by(C.kind, C.status)
    ).all()
    by = {(k, s): int(n) for k, s, n in counts}
    total = sum(by.values())
    page, pages = page_bounds(total, f.page)
    rows = db.session.execute(
        consultation_rows(f)
        .order_by(C.created_at.desc(), C.id.desc())
        .limit(PAGE_SIZE)
        .offset((page - 1) * PAGE_SIZE)
    ).all()
    return ConsultationsReport(by, total, Page(list(rows), page, pages, total))


# ---------------------------------------------------------------------------------------------
# Doctor load: consultations per doctor in the period, by status
# ---------------------------------------------------------------------------------------------


def load_statement(f: Filters) -> Select:
    sums = [func.sum(case((C.status == s.value, 1), else_=0)).label(s.value) for s in LOAD_STATUSES]
    total = func.count(C.id)
    conditions = [in_period(C.scheduled_at, f), C.doctor_id.is_not(None), *scope_conditions(f)]
    return (
        select(Doctor.public_id, DOCTOR_NAME, CENTRE_NAME, *sums, total.label("total"))
        .select_from(C)
        .join(Doctor, Doctor.id == C.doctor_id)
        .outerjoin(MedicalCenter, MedicalCenter.id == Doctor.center_id)
        .where(*conditions)
        .group_by(
            Doctor.id,
            Doctor.public_id,
            Doctor.surname,
            Doctor.name,
            Doctor.patronymic,
            MedicalCenter.name,
        )
    )


def load_report(f: Filters) -> Page:
    stmt = load_statement(f)
    total = int(db.session.execute(select(func.count()).select_from(stmt.subquery())).scalar_one())
    page, pages = page_bounds(total, f.page)
    rows = db.session.execute(
        stmt.order_by(func.count(C.id).desc(), Doctor.surname, Doctor.id)
        .limit(PAGE_SIZE)
        .offset((page - 1) * PAGE_SIZE)
    ).all()
    return Page(list(rows), page, pages, total)


# ---------------------------------------------------------------------------------------------
# Cancellations and missed consultations
# ---------------------------------------------------------------------------------------------


CancelledBy = aliased(OblakoUser)


def _cancelled_by():
    by_patient = exists().where(Patient.user_id == C.cancelled_by_id)
    return case(
        (C.status == ConsultationStatus.MISSED.value, literal("missed")),
        (C.cancelled_by_id.is_(None), literal("system")),
        (by_patient, literal("patient")),
        else_=literal("staff"),
    )


def _cancellation_conditions(f: Filters) -> list[ColumnElement[bool]]:
    cancelled = and_(C.status == ConsultationStatus.CANCELLED.value, in_period(C.cancelled_at, f))
    missed = and_(C.status == ConsultationStatus.MISSED.value, in_period(C.missed_at, f))
    conditions = [or_(cancelled, missed), *scope_conditions(f)]
    if f.status:
        conditions.append(C.status == f.status)
    return conditions


def cancellation_rows(f: Filters) -> Select:
    who = _cancelled_by()
    # Staff are named (who cancelled on the clinic's side); a patient never is.
    staff_name = case(
        (who == "staff", func.trim(CancelledBy.last_name + " " + CancelledBy.first_name)),
        else_=literal(""),
    )
    stmt = (
        select(
            C.label.label("number"),
            C.kind,
            C.status,
            CENTRE_NAME,
            DOCTOR_NAME,
            C.scheduled_at,
            func.coalesce(C.cancelled_at, C.missed_at),
            who,
            func.coalesce(staff_name, ""),
            C.cancel_reason,
        )
        .select_from(C)
        .outerjoin(CancelledBy, CancelledBy.id == C.cancelled_by_id)
    )
    return with_people(stmt).where(*_cancellation_conditions(f))


@dataclass
class CancellationsReport:
    by_who: dict[str, int]
    by_kind: dict[str, int]
    total: int
    page: Page


def cancellations_report(f: Filters) -> CancellationsReport:
    who = _cancelled_by()
    counts = db.session.execute(
        select(who, C.kind, func.count()).where(*_cancellation_conditions(f)).group_by(who, C.kind)
    ).all()
    by_who: dict[str, int] = {}
    by_kind: dict[str, int] = {}
    for w, k, n in counts:
        by_who[w] = by_who.get(w, 0) + int(n)
        by_kind[k] = by_kind.get(k, 0) + int(n)
    total = sum(by_who.values())
    page, pages = page_bounds(total, f.page)
    rows = db.session.execute(
        cancellation_rows(f)
        .order_by(func.coalesce(C.cancelled_at, C.missed_at).desc(), C.id.desc())
        .limit(PAGE_SIZE)
        .offset((page - 1) * PAGE_SIZE)
    ).all()
    return CancellationsReport(by_who, by_kind, total, Page(list(rows), page, pages, total))


# ---------------------------------------------------------------------------------------------
# Referral imports and each row's progress
# ---------------------------------------------------------------------------------------------


RowPatient = aliased(Patient)
RowUser = aliased(OblakoUser)
RowConsultation = aliased(Consultation)
DONE_ROW_OUTCOMES = ("imported", "linked")


def _row_joins(stmt: Select) -> Select:
    """A row → its patient, the patient's account, and its consultation (the one the import
    recorded in the row: also when an earlier row's active consultation was reused)."""
    return (
        stmt.outerjoin(RowPatient, RowPatient.id == ReferralImportRow.patient_id)
        .outerjoin(RowUser, RowUser.id == RowPatient.user_id)
        .outerjoin(
            RowConsultation,
            RowConsultation.id == ReferralImportRow.data["consultation_id"].as_integer(),
        )
    )


def _activated():
    return and_(RowUser.last_login.is_not(None), RowUser.must_change_password.is_(False))


def _documents_uploaded():
    return RowConsultation.submitted_at.is_not(None)


def _progress_sums() -> list:
    def n(condition) -> Any:
        return func.sum(case((condition, 1), else_=0))

    return [
        func.count(ReferralImportRow.id).label("rows"),
        n(ReferralImportRow.outcome.in_(DONE_ROW_OUTCOMES)).label("imported"),
        n(ReferralImportRow.outcome == "invalid").label("invalid"),
        n(_activated()).label("activated"),
        n(_documents_uploaded()).label("documents"),
        n(RowConsultation.scheduled_set_at.is_not(None)).label("scheduled"),
        n(RowConsultation.completed_at.is_not(None)).label("completed"),
    ]


def _import_conditions(f: Filters) -> list[ColumnElement[bool]]:
    if f.import_id is not None:
        return [ReferralImport.id == f.import_id]
    return [in_period(ReferralImport.created_at, f)]


def referrals_report(f: Filters) -> Page:
    conditions = _import_conditions(f)
    total = int(
        db.session.execute(
            select(func.count()).select_from(ReferralImport).where(*conditions)
        ).scalar_one()
    )
    page, pages = page_bounds(total, f.page)
    ids = select(ReferralImport.id).where(*conditions)
    ids = ids.order_by(ReferralImport.created_at.desc(), ReferralImport.id.desc())
    page_ids = ids.limit(PAGE_SIZE).offset((page - 1) * PAGE_SIZE).subquery()
    stmt = (
        select(
            ReferralImport.public_id,
            ReferralImport.original_name,
            ReferralImport.created_at,
            ReferralImport.status,
            *_progress_sums(),
        )
        .select_from(ReferralImport)
        .join(page_ids, page_ids.c.id == ReferralImport.id)
        .outerjoin(ReferralImportRow, ReferralImportRow.import_id == ReferralImport.id)
    )
    stmt = _row_joins(stmt).group_by(
        ReferralImport.id,
        ReferralImport.public_id,
        ReferralImport.original_name,
        ReferralImport.created_at,
        ReferralImport.status,
    )
    rows = db.session.execute(
        stmt.order_by(ReferralImport.created_at.desc(), ReferralImport.id.desc())
    ).all()
    return Page(list(rows), page, pages, total)


def _referral_row_columns(personal: bool) -> list:
    columns: list = [
        ReferralImport.original_name,
        ReferralImport.created_at,
        ReferralImportRow.row_number,
    ]
    if personal:
        columns += [
            func.coalesce(
                person_name(RowPatient.surname, RowPatient.name, RowPatient.patronymic), ""
            ),
            func.coalesce(RowPatient.phone, ""),
        ]
    columns += [
        ReferralImportRow.outcome,
        _activated(),
        _documents_uploaded(),
        RowConsultation.scheduled_at,
        RowConsultation.completed_at,
        RowConsultation.status,
    ]
    return columns


def referral_rows(f: Filters, personal: bool) -> Select:
    stmt = (
        select(*_referral_row_columns(personal))
        .select_from(ReferralImportRow)
        .join(ReferralImport, ReferralImport.id == ReferralImportRow.import_id)
    )
    return _row_joins(stmt).where(*_import_conditions(f))


def referral_rows_page(f: Filters, *, personal: bool) -> Page:
    """One import's rows (f.import_id is set) with their progress, a page at a time."""
    total = int(
        db.session.execute(
            select(func.count())
            .select_from(ReferralImportRow)
            .where(ReferralImportRow.import_id == f.import_id)
        ).scalar_one()
    )
    page, pages = page_bounds(total, f.page)
    rows = db.session.execute(
        referral_rows(f, personal)
        .order_by(ReferralImportRow.row_number)
        .limit(PAGE_SIZE)
        .offset((page - 1) * PAGE_SIZE)
    ).all()
    return Page(list(rows), page, pages, total)


# ---------------------------------------------------------------------------------------------
# Outbox delivery
# ---------------------------------------------------------------------------------------------


def _outbox_conditions(f: Filters) -> list[ColumnElement[bool]]:
    conditions = [in_period(OutboundMessage.created_at, f)]
    if f.channel:
        conditions.append(OutboundMessage.channel == f.channel)
    if f.status:
        conditions.append(OutboundMessage.status == f.status)
    return conditions


@dataclass
class OutboxReport:
    counts: dict[tuple[str, str], int]
    failures: Page

    def count(self, channel: str, status: str) -> int:
        return self.counts.get((channel, status), 0)

    def channel_total(self, channel: str) -> int:
        return sum(n for (c, _s), n in self.counts.items() if c == channel)


def outbox_rows(f: Filters, personal: bool) -> Select:
    columns: list = [OutboundMessage.created_at, OutboundMessage.channel]
    if personal:
        columns.append(OutboundMessage.recipient)
    columns += [
        OutboundMessage.status,
        OutboundMessage.attempts,
        OutboundMessage.sent_at,
        OutboundMessage.delivered_via,
        OutboundMessage.last_error,
    ]
    return select(*columns).where(*_outbox_conditions(f))


def outbox_report(f: Filters, *, personal: bool) -> OutboxReport:
    counts = db.session.execute(
        select(OutboundMessage.channel, OutboundMessage.status, func.count())
        .where(*_outbox_conditions(f))
        .group_by(OutboundMessage.channel, OutboundMessage.status)
    ).all()
    by = {(c, s): int(n) for c, s, n in counts}
    failed = sum(n for (_c, s), n in by.items() if s == OutboundStatus.FAILED.value)
    if f.status and f.status != OutboundStatus.FAILED.value:
        failed = 0
    page, pages = page_bounds(failed, f.page)
    rows = db.session.execute(
        outbox_rows(f, personal)
        .where(OutboundMessage.status == OutboundStatus.FAILED.value)
        .order_by(OutboundMessage.created_at.desc(), OutboundMessage.id.desc())
        .limit(PAGE_SIZE)
        .offset((page - 1) * PAGE_SIZE)
    ).all()
    return OutboxReport(by, Page(list(rows), page, pages, failed))
