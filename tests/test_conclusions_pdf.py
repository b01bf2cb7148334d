"""The conclusion's PDF: everything in Russian in an embedded font, the patient's time zone,
the download headers, the very file stored at issue time, every download audited, access."""

from __future__ import annotations

import io
import uuid
from zoneinfo import ZoneInfo

import pytest

from tests.conclusion_support import (
    GOOD,
    as_user,
    audit_actions,
    build_world,
    conclusions,
    doctor_client,
    issue,
    patient_client,
    pdf_text,
    started,
)
from tests.conftest import consultation_number


@pytest.fixture
def world(app, make_patient, make_center, make_doctor, make_staff):
    return build_world(app, make_patient, make_center, make_doctor, make_staff)


def _norm(text: str) -> str:
    return " ".join(text.split())


def test_pdf_carries_everything_in_russian(app, world):
    from app.extensions import db
    from models import Conclusion

    client, cid = started(app, world)
    issue(client, cid)
    issue(client, cid, recommendations="Исправленные рекомендации: бисопролол 5 мг утром.")
    v1, v2 = conclusions(app, cid)
    response = client.get(f"/conclusions/{v2.public_id}.pdf")
    assert response.status_code == 200
    assert response.mimetype == "application/pdf"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "no-store" in response.headers["Cache-Control"]
    disposition = response.headers["Content-Disposition"]
    assert disposition.startswith("attachment;")
    number = consultation_number(app, cid)  # '26-1': the same on the page and in the SMS
    assert f"-{number}-v2.pdf" in disposition and "filename*=UTF-8''" in disposition
    assert response.data.startswith(b"%PDF-")
    text = _norm(pdf_text(response.data))
    issued = v2.issued_at.astimezone(ZoneInfo("Asia/Vladivostok"))
    for expected in (
        "Кардиоцентр «Сердце»",
        "Заключение врача по результатам телемедицинской консультации",
        f"№{number}",
        world["d1_name"],
        "Кардиолог",
        world["p_name"],
        "02.01.1980",
        f"{issued:%d.%m.%Y %H:%M} (UTC+10)",  # the patient's zone, not the server's
        "Версия 2, заменяет версию 1",
        "Жалобы и анамнез",
        _norm(GOOD["complaints_history"]),
        _norm(GOOD["findings"]),
        "Стенокардия напряжения II ФК.",
        "МКБ-10: I20.8",
        "Исправленные рекомендации: бисопролол 5 мг утром.",
        "Необходим очный приём врача.",
        _norm(GOOD["next_steps"]),
    ):
        assert expected in text, expected
    v1_text = _norm(pdf_text(client.get(f"/conclusions/{v1.public_id}.pdf").data))
    assert "Версия 1" in v1_text and "заменяет" not in v1_text
    # The download is the very file stored at issue time.
    with app.app_context():
        from app.conclusions.pdf import conclusion_bytes, conclusion_pdf
        from app.storage import path_for_key

        assert response.data == path_for_key(v2.pdf_storage_key).read_bytes()
        row = db.session.get(Conclusion, v2.id)
        # And it is reproducible: the same conclusion builds the same bytes.
        assert conclusion_pdf(row) == response.data
        assert conclusion_bytes(row) == response.data


def test_pdf_embeds_a_font_and_no_core_font(app, world):
    from pypdf import PdfReader

    client, cid = started(app, world)
    issue(client, cid)
    [v1] = conclusions(app, cid)
    reader = PdfReader(io.BytesIO(client.get(f"/conclusions/{v1.public_id}.pdf").data))
    fonts = reader.pages[0]["/Resources"]["/Font"]
    for ref in fonts.values():
        font = ref.get_object()
        assert font["/Subtype"] == "/Type0"  # embedded TrueType (CID), not Helvetica & co
        assert "DejaVu" in str(font["/BaseFont"])


def test_every_download_is_audited(app, world):
    client, cid = started(app, world)
    issue(client, cid)
    [v1] = conclusions(app, cid)
    url = f"/conclusions/{v1.public_id}.pdf"
    client.get(url)
    patient_client(app, world["p"]).get(url)
    patient_client(app, world["q"]).get(url)  # denied: audited as such, answered 404
    events = audit_actions(app, "conclusion.download")
    assert sorted(e.outcome for e in events) == ["denied", "ok", "ok"]
    assert all(e.patient_id == world["p"] for e in events)


def test_pdf_access(app, world):
    client, cid = started(app, world)
    issue(client, cid)
    [v1] = conclusions(app, cid)
    url = f"/conclusions/{v1.public_id}.pdf"
    assert patient_client(app, world["p"]).get(url).status_code == 200
    assert patient_client(app, world["q"]).get(url).status_code == 404
    assert doctor_client(app, "doc_d2").get(url).status_code == 200  # same centre
    assert doctor_client(app, "doc_d3").get(url).status_code == 404  # another centre
    assert doctor_client(app, "doc_duty").get(url).status_code == 404
    assert as_user(app, "admin1").get(url).status_code == 200
    assert as_user(app, "manager1").get(url).status_code == 403
    anonymous = app.test_client().get(url)
    assert anonymous.status_code == 302 and "/login/" in anonymous.headers["Location"]
    unknown = f"/conclusions/{uuid.uuid4()}.pdf"
    assert patient_client(app, world["p"]).get(unknown).status_code == 404
