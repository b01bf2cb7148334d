"""Every file the service hands out carries the same headers (views/common.py, DESIGN §4).

The rule is tested at its one place (download_headers / content_disposition), and over HTTP for
the downloads that used to set their own, thinner headers: the referral template and the report
exports. Documents, conclusion PDFs and recordings are covered in their own modules.
"""

from __future__ import annotations

from urllib.parse import quote

from tests.conftest import login, patient_username

SAME_FOR_EVERY_DOWNLOAD = {
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "Content-Security-Policy": "sandbox; default-src 'none'",
}


def test_a_cyrillic_name_gets_an_ascii_fallback_and_its_exact_utf8_form():
    from views.common import content_disposition

    name = "Заключение-№12 (копия).pdf"
    header = content_disposition(name)
    assert header.startswith('attachment; filename="')
    assert "filename*=UTF-8''" + quote(name, safe="") in header
    fallback = header.split('filename="', 1)[1].split('"', 1)[0]
    assert fallback.isascii() and fallback.endswith(".pdf")
    assert content_disposition("scan.png", inline=True).startswith('inline; filename="scan.png"')


def test_download_headers_attachment_and_inline_preview():
    from views.common import download_headers

    attachment = download_headers("a.pdf")
    assert {k: attachment[k] for k in SAME_FOR_EVERY_DOWNLOAD} == SAME_FOR_EVERY_DOWNLOAD
    assert "X-Frame-Options" not in attachment
    inline = download_headers("a.pdf", inline_csp="sandbox; img-src 'self'")
    assert inline["Content-Disposition"].startswith("inline;")
    assert inline["Content-Security-Policy"] == "sandbox; img-src 'self'"
    assert inline["X-Frame-Options"] == "SAMEORIGIN"
    assert inline["X-Content-Type-Options"] == "nosniff" and inline["Cache-Control"] == "no-store"


def _signed_in(app, username):
    client = app.test_client()
    response = login(client, username)
    assert response.status_code == 302 and "/login" not in response.headers["Location"]
    return client


def _assert_download(response, suffix: str) -> None:
    assert response.status_code == 200
    for header, value in SAME_FOR_EVERY_DOWNLOAD.items():
        assert response.headers[header] == value, header
    disposition = response.headers["Content-Disposition"]
    assert disposition.startswith("attachment;") and "filename*=UTF-8''" in disposition
    assert disposition.endswith(suffix)


def test_referral_template_and_report_exports_carry_the_download_headers(app, make_staff):
    client = _signed_in(app, make_staff("Manager"))
    _assert_download(client.get("/referrals/template.xlsx"), ".xlsx")
    _assert_download(client.get("/reports/cancellations/export.csv"), ".csv")
    _assert_download(client.get("/reports/cancellations/export.xlsx"), ".xlsx")


def test_a_patient_gets_no_referral_template_nor_report_export(app, make_patient):
    client = _signed_in(app, patient_username(app, make_patient()))
    for url in ("/referrals/template.xlsx", "/reports/cancellations/export.csv"):
        response = client.get(url)
        assert response.status_code in (302, 403, 404), url
        assert "Content-Disposition" not in response.headers
