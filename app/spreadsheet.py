"""Text cells that stay text in a spreadsheet: the one formula-prefix neutralisation.

A cell whose text starts with =, +, -, @, a tab or a carriage return is taken for a formula
when the file is opened (CSV / formula injection: a patient's name `=HYPERLINK(...)` in a
report). Every export of text people typed — the reports (CSV and XLSX) and the referral
tracking table — writes its text cells through here.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

# A text starting with one of these is a formula (or becomes one) in a spreadsheet.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
# The same as a set of first characters: `value[0] in FORMULA_FIRST` for loops over many cells.
FORMULA_FIRST = frozenset(FORMULA_PREFIXES)
# Characters XML 1.0 (and so XLSX) cannot carry: dropped rather than failing mid-export.
_ILLEGAL_XML = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


def formula_like(value: str) -> bool:
    """True when a spreadsheet would take this text for a formula."""
    return bool(value) and value[0] in FORMULA_FIRST


def csv_text(value: str) -> str:
    """A CSV field a spreadsheet shows as text: a leading formula character gets a quote."""
    return "'" + value if value and value[0] in FORMULA_FIRST else value


def xlsx_text_cells(ws: Any) -> Callable[[str], Any]:
    """A function turning a text into what to append to this write-only sheet (openpyxl).

    Characters XLSX cannot carry are dropped. A formula-like text becomes an explicit string
    cell with Excel's quote prefix (it stays text even when the cell is edited); any other text
    is returned as it is (openpyxl writes it as a string). openpyxl is imported here, not at
    start-up: it costs a noticeable fraction of a second to load.
    """
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.styles import Alignment

    alignment = Alignment()

    def text_cell(value: str) -> Any:
        if _ILLEGAL_XML.search(value):
            value = _ILLEGAL_XML.sub("", value)
        if value and value[0] in FORMULA_FIRST:
            cell = WriteOnlyCell(ws, value=value)
            cell.data_type = "s"  # an explicit string: openpyxl never writes a formula
            cell.quotePrefix = True
            cell.alignment = alignment
            return cell
        return value

    return text_cell
