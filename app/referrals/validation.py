"""Checking the rows of an uploaded table and storing the preview (nothing else is written until
the manager confirms): each row normalised (name, birth date, sex, phone, СНИЛС, disease,
centre) with its errors, duplicates inside the file, and the registered patient it matches."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, NamedTuple

from flask_babel import gettext as _
from sqlalchemy import insert, select

from app.accounts import AccountError, normalize_phone
from app.audit import audit
from app.catalogue import normalize_icd10
from app.dates import birth_date_error
from app.emails import InvalidEmail, emails_in_use, normalize_email
from app.extensions import db
from app.referrals.common import HEADERS, INVALID, PENDING, chunks, present
from app.referrals.upload import RawRow, iter_table
from models import (
    Disease,
    ImportStatus,
    MedicalCenter,
    Patient,
    ReferralImport,
    ReferralImportRow,
    Sex,
    disease_center,
)

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
        error("birth_date", exc if present(v.get("birth_date")) else _("Required."))
    sex = _SEX.get(_key(v.get("sex")))
    if sex is None:
        error("sex", _("Enter «м» or «ж»."))
    else:
        data["sex"] = str(sex)
    try:
        data["phone"] = normalize_phone(t.get("phone", ""))
    except AccountError as exc:
        error("phone", exc)
    try:
        data["email"] = normalize_email(t.get("email", ""))
    except InvalidEmail:
        error("email", _("Enter a valid e-mail or leave it empty."))
        data["email"] = None
    data["snils"] = None
    if present(v.get("snils")):
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
            if present(v.get("centre"))
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


def existing_patients(rows: list[dict]) -> tuple[dict[str, Patient], dict[str, Patient]]:
    """Patients already registered, by СНИЛС and by phone (a few IN queries, not one a row)."""
    snils = sorted({d["snils"] for d in rows if d.get("snils")})
    phones = sorted({d["phone"] for d in rows if d.get("phone")})
    by_snils: dict[str, Patient] = {}
    by_phone: dict[str, Patient] = {}
    for chunk in chunks(snils):
        for p in db.session.execute(select(Patient).where(Patient.snils.in_(chunk))).scalars():
            by_snils[p.snils] = p
    for chunk in chunks(phones):
        for p in db.session.execute(select(Patient).where(Patient.phone.in_(chunk))).scalars():
            by_phone[p.phone] = p
    return by_snils, by_phone


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
    by_snils, by_phone = existing_patients([d for d, _e in checked])
    emails_taken = emails_in_use(d["email"] for d, _e in checked if d.get("email"))
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
    audit("referral_import.upload", actor=user, obj_type="referral_import", obj_id=imp.public_id)
    return imp
