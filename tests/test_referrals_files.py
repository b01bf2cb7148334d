"""Referral import (pathway 3), reading files safely: what is not a table, too big or too long,
formulas, zip bombs, XML entities, damaged workbooks; the XLSX reader as Excel writes files."""

from __future__ import annotations

import io
import zipfile

import pytest

from tests.referral_support import _count, _validate, make_manager
from tests.referral_tables import HEADER, csv_bytes, row, xlsx


@pytest.fixture
def manager(app):
    return make_manager(app)


def _refused(app, manager, data, filename="t.xlsx") -> str:
    from app.referrals.common import ReferralError
    from models import ReferralImport, ReferralImportRow

    with pytest.raises(ReferralError) as info:
        _validate(app, manager, data, filename)
    assert _count(app, ReferralImport) == 0 and _count(app, ReferralImportRow) == 0
    with app.app_context():
        return str(info.value)


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


@pytest.mark.filterwarnings("ignore:Workbook contains no default style")  # openpyxl's
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
    """An entity declared in any member the reader parses is refused (defusedxml under
    openpyxl): none is ever expanded or fetched."""
    from app.xlsx import XlsxDtdError, iter_sheet_rows

    data = _with_entity(excel_style_xlsx(), member)
    with pytest.raises(XlsxDtdError):
        list(iter_sheet_rows(io.BytesIO(data)))


@pytest.mark.no_db
@pytest.mark.filterwarnings("ignore:Workbook contains no default style")  # openpyxl's, on ours
@pytest.mark.parametrize("date1904", [False, True])
def test_the_reader_gives_values_as_excel_stores_them(app, date1904):
    """Shared strings without their phonetic reading, dates by their format and epoch, numbers,
    booleans, errors, inline rich text, gaps kept in the row numbers, formulas by reference."""
    from datetime import datetime

    from app.xlsx import iter_sheet_rows

    ours = list(iter_sheet_rows(io.BytesIO(excel_style_xlsx(date1904=date1904))))
    born = datetime(1965, 3, 9) if date1904 else datetime(1961, 3, 8)
    assert ours[0] == (1, ["ФИО", "дата"], [])
    assert ours[1] == (2, ["Иванова Анна", born, 79123456789, 2.5, True, "#N/A"], [])
    assert ours[2] == (
        5,
        [None, datetime(2001, 12, 31) if not date1904 else datetime(2006, 1, 1), None, "Петров"],
        [],
    )
    assert ours[3] == (6, [], ["C6"])
    assert len(ours) == 4


@pytest.mark.no_db
def test_a_forged_dimension_does_not_pad_the_rows(app):
    """A sheet claiming A1:XFD1048576 gives its real cells only, not 16,384 columns a row."""
    from app.xlsx import iter_sheet_rows

    data = xlsx([row()])
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
        for item in src.infolist():
            body = src.read(item.filename)
            if item.filename == "xl/worksheets/sheet1.xml":
                text = body.decode()
                start = text.index("<dimension")
                end = text.index("/>", start) + 2
                body = (text[:start] + '<dimension ref="A1:XFD1048576"/>' + text[end:]).encode()
            dst.writestr(item.filename, body)
    rows = list(iter_sheet_rows(io.BytesIO(out.getvalue())))
    assert [len(values) for _n, values, _f in rows] == [len(HEADER), len(HEADER) - 1]


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
