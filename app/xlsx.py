"""A streaming reader for the first sheet of an XLSX workbook (the referral tables).

Why not openpyxl's read-only mode: it builds an ElementTree element and a dict per cell and,
in a file without a `<dimension>`, parses the whole sheet once more to size it — three times
the cost of the rest of a referral preview. This reader drives expat directly and keeps only
the current row; it gives the same values openpyxl gives (shared and inline strings, numbers as
int or float, date-formatted numbers as datetime, booleans, error codes) and reports formula
cells instead of their cached results. openpyxl still writes every file the service produces.

Safety: the caller has bounded the archive (sizes, ratios, member count). Any DTD in a member
this reader parses is refused (no entity can be declared, so none is expanded or fetched).
"""

from __future__ import annotations

import posixpath
import re
import zipfile
from collections.abc import Iterator
from datetime import datetime
from typing import Any
from xml.parsers import expat

from openpyxl.styles.numbers import builtin_format_code, is_date_format, is_timedelta_format
from openpyxl.utils.cell import column_index_from_string, get_column_letter
from openpyxl.utils.datetime import MAC_EPOCH, WINDOWS_EPOCH, from_excel

PIECE = 64 * 1024
# Cells past this column are not kept (a referral table has twelve); their formulas still count.
MAX_COLUMNS = 256
_RELS_NS = "relationships"
_CELL_REF = re.compile(r"([A-Z]{1,3})(\d+)$")


class XlsxError(Exception):
    """Not a readable workbook (missing parts, broken XML)."""


class XlsxDtdError(XlsxError):
    """A member declares a DTD: refused, whatever it declares."""


def _local(name: str) -> str:
    return name.rpartition("}")[2]


def _parser() -> Any:
    parser = expat.ParserCreate(namespace_separator="}")
    parser.buffer_text = True
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)

    def refuse(*_args: Any) -> None:
        raise XlsxDtdError

    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    return parser


def _feed(parser: Any, fh: Any) -> Iterator[None]:
    """Parse `fh` piece by piece; yields after each piece so a caller can drain its output."""
    try:
        while piece := fh.read(PIECE):
            parser.Parse(piece, False)
            yield
        parser.Parse(b"", True)
        yield
    except expat.ExpatError as exc:
        raise XlsxError(str(exc)) from exc


def _parse_whole(archive: zipfile.ZipFile, name: str, start: Any, end: Any = None, text=None):
    parser = _parser()
    parser.StartElementHandler = start
    if end is not None:
        parser.EndElementHandler = end
    if text is not None:
        parser.CharacterDataHandler = text
    with archive.open(name) as fh:
        for _ in _feed(parser, fh):
            pass


def _resolve(base_dir: str, target: str) -> str:
    if target.startswith("/"):
        return target.lstrip("/")
    return posixpath.normpath(posixpath.join(base_dir, target))


class _Workbook:
    """Where the first sheet, the shared strings and the styles are, and the date epoch."""

    def __init__(self, archive: zipfile.ZipFile) -> None:
        names = set(archive.namelist())
        sheet_ids: list[str] = []
        self.epoch = WINDOWS_EPOCH

        def workbook_start(name: str, attrs: dict) -> None:
            tag = _local(name)
            if tag == "sheet":
                rid = next(
                    (v for k, v in attrs.items() if _RELS_NS in k and _local(k) == "id"), None
                )
                if rid:
                    sheet_ids.append(rid)
            elif tag == "workbookPr" and attrs.get("date1904") in ("1", "true"):
                self.epoch = MAC_EPOCH

        if "xl/workbook.xml" not in names:
            raise XlsxError("no workbook")
        _parse_whole(archive, "xl/workbook.xml", workbook_start)
        rels: dict[str, tuple[str, str]] = {}

        def rels_start(name: str, attrs: dict) -> None:
            if _local(name) == "Relationship" and "Id" in attrs and "Target" in attrs:
                rels[attrs["Id"]] = (attrs.get("Type", ""), _resolve("xl", attrs["Target"]))

        if "xl/_rels/workbook.xml.rels" in names:
            _parse_whole(archive, "xl/_rels/workbook.xml.rels", rels_start)
        sheet = rels.get(sheet_ids[0])[1] if sheet_ids and sheet_ids[0] in rels else None
        self.sheet = sheet or "xl/worksheets/sheet1.xml"
        if self.sheet not in names:
            raise XlsxError("no sheet")
        by_type = {kind.rpartition("/")[2]: target for kind, target in rels.values()}
        self.shared_strings = by_type.get("sharedStrings", "xl/sharedStrings.xml")
        self.styles = by_type.get("styles", "xl/styles.xml")
        self.strings = (
            self._read_strings(archive, self.shared_strings) if self.shared_strings in names else []
        )
        self.dates, self.durations = (
            self._read_styles(archive) if self.styles in names else (set(), set())
        )

    @staticmethod
    def _read_strings(archive: zipfile.ZipFile, name: str) -> list[str]:
        strings: list[str] = []
        parts: list[str] = []
        state = {"t": False, "phonetic": 0}

        def start(tag_name: str, _attrs: dict) -> None:
            tag = _local(tag_name)
            if tag == "si":
                parts.clear()
            elif tag == "rPh":  # a phonetic reading (East Asian), not part of the text
                state["phonetic"] += 1
            elif tag == "t" and not state["phonetic"]:
                state["t"] = True

        def end(tag_name: str) -> None:
            tag = _local(tag_name)
            if tag == "si":
                strings.append("".join(parts))
            elif tag == "rPh":
                state["phonetic"] -= 1
            elif tag == "t":
                state["t"] = False

        def text(data: str) -> None:
            if state["t"]:
                parts.append(data)

        _parse_whole(archive, name, start, end, text)
        return strings

    def _read_styles(self, archive: zipfile.ZipFile) -> tuple[set[int], set[int]]:
        custom: dict[int, str] = {}
        xf_formats: list[int] = []
        depth = {"cellXfs": False}

        def start(name: str, attrs: dict) -> None:
            tag = _local(name)
            if tag == "numFmt":
                try:
                    custom[int(attrs.get("numFmtId", ""))] = attrs.get("formatCode", "")
                except ValueError:
                    pass
            elif tag == "cellXfs":
                depth["cellXfs"] = True
            elif tag == "xf" and depth["cellXfs"]:
                try:
                    xf_formats.append(int(attrs.get("numFmtId", "0")))
                except ValueError:
                    xf_formats.append(0)

        def end(name: str) -> None:
            if _local(name) == "cellXfs":
                depth["cellXfs"] = False

        _parse_whole(archive, self.styles, start, end)
        dates: set[int] = set()
        durations: set[int] = set()
        for index, fmt_id in enumerate(xf_formats):
            fmt = custom.get(fmt_id) or builtin_format_code(fmt_id)
            if is_date_format(fmt):
                dates.add(index)
            if is_timedelta_format(fmt):
                durations.add(index)
        return dates, durations


def _number(text: str) -> int | float:
    if "." in text or "E" in text or "e" in text:
        return float(text)
    return int(text)


def iter_sheet_rows(archive: zipfile.ZipFile) -> Iterator[tuple[int, list[Any], list[str]]]:
    """(row number, values, formula cells) for every row the first sheet stores, in order.

    values[i] is column i + 1 (None where there is no cell); a formula cell comes as its
    reference ("L3") with the value None: the caller decides what a formula means. Raises
    XlsxError (XlsxDtdError for a DTD) for a file that is not a readable workbook.
    """
    book = _Workbook(archive)
    strings, dates, durations, epoch = book.strings, book.dates, book.durations, book.epoch
    done: list[tuple[int, list[Any], list[str]]] = []
    row: dict[int, Any] = {}
    formulas: list[str] = []
    text: list[str] = []
    # The cell being read: [ref, type, style, has formula, collecting text, inline, phonetic]
    cell: list[Any] = [None, "n", 0, False, False, False, 0]
    number = [0, 0]  # current row number, last column

    def start(name: str, attrs: dict) -> None:
        tag = name[name.rfind("}") + 1 :]
        if tag == "c":
            ref = attrs.get("r")
            column = 0
            if ref:
                m = _CELL_REF.match(ref)
                if m:
                    column = column_index_from_string(m.group(1))
            number[1] = column or number[1] + 1
            cell[0] = ref
            cell[1] = attrs.get("t", "n")
            style = attrs.get("s")
            cell[2] = int(style) if style and style.isdigit() else 0
            cell[3] = cell[4] = cell[5] = False
            cell[6] = 0
            text.clear()
        elif tag == "v":
            cell[4] = True
        elif tag == "f":
            cell[3] = True
        elif tag == "is":
            cell[5] = True
        elif tag == "t":
            cell[4] = cell[5] and not cell[6]
        elif tag == "rPh":
            cell[6] += 1
        elif tag == "row":
            ref = attrs.get("r")
            number[0] = int(ref) if ref and ref.isdigit() else number[0] + 1
            number[1] = 0
            row.clear()
            formulas.clear()

    def end(name: str) -> None:
        tag = name[name.rfind("}") + 1 :]
        if tag == "c":
            column = number[1]
            if cell[3]:
                formulas.append(cell[0] or f"{get_column_letter(column)}{number[0]}")
            elif column <= MAX_COLUMNS:
                row[column] = _value(cell, "".join(text))
            text.clear()
        elif tag in ("v", "t"):
            cell[4] = False
        elif tag == "rPh":
            cell[6] -= 1
        elif tag == "row":
            width = max(row) if row else 0
            values = [None] * width
            for column, value in row.items():
                values[column - 1] = value
            done.append((number[0], values, list(formulas)))

    def chars(data: str) -> None:
        if cell[4]:
            text.append(data)

    def _value(c: list[Any], raw: str) -> Any:
        kind = c[1]
        if kind == "inlineStr":
            return raw if c[5] else None
        if not raw:
            return None
        if kind == "n":
            value = _number(raw)
            if c[2] in dates:
                try:
                    return from_excel(value, epoch, timedelta=c[2] in durations)
                except (OverflowError, ValueError):
                    return "#VALUE!"
            return value
        if kind == "s":
            return strings[int(raw)]
        if kind == "b":
            return raw.strip() in ("1", "true")
        if kind == "d":
            try:
                return datetime.fromisoformat(raw.rstrip("Z"))
            except ValueError:
                return raw
        return raw  # "str" (a formula's result: never kept), "e" (#N/A and the like)

    parser = _parser()
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = chars
    try:
        with archive.open(book.sheet) as fh:
            for _ in _feed(parser, fh):
                if done:
                    yield from done
                    done.clear()
    except (ValueError, IndexError, KeyError) as exc:  # a bad number, string index, style
        raise XlsxError(str(exc)) from exc
