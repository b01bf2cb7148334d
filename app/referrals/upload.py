"""Reading an uploaded referral table safely: size limits, the zip guards of an XLSX (member
count, total size, compression ratio), its XML guards (no entities: app/xlsx.py) and formulas, the
CSV encodings and delimiters, and the header row mapped to TEMPLATE_COLUMNS. Rows stream out
one at a time; nothing here touches the database."""

from __future__ import annotations

import codecs
import csv
import io
import re
import unicodedata
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from flask import current_app
from flask_babel import lazy_gettext as _l

from app.referrals.common import TEMPLATE_COLUMNS, ReferralError, present
from app.xlsx import XlsxDtdError, XlsxError, iter_sheet_rows

DEFAULT_MAX_ROWS = 20_000
DEFAULT_MAX_BYTES = 20 * 1024 * 1024
# A real 20,000-row table is a few MB of XML; a zip bomb expands to gigabytes.
DEFAULT_MAX_UNCOMPRESSED = 200 * 1024 * 1024
MAX_RATIO = 100  # per member larger than RATIO_FLOOR; plain XML compresses 5–30×
RATIO_FLOOR = 1024 * 1024
MAX_ZIP_MEMBERS = 500


def _norm_header(value: Any) -> str:
    text = unicodedata.normalize("NFKC", str(value or "")).lower().replace("ё", "е")
    text = re.sub(r"\(.*?\)|\*", " ", text)  # «СНИЛС (необязательно)», «ФИО*»
    return re.sub(r"[\s_]+", " ", text).strip(" :.")


_HEADER_KEYS = {_norm_header(header): key for key, header, _required in TEMPLATE_COLUMNS}
_HEADER_KEYS.update(
    {
        "email": "email",
        "e mail": "email",
        "электронная почта": "email",
        "мкб-10": "icd10",
        "код мкб": "icd10",
        "мкб": "icd10",
        "заболевание": "disease",
        "медицинский центр": "centre",
        "дата рождения дд.мм.гггг": "birth_date",
    }
)


@dataclass
class RawRow:
    row_number: int  # as the spreadsheet numbers it (the header is row 1 in the template)
    values: dict[str, Any]


def read_upload(stream: Any, limit: int) -> bytes:
    """The uploaded table's bytes, at most limit + 1 of them (one more says "too large").

    Read in pieces: one read(limit + 1) from a file the upload spooled to disk allocates the
    whole limit (20 MiB) up front, whatever the file's size.
    """
    parts: list[bytes] = []
    left = limit + 1
    while left > 0 and (piece := stream.read(min(left, 1024 * 1024))):
        parts.append(piece)
        left -= len(piece)
    return b"".join(parts)


def _limit(name: str, default: int) -> int:
    return int(current_app.config.get(name, default))


def _not_a_spreadsheet() -> ReferralError:
    return ReferralError(
        _l("This file is not a spreadsheet: upload the table as XLSX or CSV (see the template).")
    )


def read_table(filename: str, data: bytes) -> list[RawRow]:
    """Rows of the first sheet keyed by TEMPLATE_COLUMNS, or ReferralError (nothing saved)."""
    return list(iter_table(filename, data))


def iter_table(filename: str, data: bytes) -> Iterator[RawRow]:
    """The same rows as read_table, one at a time: the table is never held whole.

    The checks of the whole file are made before the first row (emptiness, size, the zip
    guards) or while reading (too many rows, formulas): a refusal can come after some rows were
    yielded, so the caller must treat everything it did with them as part of the refusal (the
    preview is one transaction, rolled back with it).
    """
    if not data or not data.strip():
        raise ReferralError(_l("The file is empty."))
    if len(data) > _limit("REFERRAL_MAX_BYTES", DEFAULT_MAX_BYTES):
        raise ReferralError(_l("The file is too large."))
    if data.startswith(b"PK\x03\x04"):
        rows = _read_xlsx(data)
    elif data.startswith(b"\xd0\xcf\x11\xe0"):
        raise ReferralError(
            _l("This is an old Excel file (.xls): save it as an Excel workbook (.xlsx).")
        )
    else:
        rows = _read_csv(data)
    yield from _keyed_rows(rows)


def _check_zip(archive: zipfile.ZipFile) -> None:
    members = archive.infolist()
    if len(members) > MAX_ZIP_MEMBERS:
        raise _not_a_spreadsheet()
    total = 0
    for info in members:
        total += info.file_size
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > RATIO_FLOOR and ratio > MAX_RATIO:
            raise _zip_bomb()
    if total > _limit("REFERRAL_MAX_UNCOMPRESSED", DEFAULT_MAX_UNCOMPRESSED):
        raise _zip_bomb()


def _zip_bomb() -> ReferralError:
    return ReferralError(
        _l("The file unpacks to far more data than a table can hold: it was refused.")
    )


def _read_xlsx(data: bytes) -> Iterator[tuple[int, list[Any]]]:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            _check_zip(archive)
    except (zipfile.BadZipFile, ValueError) as exc:
        raise _not_a_spreadsheet() from exc
    formulas: list[str] = []
    count = 0
    max_rows = _limit("REFERRAL_MAX_ROWS", DEFAULT_MAX_ROWS)
    try:
        # A formula, or text a spreadsheet would evaluate once exported back: refused.
        for number, values, formula_cells in iter_sheet_rows(io.BytesIO(data)):
            formulas += formula_cells
            if any(present(v) for v in values):
                count += 1
                if count > max_rows + 1:  # + the header
                    raise _too_many(max_rows)
                if not formulas:  # once the file is refused, the rest is only scanned
                    yield number, values
    except XlsxDtdError as exc:
        raise ReferralError(
            _l("The file contains XML declarations that are not allowed in a table.")
        ) from exc
    except XlsxError as exc:
        raise _not_a_spreadsheet() from exc
    if formulas:
        shown = ", ".join(formulas[:5]) + (" …" if len(formulas) > 5 else "")
        raise ReferralError(
            _l(
                "The table contains formulas (cells %(cells)s). Replace them with values "
                "(copy → paste special → values) and upload again.",
                cells=shown,
            )
        )


def _too_many(max_rows: int) -> ReferralError:
    return ReferralError(
        _l(
            "The table has more than %(n)d rows: split it into several files.",
            n=max_rows,
        )
    )


_BINARY_MAGIC = (b"%PDF", b"\x89PNG", b"GIF8", b"\xff\xd8\xff", b"\x1f\x8b", b"Rar!", b"7z")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _decoded(data: bytes) -> io.TextIOWrapper:
    """The text of a CSV upload as a stream: UTF-8 (with or without BOM), else Windows-1251.

    The encoding is decided by decoding the bytes piece by piece and keeping nothing, so the
    text is never held whole beside the bytes.
    """
    start = 3 if data.startswith(b"\xef\xbb\xbf") else 0
    decoder = codecs.getincrementaldecoder("utf-8")()
    encoding = "utf-8"
    try:
        view = memoryview(data)
        for offset in range(start, len(data), 65536):
            decoder.decode(view[offset : offset + 65536])
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        encoding = "cp1251"  # every byte but 0x98 decodes; that one is refused while reading
    return io.TextIOWrapper(io.BytesIO(data[start:] if start else data), encoding, newline="")


def _read_csv(data: bytes) -> Iterator[tuple[int, list[Any]]]:
    if data.startswith(_BINARY_MAGIC) or b"\x00" in data[:4096]:
        raise _not_a_spreadsheet()
    stream = _decoded(data)
    try:
        head = stream.read(65536)
    except UnicodeDecodeError as exc:
        raise _not_a_spreadsheet() from exc
    if _CONTROL.search(head):
        raise _not_a_spreadsheet()
    first_line = head.lstrip("\r\n").split("\n", 1)[0]
    delimiter = ";" if first_line.count(";") >= first_line.count(",") else ","
    if first_line.count(delimiter) == 0:
        raise _not_a_spreadsheet()
    stream.seek(0)
    max_rows = _limit("REFERRAL_MAX_ROWS", DEFAULT_MAX_ROWS)
    count = 0
    try:
        for number, values in enumerate(csv.reader(stream, delimiter=delimiter), start=1):
            if any(present(v) for v in values):
                count += 1
                if count > max_rows + 1:
                    raise _too_many(max_rows)
                yield number, values
    except csv.Error as exc:
        raise _not_a_spreadsheet() from exc
    except UnicodeDecodeError as exc:
        raise _not_a_spreadsheet() from exc


def _keyed_rows(rows: Iterator[tuple[int, list[Any]]]) -> Iterator[RawRow]:
    header = next(rows, None)
    if header is None:
        raise ReferralError(_l("The file is empty."))
    _number, titles = header
    index: dict[str, int] = {}
    for position, title in enumerate(titles):
        key = _HEADER_KEYS.get(_norm_header(title))
        if key and key not in index:
            index[key] = position
    missing = [h for key, h, required in TEMPLATE_COLUMNS if required and key not in index]
    if missing:
        raise ReferralError(
            _l(
                "Columns missing from the table: %(columns)s. Use the template.",
                columns=", ".join(f"«{m}»" for m in missing),
            )
        )
    empty = True
    for number, values in rows:
        keyed = {key: (values[pos] if pos < len(values) else None) for key, pos in index.items()}
        empty = False
        yield RawRow(number, keyed)
    if empty:
        raise ReferralError(_l("The table has no patient rows."))
