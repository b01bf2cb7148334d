"""Referral import (pathway 3): reading files safely, validating rows, importing idempotently."""

from __future__ import annotations

import io
import zipfile
from datetime import date

import pytest
from sqlalchemy import func, select

from tests.referral_tables import HEADER, csv_bytes, invitation, row, xlsx


@pytest.fixture
def manager(app):
    from app.accounts import create_manager
    from app.extensions import db

    with app.app_context():
        user = create_manager(
            username="mgr",
            password="Secret123abc",
            first_name="М",
            last_name="Менеджер",
            email="mgr@example.org",
        )
        db.session.commit()
        return user.id


def _validate(app, manager, data, filename="t.xlsx"):
    from app.extensions import db
    from app.referrals.validation import validate_upload
    from models import OblakoUser

    with app.app_context():
        imp = validate_upload(db.session.get(OblakoUser, manager), filename, data)
        db.session.commit()
        return imp.id


def _rows(app, import_id):
    from app.extensions import db
    from models import ReferralImportRow

    with app.app_context():
        rows = db.session.execute(
            select(ReferralImportRow)
            .where(ReferralImportRow.import_id == import_id)
            .order_by(ReferralImportRow.row_number)
        ).scalars()
        return [(r.row_number, r.outcome, r.errors, r.patient_id, dict(r.data)) for r in rows]


def _import(app, import_id, **kw):
    from app.referrals.importer import run_import

    with app.app_context():
        return run_import(import_id, sign_in_url="https://oblako.test/login/", **kw)


def _count(app, model, *where):
    from app.extensions import db

    with app.app_context():
        return db.session.execute(select(func.count()).select_from(model).where(*where)).scalar()


def _refused(app, manager, data, filename="t.xlsx") -> str:
    from app.referrals.common import ReferralError
    from models import ReferralImport, ReferralImportRow

    with pytest.raises(ReferralError) as info:
        _validate(app, manager, data, filename)
    assert _count(app, ReferralImport) == 0 and _count(app, ReferralImportRow) == 0
    with app.app_context():
        return str(info.value)


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


# --- bad files -------------------------------------------------------------------------------


def test_not_a_spreadsheet_and_empty(app, catalogue, manager):
    assert "не таблица" in _refused(app, manager, b"%PDF-1.4\n%\xe2\xe3\xcf\xd3 binary", "a.xlsx")
    assert "не таблица" in _refused(app, manager, b"\x89PNG\r\n\x1a\n\x00\x00", "a.csv")
    docx = io.BytesIO()
    with zipfile.ZipFile(docx, "w") as z:
        z.writestr("word/document.xml", "<w/>")
    assert "не таблица" in _refused(app, manager, docx.getvalue(), "a.xlsx")
    assert "пуст" in _refused(app, manager, b"", "a.csv")
    assert "нет строк" in _refused(app, manager, xlsx([]), "a.xlsx")


def test_missing_columns_are_named(app, catalogue, manager):
    header = [h for h in HEADER if h not in ("телефон", "центр")]
    message = _refused(app, manager, xlsx([["x"] * len(header)], header=header))
    assert "«телефон»" in message and "«центр»" in message


def test_too_many_rows(app, catalogue, manager):
    app.config["REFERRAL_MAX_ROWS"] = 3
    try:
        rows = [row(phone=f"+7912345{n:04d}") for n in range(4)]
        assert "3" in _refused(app, manager, xlsx(rows))
        assert "3" in _refused(app, manager, csv_bytes(rows), "t.csv")
        assert _validate(app, manager, xlsx(rows[:3]))
    finally:
        app.config["REFERRAL_MAX_ROWS"] = 20000


def test_formulas_are_refused(app, catalogue, manager):
    rows = [row(), row(phone="+79123450002", note='=HYPERLINK("http://evil","x")')]
    message = _refused(app, manager, xlsx(rows))
    assert "формул" in message and "L3" in message


def test_zip_bomb_is_refused(app, catalogue, manager):
    genuine = xlsx([row()])
    bomb = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(genuine)) as src,
        zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as dst,
    ):
        for item in src.infolist():
            dst.writestr(item.filename, src.read(item.filename))
        dst.writestr("xl/media/padding.xml", b"<a>" + b" " * (300 * 1024 * 1024) + b"</a>")
    data = bomb.getvalue()
    assert len(data) < 1024 * 1024  # a small upload...
    assert "распаковывается" in _refused(app, manager, data)  # ...that would unpack to 300 MB


def _with_entity(genuine: bytes, member: str) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(genuine)) as src, zipfile.ZipFile(out, "w") as dst:
        for item in src.infolist():
            body = src.read(item.filename)
            if item.filename == member:
                text = body.decode()
                decl_end = text.index("?>") + 2 if "?>" in text else 0
                text = (
                    text[:decl_end]
                    + '<!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
                    + text[decl_end:]
                )
                text = text.replace("Петров П. П.", "&xxe;")
                body = text.encode()
            dst.writestr(item.filename, body)
    return out.getvalue()


def test_external_entities_are_refused(app, catalogue, manager):
    genuine = xlsx([row()])
    with zipfile.ZipFile(io.BytesIO(genuine)) as z:
        member = "xl/sharedStrings.xml" if "xl/sharedStrings.xml" in z.namelist() else None
        member = member or "xl/worksheets/sheet1.xml"
    data = _with_entity(genuine, member)
    assert "XML" in _refused(app, manager, data)


_NS = 'xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"'
_R = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"


def excel_style_xlsx(*, date1904: bool = False) -> bytes:
    """A workbook as Excel writes it (openpyxl writes inline strings only): shared strings with
    rich-text runs and a phonetic reading, a built-in and a custom date format, a 1904 option,
    a formula with its cached result, a boolean, an error, gaps between rows and cells."""
    parts = {
        "[Content_Types].xml": (
            '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
            '<Default Extension="rels" '
            'ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
            '<Default Extension="xml" ContentType="application/xml"/>'
            '<Override PartName="/xl/workbook.xml" ContentType="application/'
            'vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
            '<Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/'
            'vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
            '<Override PartName="/xl/sharedStrings.xml" ContentType="application/'
            'vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"/>'
            '<Override PartName="/xl/styles.xml" ContentType="application/'
            'vnd.openxmlformats-officedocument.spreadsheetml.styles+xml"/></Types>'
        ),
        "_rels/.rels": (
            '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            f'<Relationship Id="rId1" Type="{_R}/officeDocument" Target="xl/workbook.xml"/>'
            "</Relationships>"
        ),
        "xl/workbook.xml": (
            f'<workbook {_NS} xmlns:r="{_R}"><workbookPr'
            + (' date1904="1"' if date1904 else "")
            + '/><sheets><sheet name="Лист1" sheetId="1" r:id="rId1"/></sheets></workbook>'
        ),
        "xl/_rels/workbook.xml.rels": (
            '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            f'<Relationship Id="rId1" Type="{_R}/worksheet" Target="worksheets/sheet1.xml"/>'
            f'<Relationship Id="rId2" Type="{_R}/sharedStrings" Target="sharedStrings.xml"/>'
            f'<Relationship Id="rId3" Type="{_R}/styles" Target="styles.xml"/>'
            "</Relationships>"
        ),
        "xl/sharedStrings.xml": (
            f'<sst {_NS} count="3" uniqueCount="3">'
            "<si><t>ФИО</t></si>"
            '<si><r><rPr><b/></rPr><t>Иванова</t></r><r><t xml:space="preserve"> Анна</t></r>'
            '<rPh sb="0" eb="1"><t>カナ</t></rPh></si>'
            "<si><t>дата</t></si>"
            "</sst>"
        ),
        "xl/styles.xml": (
            f'<styleSheet {_NS}><numFmts count="1"><numFmt numFmtId="164" '
            'formatCode="dd/mm/yyyy;@"/></numFmts><cellXfs count="3"><xf numFmtId="0"/>'
            '<xf numFmtId="14" applyNumberFormat="1"/><xf numFmtId="164" applyNumberFormat="1"/>'
            "</cellXfs></styleSheet>"
        ),
        "xl/worksheets/sheet1.xml": (
            f"<worksheet {_NS}><sheetData>"
            '<row r="1"><c r="A1" t="s"><v>0</v></c><c r="B1" t="s"><v>2</v></c></row>'
            '<row r="2"><c r="A2" t="s"><v>1</v></c><c r="B2" s="1"><v>22348</v></c>'
            '<c r="C2"><v>79123456789</v></c><c r="D2"><v>2.5</v></c>'
            '<c r="E2" t="b"><v>1</v></c><c r="F2" t="e"><v>#N/A</v></c></row>'
            '<row r="5"><c r="B5" s="2"><v>37256</v></c>'
            '<c r="D5" t="inlineStr"><is><r><t>Пет</t></r><r><t>ров</t></r></is></c></row>'
            '<row r="6"><c r="C6"><f>1+1</f><v>2</v></c></row>'
            "</sheetData></worksheet>"
        ),
    }
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for name, text in parts.items():
            z.writestr(name, '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>' + text)
    return out.getvalue()


@pytest.mark.no_db
@pytest.mark.parametrize(
    "member",
    [
        "xl/workbook.xml",
        "xl/_rels/workbook.xml.rels",
        "xl/styles.xml",
        "xl/sharedStrings.xml",
        "xl/worksheets/sheet1.xml",
    ],
)
def test_a_dtd_in_any_member_the_reader_parses_is_refused(app, member):
    """The reader refuses a DTD itself (nothing else looks for one first): no entity is ever
    declared, so none is expanded or fetched."""
    from app.xlsx import XlsxDtdError, iter_sheet_rows

    data = _with_entity(excel_style_xlsx(), member)
    with zipfile.ZipFile(io.BytesIO(data)) as archive, pytest.raises(XlsxDtdError):
        list(iter_sheet_rows(archive))


@pytest.mark.no_db
@pytest.mark.filterwarnings("ignore:Workbook contains no default style")  # openpyxl's, on ours
@pytest.mark.parametrize("date1904", [False, True])
def test_the_reader_gives_what_openpyxl_gives(app, date1904):
    """Values as openpyxl reads them (it is the reference), formulas by reference instead."""
    from datetime import datetime

    from openpyxl import load_workbook

    from app.xlsx import iter_sheet_rows

    data = excel_style_xlsx(date1904=date1904)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        ours = list(iter_sheet_rows(archive))
    expected = []
    for r in load_workbook(io.BytesIO(data), read_only=True).worksheets[0].iter_rows():
        cells = [c for c in r if getattr(c, "value", None) is not None]
        if cells:
            plain = [c for c in cells if c.data_type != "f"]
            values = [None] * max((c.column for c in plain), default=0)
            for c in plain:
                values[c.column - 1] = c.value
            formulas = [c.coordinate for c in cells if c.data_type == "f"]
            expected.append((cells[0].row, values, formulas))
    assert ours == expected
    born = datetime(1965, 3, 9) if date1904 else datetime(1961, 3, 8)
    assert ours[0] == (1, ["ФИО", "дата"], [])
    assert ours[1] == (2, ["Иванова Анна", born, 79123456789, 2.5, True, "#N/A"], [])
    assert ours[2][0] == 5 and ours[2][1][3] == "Петров"
    assert ours[3] == (6, [], ["C6"])


def test_a_corrupted_deflate_stream_is_not_a_spreadsheet(app, catalogue, manager):
    """Damaged compressed bytes (zlib refuses them) are a refusal, not a server error."""
    data = bytearray(xlsx([row()]))
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as z:
        info = z.getinfo("xl/worksheets/sheet1.xml")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    for i in range(start + 5, start + 40):
        data[i] ^= 0xFF
    assert "не таблица" in _refused(app, manager, bytes(data))


def test_a_broken_workbook_is_not_a_spreadsheet(app, catalogue, manager):
    genuine = xlsx([row()])
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(genuine)) as src, zipfile.ZipFile(out, "w") as dst:
        for item in src.infolist():
            body = src.read(item.filename)
            if item.filename == "xl/worksheets/sheet1.xml":
                body = body[: len(body) // 2]  # cut off mid-element
            dst.writestr(item.filename, body)
    assert "не таблица" in _refused(app, manager, out.getvalue())


# --- import --------------------------------------------------------------------------------


def test_import_creates_accounts_consultations_and_one_sms(app, catalogue, manager, make_patient):
    from app.extensions import db
    from models import Consultation, OblakoUser, OutboundMessage, Patient

    existing = make_patient(phone="+79123450010", birth_date=date(1970, 5, 6))
    data = xlsx(
        [
            row(),
            row(
                name="Сидоров Пётр",
                sex="м",
                phone="+79123450002",
                born="01.02.1960",
                code="I20",
                snils="112-233-445 95",
            ),
            row(phone="+79123450010", born="06.05.1970"),  # registered: linked, no password
            row(phone="bad"),
        ]
    )
    import_id = _validate(app, manager, data)
    _import(app, import_id)
    rows = _rows(app, import_id)
    assert [r[1] for r in rows] == ["imported", "imported", "linked", "invalid"]
    assert _count(app, Patient) == 3
    assert _count(app, Consultation) == 3
    with app.app_context():
        from app.referrals.importer import import_progress
        from models import ReferralImport

        imp = db.session.get(ReferralImport, import_id)
        assert imp.status == "done" and imp.imported_rows == 3 and imp.finished_at
        assert import_progress(imp)["percent"] == 100
        c = (
            db.session.execute(
                select(Consultation).where(Consultation.referral_row_id.is_not(None))
            )
            .scalars()
            .first()
        )
        assert c.kind == "referral" and c.status == "awaiting_documents"
        assert c.center_id == catalogue and c.disease_id is not None
        patient = db.session.execute(
            select(Patient).where(Patient.phone == "+79123450001")
        ).scalar_one()
        assert patient.source == "referral" and patient.user.username == "+79123450001"
        user = db.session.get(OblakoUser, patient.user_id)
        assert user.must_change_password and user.password_expires_at
        sms = list(
            db.session.execute(
                select(OutboundMessage).where(OutboundMessage.dedupe_key.like("referral-invite:%"))
            ).scalars()
        )
        assert len(sms) == 2 and {m.recipient for m in sms} == {"+79123450001", "+79123450002"}
        body = next(m.body for m in sms if m.recipient == "+79123450001")
        sms_parts = invitation(body)
        assert sms_parts["url"] == "https://oblako.test/login/"
        assert sms_parts["login"] == "+79123450001"
        assert sms_parts["link"].startswith("https://oblako.test/s/")
        for word in ("I10", "гипертензия", "Эссенциальная", "Кардио"):
            assert word not in body  # never a diagnosis
        password = sms_parts["password"]
        assert len(password) >= 12
        from werkzeug.security import check_password_hash

        from app.otp import check_one_time_password  # noqa: F401  (the sign-in part's check)

        assert check_password_hash(user.password, password)
        assert patient.id != existing


def test_reimport_same_file_and_overlap_is_idempotent(app, catalogue, manager):
    from models import Consultation, OutboundMessage, Patient

    data = xlsx([row(), row(phone="+79123450002", name="Петрова Ольга")])
    _import(app, _validate(app, manager, data))
    counts = (_count(app, Patient), _count(app, Consultation), _count(app, OutboundMessage))
    assert counts == (2, 2, 2)
    again = _validate(app, manager, data)
    assert all(r[3] for r in _rows(app, again))  # matched in the preview
    _import(app, again)
    overlap = _validate(
        app, manager, xlsx([row(note="снова"), row(phone="+79123450003", name="Новая Нина")])
    )
    _import(app, overlap)
    assert _count(app, Patient) == 3
    assert _count(app, Consultation) == 3
    assert _count(app, OutboundMessage) == 3  # only the new patient got an SMS
    assert [r[1] for r in _rows(app, again)] == ["linked", "linked"]


def test_interrupted_import_resumes_without_duplicates(app, catalogue, manager):
    from models import Consultation, OutboundMessage, Patient, ReferralImport

    rows = [row(phone=f"+7912345{n:04d}", name=f"Пациентова{n} Анна") for n in range(1, 8)]
    import_id = _validate(app, manager, xlsx(rows))
    result = _import(app, import_id, chunk_size=3, max_chunks=1)  # "the worker died"
    assert result["remaining"] == 4
    with app.app_context():
        from app.extensions import db

        imp = db.session.get(ReferralImport, import_id)
        assert imp.status == "importing" and imp.imported_rows == 3
    assert _count(app, Patient) == 3
    _import(app, import_id, chunk_size=3)
    _import(app, import_id, chunk_size=3)  # and once more: nothing changes
    assert _count(app, Patient) == 7
    assert _count(app, Consultation) == 7
    assert _count(app, OutboundMessage) == 7


def test_resend_credentials(app, catalogue, manager):
    from werkzeug.security import check_password_hash

    from app.extensions import db
    from app.referrals.invitations import resend_credentials
    from models import OblakoUser, OutboundMessage, Patient

    _import(app, _validate(app, manager, xlsx([row()])))
    with app.app_context():
        patient = db.session.execute(select(Patient)).scalar_one()
        first = db.session.execute(select(OutboundMessage)).scalar_one().body
        old = invitation(first)["password"]
        resend_credentials(patient, by=db.session.get(OblakoUser, manager))
        db.session.commit()
        resend_credentials(patient, by=db.session.get(OblakoUser, manager))
        db.session.commit()
        messages = list(
            db.session.execute(select(OutboundMessage).order_by(OutboundMessage.id)).scalars()
        )
        assert len(messages) == 3
        assert len({m.dedupe_key for m in messages}) == 3
        new = invitation(messages[-1].body)["password"]
        assert new != old
        user = patient.user
        assert check_password_hash(user.password, new)
        assert not check_password_hash(user.password, old)
        assert user.must_change_password


def test_resend_refused_for_self_registered(app, manager, make_patient):
    from app.extensions import db
    from app.referrals.common import ReferralError
    from app.referrals.invitations import resend_credentials
    from models import OblakoUser, OutboundMessage, Patient

    pid = make_patient()
    with app.app_context():
        with pytest.raises(ReferralError):
            resend_credentials(db.session.get(Patient, pid), by=db.session.get(OblakoUser, manager))
        db.session.rollback()
    assert _count(app, OutboundMessage) == 0


def test_export_writes_dangerous_text_as_text(app, catalogue, manager):
    from openpyxl import load_workbook

    from app.extensions import db
    from app.referrals.tracking import export_tracking_xlsx
    from models import ReferralImport

    data = csv_bytes(
        [row(name="=cmd|' /C calc'!A0 Анна", phone="+79123450001"), row(phone="x")],
        encoding="utf-8",
    )
    import_id = _validate(app, manager, data, "t.csv")
    _import(app, import_id)
    with app.app_context():
        body = export_tracking_xlsx(db.session.get(ReferralImport, import_id))
    ws = load_workbook(io.BytesIO(body)).worksheets[0]
    cells = {c.value: c for r in ws.iter_rows() for c in r if isinstance(c.value, str)}
    dangerous = cells["=cmd|' /C calc'!A0 Анна"]
    assert dangerous.data_type == "s"
    assert "+79123450001" in cells and cells["+79123450001"].data_type == "s"
    assert [c.value for c in ws[1]][:2] == ["Строка", "ФИО"]
    assert ws.max_row == 3


def test_export_drops_characters_a_spreadsheet_cannot_hold(app, catalogue, manager):
    """A control character past the part of a CSV the upload inspects (its first 64 KB) is kept
    in the row's raw text; the tracking export drops it instead of failing (app/spreadsheet)."""
    from openpyxl import load_workbook

    from app.extensions import db
    from app.referrals.tracking import export_tracking_xlsx
    from models import ReferralImport

    rows = [row(phone=f"+7912347{n:04d}", name=f"Пациентова{n} Анна") for n in range(1000)]
    rows[-1][9] = "ЦРБ\x01 №2"
    data = csv_bytes(rows, encoding="utf-8")
    assert data.decode().index("\x01") > 65536  # characters: what the upload reads
    import_id = _validate(app, manager, data, "t.csv")
    with app.app_context():
        body = export_tracking_xlsx(db.session.get(ReferralImport, import_id))
    ws = load_workbook(io.BytesIO(body)).worksheets[0]
    assert ws.max_row == 1001
    assert ws.cell(row=1001, column=7).value == "ЦРБ №2"


def test_phone_taken_after_the_preview_marks_the_row_not_another_patient(
    app, catalogue, manager, make_patient
):
    from models import Consultation, OutboundMessage

    import_id = _validate(app, manager, xlsx([row(), row(phone="+79123450002")]))
    make_patient(phone="+79123450001", birth_date=date(1999, 9, 9))  # meanwhile, someone else
    _import(app, import_id)
    rows = _rows(app, import_id)
    assert [r[1] for r in rows] == ["invalid", "imported"]
    assert rows[0][2] and rows[0][3] is None
    assert _count(app, Consultation) == 1 and _count(app, OutboundMessage) == 1


def test_linked_patient_is_told_of_the_new_referral_without_credentials(
    app, catalogue, manager, make_patient
):
    """A registered patient matched by a row gets a cabinet notification and an SMS (no
    password, no diagnosis); importing the same file again tells them nothing new."""
    from app.extensions import db
    from models import Consultation, Notification, OutboundMessage, Patient

    existing = make_patient(phone="+79123450010", birth_date=date(1970, 5, 6))
    data = xlsx([row(phone="+79123450010", born="06.05.1970"), row()])
    import_id = _validate(app, manager, data)
    _import(app, import_id)
    assert [r[1] for r in _rows(app, import_id)] == ["linked", "imported"]
    with app.app_context():
        patient = db.session.get(Patient, existing)
        consultation = db.session.execute(
            select(Consultation).where(Consultation.patient_id == existing)
        ).scalar_one()
        notes = list(
            db.session.execute(
                select(Notification).where(Notification.user_id == patient.user_id)
            ).scalars()
        )
        assert len(notes) == 1
        assert notes[0].link == f"/cabinet/consultations/{consultation.public_id}"
        assert "новое направление" in notes[0].text
        sms = list(
            db.session.execute(
                select(OutboundMessage).where(
                    OutboundMessage.user_id == patient.user_id, OutboundMessage.channel == "sms"
                )
            ).scalars()
        )
        assert len(sms) == 1 and sms[0].recipient == "+79123450010"
        body = sms[0].body
        assert body.startswith("Облако здоровья: у вас новое направление")
        assert "https://oblako.test/login/" in body
        assert "пароль:" not in body.lower() and "логин): +7" not in body
        for word in ("I10", "гипертензия", "Эссенциальная", "Кардио"):
            assert word not in body  # never a diagnosis
        # The patient the import created gets its invitation only, not this notice as well.
        created = db.session.execute(
            select(Patient).where(Patient.phone == "+79123450001")
        ).scalar_one()
        assert [
            m.dedupe_key.split(":")[0]
            for m in db.session.execute(
                select(OutboundMessage).where(OutboundMessage.user_id == created.user_id)
            ).scalars()
        ] == ["referral-invite"]
        before = _count(app, OutboundMessage), _count(app, Notification)
    again = _validate(app, manager, data)
    _import(app, again)
    assert [r[1] for r in _rows(app, again)] == ["linked", "linked"]
    assert (_count(app, OutboundMessage), _count(app, Notification)) == before


def test_linked_patient_is_notified_when_a_refused_chunk_is_retried(
    app, catalogue, manager, make_patient, monkeypatch
):
    """The retry of a refused chunk (one row at a time) goes through the same chunked path:
    the linked patient is told of the new referral there too, once."""
    import app.referrals.importer as referrals
    from app.extensions import db
    from models import Notification, OutboundMessage, Patient

    existing = make_patient(phone="+79123450010", birth_date=date(1970, 5, 6))
    import_id = _validate(app, manager, xlsx([row(phone="+79123450010", born="06.05.1970")]))
    chunk = referrals._import_chunk
    calls: list[int] = []

    def refuse_once(rows, *args, **kwargs):
        calls.append(len(rows))
        if len(calls) == 1:
            raise ValueError("the chunk is refused")  # as a database refusal: a retry follows
        return chunk(rows, *args, **kwargs)

    monkeypatch.setattr(referrals, "_import_chunk", refuse_once)
    _import(app, import_id)
    assert [r[1] for r in _rows(app, import_id)] == ["linked"]
    assert calls == [1, 1]  # the chunk, then its row retried alone
    with app.app_context():
        user_id = db.session.get(Patient, existing).user_id
        assert (
            db.session.execute(
                select(func.count())
                .select_from(Notification)
                .where(Notification.user_id == user_id)
            ).scalar_one()
            == 1
        )
        assert (
            db.session.execute(
                select(func.count())
                .select_from(OutboundMessage)
                .where(OutboundMessage.user_id == user_id, OutboundMessage.channel == "sms")
            ).scalar_one()
            == 1
        )


def test_a_database_refusal_in_a_chunk_imports_the_other_rows_one_by_one(
    app, catalogue, manager, monkeypatch
):
    """The chunk's batched INSERT is refused (an account took row 2's phone as its login after
    the preview, without a patient record): the chunk is rolled back and retried row by row —
    the other rows are imported, the refused one is reported, nothing is doubled."""
    import app.referrals.importer as referrals
    from app.accounts import hash_password
    from app.extensions import db
    from models import Consultation, OblakoUser, OutboundMessage, Patient, ReferralImport

    retried: list[list[int]] = []
    one_by_one = referrals._import_one_by_one

    def spy(row_ids, *args):
        retried.append(list(row_ids))
        return one_by_one(row_ids, *args)

    monkeypatch.setattr(referrals, "_import_one_by_one", spy)
    rows = [row(phone=f"+7912345{n:04d}", name=f"Пациентова{n} Анна") for n in range(1, 5)]
    import_id = _validate(app, manager, xlsx(rows))
    with app.app_context():
        db.session.add(
            OblakoUser(
                username="+79123450002",
                first_name="Чужой",
                last_name="Логин",
                email="taken@example.org",
                password=hash_password("Secret123abc"),
                active=True,
            )
        )
        db.session.commit()
    result = _import(app, import_id)
    assert len(retried) == 1 and len(retried[0]) == 4  # the whole chunk, retried row by row
    outcomes = _rows(app, import_id)
    assert [r[1] for r in outcomes] == ["imported", "invalid", "imported", "imported"]
    assert outcomes[1][2] and outcomes[1][3] is None
    assert outcomes[1][2] == [{"column": "", "message": "Строку не удалось импортировать."}]
    assert _count(app, Patient) == 3
    assert _count(app, Consultation) == 3
    assert _count(app, OutboundMessage) == 3  # one invitation per imported row, none for row 2
    with app.app_context():
        imp = db.session.get(ReferralImport, import_id)
        assert imp.status == "done" and imp.imported_rows == 3
        assert imp.valid_rows == 3 and imp.error_rows == 1
    assert result["imported"] == 3


def test_every_row_of_a_bulk_import_gets_its_own_account_patient_and_consultation(
    app, catalogue, manager
):
    """The batched INSERTs hand back ids by each row's key (login, account, public id): every
    row ends with the patient, account, consultation and SMS of its own phone, across chunks."""
    from app.extensions import db
    from models import Consultation, OblakoUser, OutboundMessage, Patient, ReferralImportRow

    rows = [
        row(
            phone=f"+7912346{n:04d}",
            name=f"Пациентова{n} Анна",
            email=f"Patient{n}@Example.org" if n % 3 == 0 else "",
        )
        for n in range(1, 24)
    ]
    import_id = _validate(app, manager, xlsx(rows))
    _import(app, import_id, chunk_size=7)
    with app.app_context():
        imported = list(
            db.session.execute(
                select(ReferralImportRow).where(ReferralImportRow.import_id == import_id)
            ).scalars()
        )
        assert len(imported) == 23 and {r.outcome for r in imported} == {"imported"}
        for r in imported:
            patient = db.session.get(Patient, r.patient_id)
            user = db.session.get(OblakoUser, patient.user_id)
            assert patient.phone == user.username == r.data["phone"]
            assert patient.surname == user.last_name == r.data["surname"]
            consultation = db.session.execute(
                select(Consultation).where(Consultation.referral_row_id == r.id)
            ).scalar_one()
            assert consultation.id == r.data["consultation_id"]
            assert consultation.patient_id == patient.id
            sms = db.session.execute(
                select(OutboundMessage).where(OutboundMessage.user_id == user.id)
            ).scalar_one()
            assert sms.recipient == patient.phone
            assert invitation(sms.body)["login"] == patient.phone
        assert _count(app, OblakoUser, func.lower(OblakoUser.email).like("patient%")) == 7


@pytest.mark.no_db
def test_an_upload_is_read_up_to_one_byte_past_the_limit(tmp_path):
    from app.referrals.upload import read_upload

    big = tmp_path / "big.xlsx"
    big.write_bytes(b"x" * (3 * 1024 * 1024))
    with big.open("rb") as fh:
        assert len(read_upload(fh, 2 * 1024 * 1024)) == 2 * 1024 * 1024 + 1  # "too large"
    with big.open("rb") as fh:
        assert read_upload(fh, 4 * 1024 * 1024) == big.read_bytes()
    assert read_upload(io.BytesIO(b""), 10) == b""


def test_tracking_stage_of_a_consultation_that_ended(app, catalogue, manager):
    """Concluded when completed; closed when it ended any other way (models.CLOSED_STATUSES)."""
    from app.extensions import db
    from app.referrals.tracking import tracked_rows
    from models import Consultation, ConsultationStatus, ReferralImportRow

    import_id = _validate(app, manager, xlsx([row()]))
    _import(app, import_id)
    stages = {}
    with app.app_context():
        consultation = db.session.execute(select(Consultation)).scalar_one()
        for status in ConsultationStatus:
            consultation.status = status
            db.session.flush()
            rows = list(
                db.session.execute(
                    select(ReferralImportRow).where(ReferralImportRow.import_id == import_id)
                ).scalars()
            )
            stages[status.value] = tracked_rows(rows)[0].stage
        db.session.rollback()
    assert stages["completed"] == "concluded"
    assert stages["cancelled"] == stages["rejected"] == stages["missed"] == "closed"
    assert stages["awaiting_documents"] == "invited"
    assert stages["scheduled"] == stages["in_progress"] == "scheduled"
