"""Writing a report's export: CSV streamed while the rows are read, XLSX built in a temporary
file and sent in chunks, and the audit event of every export.

CSV (UTF-8 with a BOM, `;`) is written while the rows are read (a server-side cursor on
PostgreSQL); XLSX goes through openpyxl's write-only workbook into a temporary file, a new sheet
at Excel's row limit. Dates are on the viewer's clock. A text cell that a spreadsheet could take
for a formula is written as text (app/spreadsheet.py is the rule). Flask-Admin's tablib export
is not used: it holds everything in memory.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import DateTime, Select, func, type_coerce

from app.audit import audit
from app.dates import zone
from app.extensions import db
from app.reports.access import may_see_personal_data
from app.reports.export_columns import Export
from app.reports.filters import Filters
from app.spreadsheet import csv_text, xlsx_text_cells
from models import AuditOutcome, UTCDateTime

XLSX_MAX_ROWS = 1_048_576  # Excel's limit per sheet, the header included
STREAM_CHUNK = 1000
CSV_DELIMITER = ";"  # what a Russian-locale spreadsheet expects (the comma is the decimal mark)


def fixed_offset_minutes(tz_name: str, period: tuple[datetime, datetime] | None) -> int | None:
    """The zone's UTC offset in minutes if it is the same on every day of the period and a
    year either side (appointments and due dates lie beyond the period), else None."""
    if period is None:
        return None
    tz = zone(tz_name)
    day = period[0] - timedelta(days=366)
    last = period[1] + timedelta(days=366)
    offsets = set()
    while day <= last:
        offsets.add(day.astimezone(tz).utcoffset())
        if len(offsets) > 1:
            return None
        day += timedelta(days=1)
    (offset,) = offsets
    return int((offset or timedelta(0)).total_seconds() // 60)


def _local_text_sql(column, tz_name: str, dialect: str, minutes: int | None):
    """A timestamp as 'YYYY-MM-DD HH:MM' on the viewer's clock, formatted by the database
    (no per-value work in Python), or None where the database cannot do it exactly."""
    if dialect == "postgresql":
        return func.to_char(func.timezone(tz_name, column), "YYYY-MM-DD HH24:MI")
    if dialect == "sqlite" and minutes is not None:
        return func.strftime("%Y-%m-%d %H:%M", column, f"{minutes:+d} minutes")
    return None


def export_statement(stmt: Select, *, text_tz: str | None = None, period=None) -> Select:
    """The statement as an export runs it: timestamps either as local text formatted by the
    database (`text_tz`: CSV) or without the UTC column type (LocalTime converts them). A
    million rows feel every step per value."""
    dialect = db.session.get_bind().dialect.name
    minutes = fixed_offset_minutes(text_tz, period) if text_tz and dialect == "sqlite" else None
    columns = []
    for column in stmt.selected_columns:
        if isinstance(column.type, UTCDateTime):
            as_text = _local_text_sql(column, text_tz, dialect, minutes) if text_tz else None
            columns.append(
                as_text if as_text is not None else type_coerce(column, DateTime(timezone=True))
            )
        else:
            columns.append(column)
    return stmt.with_only_columns(*columns, maintain_column_froms=True)


def iter_export_rows(
    export: Export, chunk: int = STREAM_CHUNK, *, text_tz: str | None = None
) -> Iterator[list[Any]]:
    """The rows, converted, read in chunks: a server-side cursor on PostgreSQL (SQLite's
    cursor is lazy already), so memory does not grow with the number of rows. Core
    execution: the ORM adds nothing to plain columns."""
    connection = db.session.connection()
    result = connection.execute(
        export_statement(export.statement, text_tz=text_tz, period=export.period),
        execution_options={"stream_results": True, "yield_per": chunk},
    )
    convert = export.convert
    try:
        for partition in result.partitions(chunk):
            for row in partition:
                yield convert(row)
    finally:
        result.close()


class LocalTime:
    """UTC moments as the viewer's wall clock, fast: the zone database is asked once per
    distinct hour (offsets change on the hour at most), the rest is arithmetic. Accepts
    aware datetimes and naive ones meaning UTC."""

    def __init__(self, tz_name: str) -> None:
        self.tz: ZoneInfo = zone(tz_name)
        self._offsets: dict[tuple[int, int, int, int], timedelta] = {}

    def offset(self, value: datetime) -> timedelta:
        key = (value.year, value.month, value.day, value.hour)
        found = self._offsets.get(key)
        if found is None:
            moment = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
            found = moment.astimezone(self.tz).utcoffset() or timedelta(0)
            if len(self._offsets) > 100_000:
                self._offsets.clear()
            self._offsets[key] = found
        return found

    def naive(self, value: datetime) -> datetime:
        local = value + self.offset(value)
        return local.replace(tzinfo=None) if local.tzinfo is not None else local

    def text(self, value: datetime) -> str:
        """'YYYY-MM-DD HH:MM' on the viewer's clock: unambiguous, and every spreadsheet reads
        it as a date."""
        return str(value + self.offset(value))[:16]


def _indexes(export: Export, kind: str) -> list[int]:
    return [i for i, c in enumerate(export.columns) if c.kind == kind]


def stream_csv(
    export: Export, *, tz: str, on_done: Callable[[int, AuditOutcome], None]
) -> Iterator[bytes]:
    """The export as UTF-8 CSV (with a BOM, for Excel; `;`-separated) in chunks of about a
    thousand rows; `on_done(rows, outcome)` runs once at the end — also when the client goes
    away or the database fails mid-way (outcome error)."""
    text = LocalTime(tz).text
    moments, texts = _indexes(export, "datetime"), _indexes(export, "text")
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=CSV_DELIMITER, lineterminator="\r\n")
    writerow = writer.writerow
    writer.writerow([str(c.label) for c in export.columns])
    count = 0
    outcome = AuditOutcome.ERROR
    rows = iter_export_rows(export, text_tz=tz)
    try:
        yield ("\ufeff" + buffer.getvalue()).encode("utf-8")
        buffer.seek(0)
        buffer.truncate()
        for out in rows:
            for i in moments:
                value = out[i]
                if value is not None and value.__class__ is not str:
                    out[i] = text(value)
            for i in texts:
                value = out[i]
                if value:
                    out[i] = csv_text(value)
            writerow(out)  # None is written as an empty field
            count += 1
            if count % STREAM_CHUNK == 0:
                yield buffer.getvalue().encode("utf-8")
                buffer.seek(0)
                buffer.truncate()
        yield buffer.getvalue().encode("utf-8")
        outcome = AuditOutcome.OK
    finally:
        rows.close()  # the server-side cursor goes before the audit event's commit
        on_done(count, outcome)


def write_xlsx(export: Export, *, tz: str, fileobj) -> int:
    """The export as an XLSX workbook (openpyxl write-only: rows go to a temporary file as they
    are appended) saved into `fileobj`. Returns the number of data rows."""
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.styles import Font

    local = LocalTime(tz)
    wb = Workbook(write_only=True)
    headers = [str(c.label) for c in export.columns]
    bold = Font(bold=True)
    sheet_title = export.title[:28]
    sheets = 0

    def new_sheet():
        nonlocal sheets
        sheets += 1
        ws = wb.create_sheet(sheet_title if sheets == 1 else f"{sheet_title[:24]} {sheets}")
        header_cells = []
        for h in headers:
            cell = WriteOnlyCell(ws, value=h)
            cell.font = bold
            header_cells.append(cell)
        ws.append(header_cells)
        return ws

    ws = new_sheet()
    # One reusable styled date cell per column would be overwritten before it is written, so a
    # new cell per date value; the format object itself is shared.
    date_format = "DD.MM.YYYY HH:MM"

    text_cell = xlsx_text_cells(ws)

    rows_in_sheet = 1
    count = 0
    datetime_ = datetime
    source = iter_export_rows(export)
    try:
        for row in source:
            if rows_in_sheet >= XLSX_MAX_ROWS:
                ws = new_sheet()
                text_cell = xlsx_text_cells(ws)
                rows_in_sheet = 1
            out = []
            for value in row:
                if isinstance(value, str):
                    out.append(text_cell(value) if value else None)
                elif isinstance(value, datetime_):
                    cell = WriteOnlyCell(ws, value=local.naive(value))
                    cell.number_format = date_format
                    out.append(cell)
                elif isinstance(value, bool):
                    out.append(int(value))
                else:
                    out.append(value)
            ws.append(out)
            rows_in_sheet += 1
            count += 1
    finally:
        source.close()
    wb.save(fileobj)
    return count


def xlsx_tempfile(export: Export, *, tz: str) -> tuple[Any, int]:
    """The workbook in an unlinked temporary file, rewound: (file, rows). The caller streams it
    and closes it; nothing is left on disk whatever happens."""
    handle = tempfile.TemporaryFile(prefix="oblako-report-", suffix=".xlsx")
    try:
        rows = write_xlsx(export, tz=tz, fileobj=handle)
        handle.seek(0)
    except BaseException:
        handle.close()
        raise
    return handle, rows


def file_chunks(handle, size: int = 64 * 1024) -> Iterator[bytes]:
    try:
        while chunk := handle.read(size):
            yield chunk
    finally:
        handle.close()


def file_size(handle) -> int:
    return os.fstat(handle.fileno()).st_size


def record_export(
    *, user, report: str, fmt: str, f: Filters, rows: int, outcome: AuditOutcome
) -> None:
    """The audit event of one export: who, which report and format, the filters, the rows."""
    event = audit(
        "report.export", actor=user, obj_type="report", obj_id=f"{report}.{fmt}", outcome=outcome
    )
    event.detail = {
        "report": report,
        "format": fmt,
        "filters": f.audit_detail(),
        "rows": rows,
        "personal_data": may_see_personal_data(user),
    }


def export_filename(report: str, f: Filters, fmt: str) -> str:
    return f"report-{report}-{f.date_from.isoformat()}-{f.date_to.isoformat()}.{fmt}"
