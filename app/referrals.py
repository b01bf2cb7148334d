"""Pathway 3: the treating physicians' table → patients' accounts, referral consultations, SMS.

The manager downloads the template, the regional specialists fill it, the manager uploads it.
`validate_upload` streams the file (refusing what is not a safe spreadsheet), checks every row
in chunks and stores a preview (ReferralImport `validated`, one ReferralImportRow per row with
its normalised data and its errors). Nothing else is written until the manager confirms; then
`run_import` (a Huey task, app/tasks.py) imports the valid rows in chunks, one commit per chunk,
skipping rows already done — so an interrupted import resumes without duplicates.

Idempotence: a patient is matched by СНИЛС, else by phone + birth date, and linked, never
created twice (the phone is also unique in the database); a row's consultation is found by
`referral_row_id`, and an active referral consultation of the same patient for the same disease
is reused; the invitation SMS carries a dedupe key, and is only sent when an account is created.
A patient who already had an account gets no credentials but is told of a new referral
consultation (cabinet notification + SMS / e-mail through notify()), once per consultation.

Services never commit — except `run_import`, which is the background job's own unit of work.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import os
import re
import unicodedata
import uuid
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, NamedTuple

from flask import current_app
from flask_babel import force_locale
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from sqlalchemy import Select, bindparam, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from app.accounts import AccountError, get_role, normalize_phone
from app.audit import audit, audit_values
from app.catalogue import normalize_icd10
from app.dates import birth_date_error
from app.errors import DomainError
from app.extensions import db
from app.import_recovery import beat
from app.notifications import notify, outbox_values, queue_message
from app.permissions import PATIENT
from app.xlsx import XlsxDtdError, XlsxError, iter_sheet_rows
from models import (
    OPEN_STATUSES,
    AuditEvent,
    Consultation,
    ConsultationKind,
    ConsultationStatus,
    Disease,
    ImportStatus,
    MedicalCenter,
    OblakoUser,
    OutboundChannel,
    OutboundMessage,
    Patient,
    PatientSource,
    ReferralImport,
    ReferralImportRow,
    Sex,
    disease_center,
    utcnow,
)


class ReferralError(DomainError):
    """The file or the action was refused; nothing was saved."""


# ---------------------------------------------------------------------------------------------
# The table's columns
# ---------------------------------------------------------------------------------------------

# key, Russian header (what the regional specialists see), whether the column must be present
TEMPLATE_COLUMNS: list[tuple[str, str, bool]] = [
    ("full_name", "ФИО", True),
    ("birth_date", "дата рождения", True),
    ("sex", "пол", True),
    ("phone", "телефон", True),
    ("email", "e-mail", False),
    ("snils", "СНИЛС", False),
    ("icd10", "код МКБ-10", True),
    ("disease", "заболевание из перечня", True),
    ("centre", "центр", True),
    ("referring_org", "направившая медицинская организация", True),
    ("physician", "лечащий врач", True),
    ("note", "примечание", False),
]
HEADERS = {key: header for key, header, _required in TEMPLATE_COLUMNS}

# Outcomes of a row (docs/referrals-contract.md).
PENDING, INVALID, IMPORTED, LINKED = "pending", "invalid", "imported", "linked"
DONE_OUTCOMES = (IMPORTED, LINKED)

# Active referral consultations: a second row for the same patient and disease reuses one.
ACTIVE_STATUSES = OPEN_STATUSES

DEFAULT_MAX_ROWS = 20_000
DEFAULT_MAX_BYTES = 20 * 1024 * 1024
# A real 20,000-row table is a few MB of XML; a zip bomb expands to gigabytes.
DEFAULT_MAX_UNCOMPRESSED = 200 * 1024 * 1024
MAX_RATIO = 100  # per member larger than RATIO_FLOOR; plain XML compresses 5–30×
RATIO_FLOOR = 1024 * 1024
MAX_ZIP_MEMBERS = 500
CHUNK_SIZE = 500


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


# ---------------------------------------------------------------------------------------------
# Template
# ---------------------------------------------------------------------------------------------


def build_template_xlsx() -> bytes:
    """The empty table (first sheet) with an example and the catalogue on separate sheets."""
    from openpyxl import Workbook
    from openpyxl.styles import Font

    wb = Workbook()
    ws = wb.active
    ws.title = "Направления"
    ws.append([header for _key, header, _required in TEMPLATE_COLUMNS])
    for cell in ws[1]:
        cell.font = Font(bold=True)
    for index, (_key, header, _required) in enumerate(TEMPLATE_COLUMNS):
        ws.column_dimensions[cell_letter(index)].width = max(14, len(header) + 4)
    ws.freeze_panes = "A2"

    example = wb.create_sheet("Пример")
    example.append([header for _key, header, _required in TEMPLATE_COLUMNS])
    example.append(
        [
            "Иванова Мария Петровна",
            "15.03.1975",
            "ж",
            "+7 912 345-67-89",
            "",
            "112-233-445 95",
            "I10",
            "Эссенциальная (первичная) гипертензия",
            "Название центра из справочника",
            "ГБУЗ «Районная больница»",
            "Петров П. П.",
            "",
        ]
    )
    ref = wb.create_sheet("Справочник")
    ref.append(["код МКБ-10", "заболевание из перечня", "центры"])
    diseases = db.session.execute(
        select(Disease).where(Disease.active.is_(True)).order_by(Disease.icd10_code)
    ).scalars()
    for disease in diseases:
        centres = ", ".join(c.name for c in disease.centers if c.active)
        ref.append([disease.icd10_code, disease.name, centres])
    ref.append([])
    ref.append(["центр"])
    for centre in db.session.execute(
        select(MedicalCenter).where(MedicalCenter.active.is_(True)).order_by(MedicalCenter.name)
    ).scalars():
        ref.append([centre.name])
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()


def cell_letter(index: int) -> str:
    from openpyxl.utils import get_column_letter

    return get_column_letter(index + 1)


# ---------------------------------------------------------------------------------------------
# Reading a file safely
# ---------------------------------------------------------------------------------------------


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
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError) as exc:
        raise _not_a_spreadsheet() from exc
    with archive:
        _check_zip(archive)
        formulas: list[str] = []
        count = 0
        max_rows = _limit("REFERRAL_MAX_ROWS", DEFAULT_MAX_ROWS)
        try:
            for number, values, formula_cells in iter_sheet_rows(archive):
                formulas += formula_cells
                for index, value in enumerate(values):
                    # Text that a spreadsheet would evaluate once exported back: refused too.
                    if isinstance(value, str) and value.startswith("=") and len(value) > 1:
                        formulas.append(f"{cell_letter(index)}{number}")
                        values[index] = None
                if any(_present(v) for v in values):
                    count += 1
                    if count > max_rows + 1:  # + the header
                        raise _too_many(max_rows)
                    if not formulas:  # once the file is refused, the rest is only scanned
                        yield number, values
        except XlsxDtdError as exc:
            raise ReferralError(
                _l("The file contains XML declarations that are not allowed in a table.")
            ) from exc
        except (XlsxError, zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
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
            if any(_present(v) for v in values):
                count += 1
                if count > max_rows + 1:
                    raise _too_many(max_rows)
                yield number, values
    except csv.Error as exc:
        raise _not_a_spreadsheet() from exc
    except UnicodeDecodeError as exc:
        raise _not_a_spreadsheet() from exc


def _present(value: Any) -> bool:
    return value is not None and str(value).strip() != ""


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


# ---------------------------------------------------------------------------------------------
# Validating rows
# ---------------------------------------------------------------------------------------------

_SEX = {
    "ж": Sex.FEMALE,
    "жен": Sex.FEMALE,
    "женский": Sex.FEMALE,
    "f": Sex.FEMALE,
    "female": Sex.FEMALE,
    "м": Sex.MALE,
    "муж": Sex.MALE,
    "мужской": Sex.MALE,
    "m": Sex.MALE,
    "male": Sex.MALE,
}
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


_SPACES = re.compile(r"\s+")


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return _SPACES.sub(" ", str(value)).strip()


def _key(value: str) -> str:
    return _text(value).lower().replace("ё", "е").strip(" .")


def parse_birth_date(value: Any) -> date:
    """A date from a spreadsheet cell; ValueError with a translated message otherwise."""
    if isinstance(value, datetime):
        day = value.date()
    elif isinstance(value, date):
        day = value
    else:
        text = _text(value)
        match = re.fullmatch(r"(\d{1,2})[./-](\d{1,2})[./-](\d{4})", text) or None
        iso = re.fullmatch(r"(\d{4})-(\d{1,2})-(\d{1,2})", text)
        if match:
            d, m, y = (int(x) for x in match.groups())
        elif iso:
            y, m, d = (int(x) for x in iso.groups())
        else:
            raise ValueError(_("Enter the date as DD.MM.YYYY."))
        try:
            day = date(y, m, d)
        except ValueError as exc:
            raise ValueError(_("There is no such date.")) from exc
    if problem := birth_date_error(day):
        raise ValueError(str(problem))
    return day


def normalize_snils(value: Any) -> str:
    """«123-456-789 01» after checking the control number; ValueError otherwise."""
    digits = re.sub(r"\D", "", _text(value))
    if len(digits) != 11:
        raise ValueError(_("СНИЛС has 11 digits."))
    number, control = digits[:9], int(digits[9:])
    # The control number is defined for numbers above 001-001-998.
    if int(number) > 1001998:
        total = sum(int(d) * (9 - i) for i, d in enumerate(number))
        expected = total if total < 100 else (0 if total in (100, 101) else total % 101)
        expected = 0 if expected == 100 else expected
        if control != expected:
            raise ValueError(_("The СНИЛС control number does not match: check the digits."))
    return f"{digits[0:3]}-{digits[3:6]}-{digits[6:9]} {digits[9:]}"


@dataclass
class _Catalogue:
    diseases_by_code: dict[str, Disease]
    diseases_by_name: dict[str, Disease]
    centres_by_name: dict[str, MedicalCenter]
    centre_diseases: dict[int, set[int]]

    @classmethod
    def load(cls) -> _Catalogue:
        diseases = list(
            db.session.execute(select(Disease).where(Disease.active.is_(True))).scalars()
        )
        centres = list(
            db.session.execute(
                select(MedicalCenter).where(MedicalCenter.active.is_(True))
            ).scalars()
        )
        links: dict[int, set[int]] = {}
        for disease_id, center_id in db.session.execute(
            select(disease_center.c.disease_id, disease_center.c.center_id)
        ):
            links.setdefault(center_id, set()).add(disease_id)
        return cls(
            {d.icd10_code.upper(): d for d in diseases},
            {_key(d.name): d for d in diseases},
            {_key(c.name): c for c in centres},
            links,
        )


def _validate_row(raw: RawRow, catalogue: _Catalogue) -> tuple[dict, list[dict]]:
    """Normalised data and errors [{column, message}] for one row (no database writes)."""
    v = raw.values
    errors: list[dict] = []

    def error(key: str, message: Any) -> None:
        errors.append({"column": HEADERS[key], "message": str(message)})

    # Each cell as text once: the raw copy the preview shows and the checks below share it.
    t = {k: _text(val) for k, val in v.items()}
    data: dict[str, Any] = {"raw": {k: val for k, val in t.items() if val}}
    parts = t.get("full_name", "").split(" ")
    if len([p for p in parts if p]) < 2:
        error("full_name", _("Enter the surname and the name."))
    else:
        data.update(surname=parts[0], name=parts[1], patronymic=" ".join(parts[2:]))
    try:
        data["birth_date"] = parse_birth_date(v.get("birth_date")).isoformat()
    except ValueError as exc:
        error("birth_date", exc if _present(v.get("birth_date")) else _("Required."))
    sex = _SEX.get(_key(v.get("sex")))
    if sex is None:
        error("sex", _("Enter «м» or «ж»."))
    else:
        data["sex"] = str(sex)
    try:
        data["phone"] = normalize_phone(t.get("phone", ""))
    except AccountError as exc:
        error("phone", exc)
    email = t.get("email", "").lower()
    if email and not _EMAIL.match(email):
        error("email", _("Enter a valid e-mail or leave it empty."))
    data["email"] = email or None
    data["snils"] = None
    if _present(v.get("snils")):
        try:
            data["snils"] = normalize_snils(v.get("snils"))
        except ValueError as exc:
            error("snils", exc)
    code = normalize_icd10(t.get("icd10", ""))
    name = _key(v.get("disease"))
    disease = None
    if code:
        disease = catalogue.diseases_by_code.get(code)
        if disease is None:
            error("icd10", _("Unknown ICD-10 code %(code)s: it is not in the list.", code=code))
    elif name:
        disease = catalogue.diseases_by_name.get(name)
        if disease is None:
            error("disease", _("This disease is not in the list."))
    else:
        error("icd10", _("Enter the ICD-10 code or the disease from the list."))
    centre = catalogue.centres_by_name.get(_key(v.get("centre")))
    if centre is None:
        error(
            "centre",
            _("Unknown centre: use a name from the list.")
            if _present(v.get("centre"))
            else _("Required."),
        )
    if disease is not None:
        data.update(disease_id=disease.id, icd10=disease.icd10_code)
    if centre is not None:
        data["centre_id"] = centre.id
        taken = catalogue.centre_diseases.get(centre.id)
        if disease is not None and taken and disease.id not in taken:
            error("centre", _("This centre does not take this disease."))
    for key in ("referring_org", "physician", "note"):
        data[key] = t.get(key, "")[:500]
    return data, errors


def _chunks(items: list, size: int = 500) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _existing_patients(rows: list[dict]) -> tuple[dict[str, Patient], dict[str, Patient]]:
    """Patients already registered, by СНИЛС and by phone (a few IN queries, not one a row)."""
    snils = sorted({d["snils"] for d in rows if d.get("snils")})
    phones = sorted({d["phone"] for d in rows if d.get("phone")})
    by_snils: dict[str, Patient] = {}
    by_phone: dict[str, Patient] = {}
    for chunk in _chunks(snils):
        for p in db.session.execute(select(Patient).where(Patient.snils.in_(chunk))).scalars():
            by_snils[p.snils] = p
    for chunk in _chunks(phones):
        for p in db.session.execute(select(Patient).where(Patient.phone.in_(chunk))).scalars():
            by_phone[p.phone] = p
    return by_snils, by_phone


def emails_in_use_query(emails: list[str]) -> Select:
    """Accounts holding any of these (lower-case) e-mails, whatever their case: the expression
    is the one ix_ab_user_email_lower indexes."""
    return select(OblakoUser.email).where(func.lower(OblakoUser.email).in_(emails))


def _emails_in_use(emails: Iterable[str]) -> set[str]:
    found: set[str] = set()
    for chunk in _chunks(sorted(set(emails))):
        found.update(e.lower() for e in db.session.execute(emails_in_use_query(chunk)).scalars())
    return found


def _match(data: dict, by_snils: dict, by_phone: dict) -> tuple[Patient | None, str | None]:
    """The registered patient this row is about, or an error message for the row."""
    if data.get("snils") and data["snils"] in by_snils:
        patient = by_snils[data["snils"]]
        if data.get("phone") and patient.phone != data["phone"] and data["phone"] in by_phone:
            return None, _("This phone belongs to another patient than this СНИЛС.")
        return patient, None
    patient = by_phone.get(data.get("phone") or "")
    if patient is None:
        return None, None
    if data.get("birth_date") and patient.birth_date.isoformat() == data["birth_date"]:
        if data.get("snils") and patient.snils and patient.snils != data["snils"]:
            return None, _("A patient with this phone is registered with another СНИЛС.")
        return patient, None
    return None, _("A patient with this phone is registered with another date of birth.")


PREVIEW_CHUNK = 1000


class _SeenPhone(NamedTuple):
    """What a later row with the same phone is compared with: a few numbers, not the row."""

    row_number: int
    person: int  # hash of (birth date, surname in lower case): "the same person?"
    disease_centre: tuple[int | None, int | None]


def _person_key(row_data: dict) -> int:
    return hash((row_data.get("birth_date"), row_data.get("surname", "").lower()))


class _InFileChecks:
    """Duplicates inside the file, remembered across chunks with small keys only."""

    def __init__(self) -> None:
        self.phone: dict[str, _SeenPhone] = {}
        self.snils: dict[str, int] = {}
        self.email: dict[str, str] = {}

    def check(self, row_number: int, row_data: dict, errors: list[dict]) -> None:
        def error(key: str, message: str) -> None:
            errors.append({"column": HEADERS[key], "message": message})

        phone, snils = row_data.get("phone"), row_data.get("snils")
        if phone and phone in self.phone:
            other = self.phone[phone]
            if other.person != _person_key(row_data):
                error(
                    "phone",
                    _("Row %(n)d gives this phone for another person.", n=other.row_number),
                )
            elif other.disease_centre == (row_data.get("disease_id"), row_data.get("centre_id")):
                error("full_name", _("Duplicate of row %(n)d.", n=other.row_number))
        elif phone:
            self.phone[phone] = _SeenPhone(
                row_number,
                _person_key(row_data),
                (row_data.get("disease_id"), row_data.get("centre_id")),
            )
        if snils:
            first = self.phone.get(phone)
            if snils in self.snils and (first.row_number if first else None) != self.snils[snils]:
                error("snils", _("The same СНИЛС is given in row %(n)d.", n=self.snils[snils]))
            self.snils.setdefault(snils, row_number)


def _preview_chunk(
    raws: list[RawRow], catalogue: _Catalogue, seen: _InFileChecks, import_id: int
) -> tuple[int, int]:
    """Validate a chunk of rows, match them with registered patients (a few IN queries for the
    chunk), insert their preview rows (one executemany). Returns (valid, invalid)."""
    checked = [_validate_row(raw, catalogue) for raw in raws]
    by_snils, by_phone = _existing_patients([d for d, _e in checked])
    emails_taken = _emails_in_use(d["email"] for d, _e in checked if d.get("email"))
    records = []
    valid = 0
    for raw, (row_data, errors) in zip(raws, checked, strict=True):
        seen.check(raw.row_number, row_data, errors)
        patient, problem = _match(row_data, by_snils, by_phone)
        if problem:
            errors.append({"column": HEADERS["phone"], "message": problem})
        email, phone = row_data.get("email"), row_data.get("phone")
        if patient is None and email:
            if email in emails_taken or seen.email.get(email, phone) != phone:
                errors.append(
                    {
                        "column": HEADERS["email"],
                        "message": _("This e-mail belongs to another account: leave it empty."),
                    }
                )
            seen.email.setdefault(email, phone)
        valid += not errors
        records.append(
            {
                "import_id": import_id,
                "row_number": raw.row_number,
                "data": row_data,
                "errors": errors,
                "outcome": INVALID if errors else PENDING,
                "patient_id": patient.id if patient is not None and not errors else None,
            }
        )
    db.session.execute(insert(ReferralImportRow), records)
    return valid, len(records) - valid


def validate_upload(user, filename: str, data: bytes) -> ReferralImport:
    """Read and check the whole file; store the preview (status validated). No commit.

    The rows stream from the file in chunks of PREVIEW_CHUNK: each chunk is validated, matched
    and inserted before the next one is read, and only small keys (phone, СНИЛС, e-mail) are
    kept across chunks for the duplicates inside the file — the peak does not grow with the
    table. A refusal of the file midway raises, and the caller's transaction rolls back every
    preview row already inserted (nothing is saved).
    """
    catalogue = _Catalogue.load()
    imp = ReferralImport(
        file_sha256=hashlib.sha256(data).hexdigest(),
        original_name=(filename or "table")[:255],
        uploaded_by_id=getattr(user, "id", None),
        status=ImportStatus.VALIDATED,
        total_rows=0,
        valid_rows=0,
        error_rows=0,
        imported_rows=0,
    )
    rows = iter_table(filename, data)
    first = next(rows)  # the file's own refusals (empty, not a table, columns) before any write
    db.session.add(imp)
    db.session.flush()
    seen = _InFileChecks()
    valid = invalid = 0
    chunk = [first]
    for raw in rows:
        if len(chunk) >= PREVIEW_CHUNK:
            ok, bad = _preview_chunk(chunk, catalogue, seen, imp.id)
            valid, invalid, chunk = valid + ok, invalid + bad, []
        chunk.append(raw)
    ok, bad = _preview_chunk(chunk, catalogue, seen, imp.id)
    imp.valid_rows, imp.error_rows = valid + ok, invalid + bad
    imp.total_rows = imp.valid_rows + imp.error_rows
    audit("referral_import_uploaded", actor=user, obj_type="referral_import", obj_id=imp.public_id)
    return imp


# ---------------------------------------------------------------------------------------------
# Importing
# ---------------------------------------------------------------------------------------------


def invitation_format() -> str:
    """The invitation SMS in Russian, its %(url)s, %(login)s and %(password)s still to fill:
    service, address, login, password — never a diagnosis. A bulk import translates it once
    (switching the locale costs more than the rest of a row's SMS) and fills it per row."""
    with force_locale("ru"):
        return _(
            "Health Cloud: you are invited to an online consultation. Sign in: %(url)s, "
            "login %(login)s, password %(password)s. The password is valid for 7 days."
        )


def invitation_text(*, sign_in_url: str, login: str, password: str) -> str:
    return invitation_format() % {"url": sign_in_url, "login": login, "password": password}


def invite_dedupe_key(patient: Patient, file_sha256: str) -> str:
    return f"referral-invite:{patient.public_id}:{file_sha256}"


def referral_notice_text(*, sign_in_url: str) -> str:
    """What a patient who already has an account is told of a new referral: no credentials
    (they have them), never a diagnosis (the text goes out by SMS too)."""
    return _(
        "Health Cloud: you have a new referral for an online consultation. Sign in at %(url)s "
        "with your login and password and upload your medical documents.",
        url=sign_in_url,
    )


def _notify_linked(
    user: OblakoUser, patient: Patient, consultation_public_id: uuid.UUID, sign_in_url: str
) -> None:
    """A registered patient linked to a row that opened a new referral consultation: a cabinet
    notification and, where they opted in, an SMS / e-mail through the outbox (notify())."""
    notify(
        user,
        "referral_received",
        lambda: referral_notice_text(sign_in_url=sign_in_url),
        link=f"/cabinet/consultations/{consultation_public_id}",
        # One message per new consultation: its public_id is new in this transaction.
        dedupe_key=f"referral-new:{consultation_public_id}",
        new_dedupe_key=True,
        patient=patient,
    )


def _invited_by(patient_ids_keys: dict[str, int]) -> set[int]:
    """Of the patients keyed by their invitation's dedupe key, those invited by this file:
    the import created them (they are not "already registered"). One IN query per 500."""
    found: set[int] = set()
    for chunk in _chunks(sorted(patient_ids_keys)):
        for key in db.session.execute(
            select(OutboundMessage.dedupe_key).where(OutboundMessage.dedupe_key.in_(chunk))
        ).scalars():
            found.add(patient_ids_keys[key])
    return found


def default_sign_in_url() -> str:
    """Outside a request (a worker resuming an import): the configured public address, else the
    address `make run` serves on."""
    configured = current_app.config.get("PUBLIC_SIGN_IN_URL")
    if configured:
        return configured
    host = os.environ.get("HOST", "127.0.0.1")
    return f"http://{host}:{os.environ.get('PORT', '5000')}/login/"


def start_import(imp: ReferralImport, *, by) -> None:
    """Confirm the preview: the rows are imported by the background job. No commit."""
    if imp.status == ImportStatus.DONE:
        raise ReferralError(_l("This table has already been imported."))
    if imp.valid_rows == 0:
        raise ReferralError(_l("The table has no valid rows to import."))
    imp.status = ImportStatus.IMPORTING
    beat(imp)  # queued now: no start within IMPORT_STALL_SECONDS means the message was lost
    audit("referral_import_confirmed", actor=by, obj_type="referral_import", obj_id=imp.public_id)


def _issue_password(user: OblakoUser) -> str:
    from app.otp import issue_one_time_password  # the sign-in part's module (fast hash, 7 days)

    return issue_one_time_password(user)


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
    for chunk in _chunks(sorted({r.patient_id for r in rows if r.patient_id})):
        for p in db.session.execute(select(Patient).where(Patient.id.in_(chunk))).scalars():
            by_id[p.id] = p
    by_snils, by_phone = _existing_patients(datas)
    emails_taken = _emails_in_use(d["email"].lower() for d in datas if d.get("email"))
    by_row: dict[int, Consultation] = {}
    for chunk in _chunks([r.id for r in rows]):
        for c in db.session.execute(
            select(Consultation).where(Consultation.referral_row_id.in_(chunk))
        ).scalars():
            by_row[c.referral_row_id] = c
    known = sorted({p.id for p in (*by_id.values(), *by_snils.values(), *by_phone.values())})
    active: dict[tuple[int, int], Consultation] = {}
    for chunk in _chunks(known):
        for c in db.session.execute(
            select(Consultation)
            .where(
                Consultation.patient_id.in_(chunk),
                Consultation.kind == ConsultationKind.REFERRAL,
                Consultation.status.in_([s.value for s in ACTIVE_STATUSES]),
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
    invitation = invitation_format()
    for _row, _data, patient, password in plans:
        if password is not None:
            # The rows queue_message() and audit() would add (their own builders), as one
            # executemany each (no ids needed back); the dedupe key names a patient created in
            # this transaction, so nothing can have queued it yet (queue_message's
            # new_dedupe_key), and the unique index still guards it.
            messages.append(
                outbox_values(
                    OutboundChannel.SMS,
                    patient.phone,
                    invitation % {"url": sign_in_url, "login": patient.phone, "password": password},
                    user_id=patient.user_id,
                    dedupe_key=invite_dedupe_key(patient, imp.file_sha256),
                )
            )
            events.append(
                audit_values(
                    "referral_patient_created",
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
    invited = _invited_by({invite_dedupe_key(p, imp.file_sha256): p.id for p, _c in linked})
    users: dict[int, OblakoUser] = {}
    for chunk in _chunks(sorted({p.user_id for p, _c in linked})):
        for user in db.session.execute(
            select(OblakoUser).where(OblakoUser.id.in_(chunk))
        ).scalars():
            users[user.id] = user
    for patient, consultation in linked:
        if patient.id not in invited and patient.user_id in users:
            _notify_linked(
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
    sign_in_url = sign_in_url or default_sign_in_url()
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


# ---------------------------------------------------------------------------------------------
# Resending credentials
# ---------------------------------------------------------------------------------------------


def resend_credentials(patient: Patient, *, by, sign_in_url: str | None = None) -> None:
    """A new one-time password (the old one stops working) and a new SMS. No commit."""
    if patient.source != PatientSource.REFERRAL:
        raise ReferralError(_l("Credentials are only sent to patients invited by a referral."))
    password = _issue_password(patient.user)
    patient.user.session_generation = (patient.user.session_generation or 0) + 1
    sent_before = db.session.execute(
        select(func.count())
        .select_from(OutboundMessage)
        .where(OutboundMessage.dedupe_key.like(f"referral-resend:{patient.public_id}:%"))
    ).scalar_one()
    queue_message(
        OutboundChannel.SMS,
        patient.phone,
        invitation_text(
            sign_in_url=sign_in_url or default_sign_in_url(),
            login=patient.phone,
            password=password,
        ),
        user_id=patient.user_id,
        dedupe_key=f"referral-resend:{patient.public_id}:{sent_before + 1}:"
        f"{int(utcnow().timestamp())}",
    )
    audit(
        "referral_credentials_resent",
        actor=by,
        obj_type="patient",
        obj_id=patient.public_id,
        patient_id=patient.id,
    )


# ---------------------------------------------------------------------------------------------
# Tracking
# ---------------------------------------------------------------------------------------------

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
        if c.status in (
            ConsultationStatus.CANCELLED,
            ConsultationStatus.REJECTED,
            ConsultationStatus.MISSED,
        ):
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
    for chunk in _chunks(sorted(patient_ids)):
        for p in db.session.execute(select(Patient).where(Patient.id.in_(chunk))).scalars():
            patients[p.id] = p
    consultations = {}
    for chunk in _chunks(sorted(consultation_ids)):
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


_DANGEROUS = ("=", "+", "-", "@", "\t", "\r")


def export_tracking_xlsx(imp: ReferralImport) -> bytes:
    """The tracking table for the regional specialists. Text cells are always text: a value
    starting with = + - @ is never a formula when the file is opened."""
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.styles import Alignment

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
    quoted = Alignment()

    def cell(value: Any) -> Any:
        if not isinstance(value, str):
            return value
        c = WriteOnlyCell(ws, value=value)
        c.data_type = "s"  # never a formula, whatever the text starts with
        if value.startswith(_DANGEROUS):
            c.quotePrefix = True
            c.alignment = quoted
        return c

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


__all__ = [
    "TEMPLATE_COLUMNS",
    "ReferralError",
    "build_template_xlsx",
    "read_table",
    "resend_credentials",
    "run_import",
    "validate_upload",
]
