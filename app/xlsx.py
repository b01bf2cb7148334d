"""The first sheet of an uploaded XLSX workbook, row by row (the referral tables): openpyxl's
read-only mode, which streams the sheet instead of building it.

Safety: the caller has bounded the archive first (sizes, ratios, member count). openpyxl parses
every member through defusedxml when it is installed (a dependency, checked here at import and
in tests/test_dependencies.py): a member that declares an entity or refers to an external one
is refused (XlsxDtdError), so none is expanded or fetched. The sheet's own `<dimension>` is
ignored: a forged `A1:XFD1048576` would otherwise pad every row to 16,384 cells.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO, Any

import openpyxl
from defusedxml import DefusedXmlException
from openpyxl.utils.cell import get_column_letter
from openpyxl.worksheet.formula import ArrayFormula, DataTableFormula

if not openpyxl.DEFUSEDXML:  # pragma: no cover - defusedxml is a dependency
    raise ImportError("openpyxl must parse uploads through defusedxml: install defusedxml")

# Cells past this column are not kept (a referral table has twelve); their formulas still count.
MAX_COLUMNS = 256


class XlsxError(Exception):
    """Not a readable workbook (missing parts, broken XML)."""


class XlsxDtdError(XlsxError):
    """A member declares an entity or refers to an external one: refused."""


def _refusal(exc: BaseException) -> XlsxError:
    """XlsxDtdError when defusedxml refused a member, wrapped as openpyxl may have wrapped it."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, DefusedXmlException):
            return XlsxDtdError(str(cause))
        cause = cause.__cause__ or cause.__context__
    return XlsxError(str(exc))


def _is_formula(value: Any) -> bool:
    # openpyxl gives a formula as its text ("=1+1"), or as an object for array/table formulas.
    if isinstance(value, str):
        return value.startswith("=") and len(value) > 1
    return isinstance(value, (ArrayFormula, DataTableFormula))


def iter_sheet_rows(source: IO[bytes]) -> Iterator[tuple[int, list[Any], list[str]]]:
    """(row number, values, formula cells) for every non-empty row of the first sheet, in order.

    values[i] is column i + 1 (None where there is no cell; trailing empty cells dropped); a
    formula cell comes as its reference ("L3") with the value None: the caller decides what a
    formula means. Raises XlsxError (XlsxDtdError for entities) for a file that is not a
    readable workbook.
    """
    try:
        book = openpyxl.load_workbook(source, read_only=True, data_only=False, keep_links=False)
    except Exception as exc:  # openpyxl raises whatever its parsers meet in a broken file
        raise _refusal(exc) from exc
    try:
        if not book.worksheets:
            raise XlsxError("no sheet")
        sheet = book.worksheets[0]
        sheet.reset_dimensions()
        for number, row in enumerate(sheet.iter_rows(values_only=True), start=1):
            if not row:
                continue
            values = list(row[:MAX_COLUMNS])
            formulas = []
            for index, value in enumerate(row):
                if value is not None and _is_formula(value):
                    formulas.append(f"{get_column_letter(index + 1)}{number}")
                    if index < MAX_COLUMNS:
                        values[index] = None
            while values and values[-1] is None:
                values.pop()
            if values or formulas:
                yield number, values, formulas
    except XlsxError:
        raise
    except Exception as exc:  # a broken sheet: bad XML, a bad number, a bad string index
        raise _refusal(exc) from exc
    finally:
        book.close()
