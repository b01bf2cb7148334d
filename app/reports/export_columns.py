"""What each report exports: its columns (Russian headers, each with a kind the writers format
by), the statement whose rows go into the file, and the conversion of a row into cells.

Personal columns (a patient's name and phone, a message's recipient) are added only for
PERSONAL_DATA_ROLES (app/reports/access.py). Writing the file is app/reports/exports.py.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from sqlalchemy import Select, func, literal

from app.labels import (
    CHANNEL_LABELS,
    OUTBOUND_STATUS_LABELS,
    STAFF_KIND_LABELS,
    STAFF_STATUS_LABELS,
)
from app.reports.access import may_see_personal_data
from app.reports.filters import Filters, ReportError
from app.reports.labels import (
    CANCEL_BY_LABELS,
    LOAD_STATUSES,
    OUTCOME_LABELS,
    REPORT_TITLES,
    ROW_OUTCOME_LABELS,
    labels,
)
from app.reports.queries import (
    cancellation_rows,
    consultation_rows,
    load_statement,
    outbox_rows,
    referral_rows,
)
from app.reports.service_level import answer_moment, sla_rows
from app.reports.sql import seconds_between
from models import (
    Consultation,
    Doctor,
    OutboundMessage,
    ReferralImport,
    ReferralImportRow,
    UTCDateTime,
    utcnow,
)

C = Consultation


@dataclass(frozen=True)
class ExportColumn:
    label: Any  # a lazy string: rendered once per export
    kind: str = "text"  # text | number | datetime | yesno


@dataclass
class Export:
    """One report's rows for a file: headers, the statement and the per-row conversion."""

    key: str
    title: str
    columns: list[ExportColumn]
    statement: Select
    convert: Callable[[Sequence[Any]], list[Any]]
    period: tuple[datetime, datetime] | None = None


def build_export(report: str, f: Filters, *, user, now: datetime | None = None) -> Export:
    """The export of one report with the viewer's filters; personal columns per the viewer."""
    export = _build_export(report, f, user=user, now=now)
    export.period = (f.start, f.end)
    return export


def _build_export(report: str, f: Filters, *, user, now: datetime | None = None) -> Export:
    now = now or utcnow()
    personal = may_see_personal_data(user)
    kinds, statuses = labels(STAFF_KIND_LABELS), labels(STAFF_STATUS_LABELS)
    yes, no = _("Yes"), _("No")
    title = str(REPORT_TITLES[report])
    col = ExportColumn
    # The first columns of every list of consultations: r[0]..r[4] of its statement.
    consultation_columns = [
        col(_l("Number")),
        col(_l("Kind")),
        col(_l("Status")),
        col(_l("Medical centre")),
        col(_l("Doctor")),
    ]

    if report == "consultations":
        columns = [
            *consultation_columns,
            col(_l("ICD-10")),
            col(_l("Created"), "datetime"),
            col(_l("Submitted"), "datetime"),
            col(_l("Due by"), "datetime"),
            col(_l("Scheduled for"), "datetime"),
            col(_l("Completed"), "datetime"),
        ]

        def convert(r: Sequence[Any]) -> list[Any]:
            return [
                r[0], kinds.get(r[1], r[1]), statuses.get(r[2], r[2]),
                r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10],
            ]  # fmt: skip

        return Export(report, title, columns, consultation_rows(f).order_by(C.id), convert)

    if report == "sla":
        outcomes = labels(OUTCOME_LABELS)
        columns = [
            *consultation_columns,
            col(_l("Submitted"), "datetime"),
            col(_l("Due by"), "datetime"),
            col(_l("Answered"), "datetime"),
            col(_l("Outcome")),
            col(_l("Delay, hours"), "number"),
        ]

        def convert(r: Sequence[Any]) -> list[Any]:
            return [
                r[0], kinds.get(r[1], r[1]), statuses.get(r[2], r[2]), r[3], r[4],
                r[5], r[6], r[7], outcomes.get(r[8], r[8]), round(max(float(r[9] or 0), 0), 1),
            ]  # fmt: skip

        # The delay is computed by the database: a CSV gets the timestamps as text.
        late = seconds_between(
            C.due_by, func.coalesce(answer_moment(), literal(now, UTCDateTime()))
        )
        stmt = sla_rows(f, now).add_columns(late / 3600.0).order_by(C.due_by, C.id)
        return Export(report, title, columns, stmt, convert)

    if report == "load":
        columns = [
            col(_l("Doctor")),
            col(_l("Medical centre")),
            *[col(STAFF_STATUS_LABELS[s], "number") for s in LOAD_STATUSES],
            col(_l("Total"), "number"),
        ]

        def convert(r: Sequence[Any]) -> list[Any]:
            return [r[1], r[2], *(int(v or 0) for v in r[3:])]

        stmt = load_statement(f).order_by(func.count(C.id).desc(), Doctor.surname, Doctor.id)
        return Export(report, title, columns, stmt, convert)

    if report == "cancellations":
        who_labels = labels(CANCEL_BY_LABELS)
        columns = [
            *consultation_columns,
            col(_l("Scheduled for"), "datetime"),
            col(_l("Cancelled or missed"), "datetime"),
            col(_l("Who")),
            col(_l("Staff member")),
            col(_l("Reason")),
        ]

        def convert(r: Sequence[Any]) -> list[Any]:
            return [
                r[0], kinds.get(r[1], r[1]), statuses.get(r[2], r[2]), r[3], r[4],
                r[5], r[6], who_labels.get(r[7], r[7]), r[8], r[9],
            ]  # fmt: skip

        return Export(report, title, columns, cancellation_rows(f).order_by(C.id), convert)

    if report == "referrals":
        outcomes = labels(ROW_OUTCOME_LABELS)
        columns = [col(_l("File")), col(_l("Uploaded at"), "datetime"), col(_l("Row"), "number")]
        if personal:
            columns += [col(_l("Patient")), col(_l("Phone"))]
        columns += [
            col(_l("Outcome")),
            col(_l("Account activated"), "yesno"),
            col(_l("Documents uploaded"), "yesno"),
            col(_l("Scheduled for"), "datetime"),
            col(_l("Completed"), "datetime"),
            col(_l("Consultation status")),
        ]
        n = 5 if personal else 3

        def convert(r: Sequence[Any]) -> list[Any]:
            return [
                *r[:n], outcomes.get(r[n], r[n]), yes if r[n + 1] else no,
                yes if r[n + 2] else no, r[n + 3], r[n + 4],
                statuses.get(r[n + 5], r[n + 5] or ""),
            ]  # fmt: skip

        stmt = referral_rows(f, personal).order_by(ReferralImport.id, ReferralImportRow.row_number)
        return Export(report, title, columns, stmt, convert)

    if report == "outbox":
        channels, out_statuses = labels(CHANNEL_LABELS), labels(OUTBOUND_STATUS_LABELS)
        columns = [col(_l("Created"), "datetime"), col(_l("Channel"))]
        if personal:
            columns.append(col(_l("Recipient")))
        columns += [
            col(_l("Status")),
            col(_l("Attempts"), "number"),
            col(_l("Sent"), "datetime"),
            col(_l("Delivered via")),
            col(_l("Last error")),
        ]
        n = 3 if personal else 2

        def convert(r: Sequence[Any]) -> list[Any]:
            return [r[0], channels.get(r[1], r[1]), *r[2:n], out_statuses.get(r[n], r[n]),
                    *r[n + 1 :]]  # fmt: skip

        stmt = outbox_rows(f, personal).order_by(OutboundMessage.id)
        return Export(report, title, columns, stmt, convert)

    raise ReportError(_("Unknown report."))
