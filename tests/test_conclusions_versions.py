"""Conclusion versions: a correction is a new version and the first stays as it was (its PDF
too), the latest is the one in force, an issued row is never changed; only a doctor authors."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select, update

from tests.conclusion_support import (
    GOOD,
    build_world,
    conclusions,
    consultation_row,
    flashed,
    form_url,
    issue,
    notifications_of,
    patient_client,
    pdf_text,
    started,
)


@pytest.fixture
def world(app, make_patient, make_center, make_doctor, make_staff):
    return build_world(app, make_patient, make_center, make_doctor, make_staff)


def _content(c):
    return {
        k: getattr(c, k)
        for k in (
            "id",
            "public_id",
            "version",
            "supersedes_id",
            "complaints_history",
            "findings",
            "diagnosis",
            "icd10_code",
            "recommendations",
            "in_person_visit_needed",
            "next_steps",
            "issued_at",
            "pdf_storage_key",
        )
    }


def test_correction_is_a_new_version_and_the_first_stays(app, world):
    client, cid = started(app, world)
    issue(client, cid)
    [v1] = conclusions(app, cid)
    before = _content(v1)
    response = issue(client, cid, diagnosis="Стенокардия напряжения III ФК.", icd10_code="I20.9")
    assert response.status_code == 302
    assert "Выдана версия 2 заключения" in flashed(client)
    v1_again, v2 = conclusions(app, cid)
    assert _content(v1_again) == before
    assert (v2.version, v2.supersedes_id) == (2, v1.id)
    assert v2.diagnosis == "Стенокардия напряжения III ФК." and v2.icd10_code == "I20.9"
    assert v2.pdf_storage_key != v1.pdf_storage_key
    row = consultation_row(app, cid)
    assert row.status == "completed"
    assert any("Врач исправил заключение" in t for t in notifications_of(app, world["p"]))
    html = client.get(form_url(cid)).get_data(as_text=True)
    assert "Версия 2" in html and "заменяет версию 1" in html and "Версия 1" in html
    # The correction form starts from the latest version.
    assert "Стенокардия напряжения III ФК." in html
    # The first version's PDF still says what it said.
    v1_text = pdf_text(client.get(f"/conclusions/{v1.public_id}.pdf").data)
    assert "II ФК" in v1_text and "III ФК" not in v1_text


def test_the_latest_version_is_the_one_in_force_everywhere(app, world):
    """app.conclusions.access.latest_conclusion is the one answer: the form starts from it, a
    correction supersedes it, and the patient's consultation page links to its PDF."""
    from app.conclusions.access import latest_conclusion
    from app.extensions import db
    from models import Consultation

    client, cid = started(app, world)
    with app.app_context():
        row = db.session.execute(
            select(Consultation).where(Consultation.public_id == uuid.UUID(cid))
        ).scalar_one()
        assert latest_conclusion(row) is None
    issue(client, cid)
    issue(client, cid, diagnosis="Стенокардия напряжения III ФК.", icd10_code="I20.9")
    issue(client, cid, diagnosis="Стенокардия напряжения IV ФК.", icd10_code="I20.9")
    v1, v2, v3 = conclusions(app, cid)
    with app.app_context():
        row = db.session.execute(
            select(Consultation).where(Consultation.public_id == uuid.UUID(cid))
        ).scalar_one()
        latest = latest_conclusion(row)
        assert (latest.public_id, latest.version, latest.supersedes_id) == (v3.public_id, 3, v2.id)
    page = patient_client(app, world["p"]).get(f"/cabinet/consultations/{cid}")
    html = page.get_data(as_text=True)
    assert f"/conclusions/{v3.public_id}.pdf" in html
    assert str(v1.public_id) not in html and str(v2.public_id) not in html


def test_an_issued_row_cannot_be_modified_or_deleted(app, world):
    from app.conclusions import ConclusionImmutableError
    from app.extensions import db
    from models import Conclusion

    client, cid = started(app, world)
    issue(client, cid)
    [v1] = conclusions(app, cid)
    with app.app_context():
        row = db.session.get(Conclusion, v1.id)
        row.diagnosis = "Подменённый диагноз"
        with pytest.raises(ConclusionImmutableError):
            db.session.flush()
        db.session.rollback()
        row = db.session.get(Conclusion, v1.id)
        row.pdf_storage_key = None
        with pytest.raises(ConclusionImmutableError):
            db.session.flush()
        db.session.rollback()
        with pytest.raises(ConclusionImmutableError):
            db.session.execute(
                update(Conclusion).where(Conclusion.id == v1.id).values(diagnosis="x")
            )
        db.session.rollback()
        db.session.delete(db.session.get(Conclusion, v1.id))
        with pytest.raises(ConclusionImmutableError):
            db.session.flush()
        db.session.rollback()
    assert _content(conclusions(app, cid)[0]) == _content(v1)


def test_service_refuses_a_patient_or_nobody_as_author(app, world):
    from app.conclusions import ConclusionError
    from app.conclusions.form import ConclusionData
    from app.conclusions.issue import issue_conclusion
    from app.extensions import db
    from models import Consultation

    _, cid = started(app, world)
    with app.app_context():
        c = db.session.execute(
            select(Consultation).where(Consultation.public_id == uuid.UUID(cid))
        ).scalar_one()
        with pytest.raises(ConclusionError):
            issue_conclusion(c, by=None, data=ConclusionData(**_good_data()))
        db.session.rollback()
    assert conclusions(app, cid) == []


def _good_data():
    data = {k: v for k, v in GOOD.items() if k != "in_person_visit_needed"}
    return {**data, "in_person_visit_needed": True}
