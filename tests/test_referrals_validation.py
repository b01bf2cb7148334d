"""Referral import (pathway 3), the preview: СНИЛС and birth dates, the template's header,
every row validated with its row and column, matched to registered patients, CSV encodings."""

from __future__ import annotations

import io
from datetime import date

import pytest

from tests.referral_support import _count, _rows, _validate, make_manager
from tests.referral_tables import HEADER, csv_bytes, row, xlsx


@pytest.fixture
def manager(app):
    return make_manager(app)


# --- pure helpers ------------------------------------------------------------------------------


@pytest.mark.no_db
def test_snils_checksum(app):
    from app.referrals.validation import normalize_snils

    with app.test_request_context():
        assert normalize_snils("112-233-445 95") == "112-233-445 95"
        assert normalize_snils("11223344595") == "112-233-445 95"
        with pytest.raises(ValueError):
            normalize_snils("112-233-445 96")
        with pytest.raises(ValueError):
            normalize_snils("1234")


@pytest.mark.no_db
def test_birth_dates(app):
    from app.referrals.validation import parse_birth_date

    with app.test_request_context():
        assert parse_birth_date("15.03.1975") == date(1975, 3, 15)
        assert parse_birth_date("1975-03-15") == date(1975, 3, 15)
        for bad in ("31.02.1980", "01.01.2999", "вчера", "01.01.1800"):
            with pytest.raises(ValueError):
                parse_birth_date(bad)


def test_template_has_russian_headers(app, catalogue):
    from openpyxl import load_workbook

    from app.referrals.template import build_template_xlsx

    with app.app_context():
        wb = load_workbook(io.BytesIO(build_template_xlsx()))
    assert [c.value for c in wb.worksheets[0][1]] == HEADER
    assert wb.worksheets[0].max_row == 1  # no example rows in the sheet that is read
    assert "I10" in [c.value for c in wb["Справочник"]["A"]]


# --- validation and matching -------------------------------------------------------------------


def test_rows_are_validated_with_row_and_column(app, catalogue, manager, make_patient):
    from app.extensions import db
    from models import Patient

    existing = make_patient(phone="+79123450010", birth_date=date(1970, 5, 6))
    with app.app_context():
        db.session.get(Patient, existing).snils = "112-233-445 95"
        db.session.commit()
    data = xlsx(
        [
            row(),  # 2: fine
            row(phone="12345"),  # 3: bad phone
            row(phone="+79123450003", born="31.02.1980"),  # 4: impossible date
            row(phone="+79123450004", code="Z99"),  # 5: unknown disease code
            row(phone="+79123450005", code="", disease="стенокардия"),  # 6: by name
            row(phone="+79123450006", centre="Нет такого"),  # 7: unknown centre
            row(),  # 8: duplicate of row 2
            row(name="Другая Анна", born="01.01.1990"),  # 9: same phone, another person
            row(phone="+79123450099", snils="112-233-445 95", born="06.05.1970"),  # 10: СНИЛС
            row(phone="+79123450010", born="06.05.1970"),  # 11: matched by phone + birth date
            row(phone="+79123450012", born="06.05.1970", snils="112-233-445 96"),  # 12: checksum
            row(phone="+79123450010", born="07.05.1970"),  # 13: registered, other birth date
        ]
    )
    import_id = _validate(app, manager, data)
    rows = {n: (outcome, errors, pid, d) for n, outcome, errors, pid, d in _rows(app, import_id)}

    def columns(n):
        return [e["column"] for e in rows[n][1]]

    assert rows[2][0] == "pending" and rows[2][1] == []
    assert columns(3) == ["телефон"]
    assert columns(4) == ["дата рождения"] and "нет такой даты" in rows[4][1][0]["message"].lower()
    assert columns(5) == ["код МКБ-10"]
    assert rows[6][1] == [] and rows[6][3]["icd10"] == "I20"
    assert columns(7) == ["центр"]
    assert columns(8) == ["ФИО"] and "2" in rows[8][1][0]["message"]
    assert columns(9) == ["телефон"]
    assert rows[10][1] == [] and rows[10][2] == existing
    assert rows[11][1] == [] and rows[11][2] == existing
    assert columns(12) == ["СНИЛС"]
    assert "телефон" in columns(13)
    with app.app_context():
        from app.extensions import db
        from models import ReferralImport

        imp = db.session.get(ReferralImport, import_id)
        assert (imp.total_rows, imp.valid_rows, imp.error_rows) == (12, 4, 8)
        assert imp.status == "validated"
    # Nothing but the preview: no accounts, no consultations, no SMS.
    from models import Consultation, OutboundMessage

    assert _count(app, Patient) == 1
    assert _count(app, Consultation) == 0 and _count(app, OutboundMessage) == 0


def test_csv_in_windows_1251_with_commas_and_utf8_bom(app, catalogue, manager):
    from models import ReferralImportRow

    cp = csv_bytes([row(), row(phone="+79123450002")], sep=",", encoding="cp1251")
    first = _validate(app, manager, cp, "t.csv")
    assert [r[1] for r in _rows(app, first)] == ["pending", "pending"]
    bom = csv_bytes([row(phone="+79123450003")], sep=";", encoding="utf-8-sig")
    second = _validate(app, manager, bom, "t.csv")
    assert [r[1] for r in _rows(app, second)] == ["pending"]
    assert _count(app, ReferralImportRow) == 3
