"""app/spreadsheet.py: the one formula-prefix neutralisation of the CSV and XLSX exports."""

from __future__ import annotations

import io

import pytest

from app.spreadsheet import FORMULA_PREFIXES, csv_text, formula_like, xlsx_text_cells

DANGEROUS = ["=1+1", "+79123450001", "-2", "@SUM(A1)", "\tcmd", "\rcmd", "=cmd|' /C calc'!A0"]
HARMLESS = ["Иванова Мария", "I10", "1=1", "a-b", " =spaced", "'quoted"]

# Pure functions / in-memory peers: no database (run once, on SQLite).
pytestmark = pytest.mark.no_db


def test_the_prefixes_are_the_six_a_spreadsheet_evaluates():
    assert set(FORMULA_PREFIXES) == {"=", "+", "-", "@", "\t", "\r"}


@pytest.mark.parametrize("value", DANGEROUS)
def test_formula_like_text_is_quoted_in_csv(value):
    assert formula_like(value)
    assert csv_text(value) == "'" + value


@pytest.mark.parametrize("value", [*HARMLESS, ""])
def test_other_text_is_left_as_it_is_in_csv(value):
    assert not formula_like(value)
    assert csv_text(value) == value


def _written(values: list[str]):
    from openpyxl import Workbook, load_workbook

    wb = Workbook(write_only=True)
    ws = wb.create_sheet("t")
    text_cell = xlsx_text_cells(ws)
    ws.append([text_cell(v) for v in values])
    out = io.BytesIO()
    wb.save(out)
    sheet = load_workbook(io.BytesIO(out.getvalue())).worksheets[0]
    return next(sheet.iter_rows())


def test_formula_like_text_is_a_quoted_string_cell_in_xlsx():
    cells = _written(DANGEROUS)
    for value, cell in zip(DANGEROUS, cells, strict=True):
        # XML reads a carriage return back as a line feed: still text, never a formula
        assert cell.value == value.replace("\r", "\n") and cell.data_type == "s", value
        assert cell.quotePrefix, value  # Excel keeps it text even when the cell is edited


def test_other_text_is_a_plain_string_cell_in_xlsx():
    cells = _written(HARMLESS)
    assert [c.value for c in cells] == HARMLESS
    assert {c.data_type for c in cells} == {"s"}
    assert not any(c.quotePrefix for c in cells)


def test_characters_xlsx_cannot_hold_are_dropped():
    cells = _written(["ЦРБ\x01 №2\x0b", "\x02=1+1"])
    assert cells[0].value == "ЦРБ №2"
    assert cells[1].value == "=1+1" and cells[1].quotePrefix and cells[1].data_type == "s"
