"""«Кто открывал мои документы» (issue 17, item 9): who opened the patient's documents and
conclusions, from the audit trail, in her time zone; hers alone; constant SQL per page."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import event, select

from tests.consultation_world import World, make_consultation, signed_in, text

READERS = "/cabinet/documents/readers"


def doc_url(public_id: uuid.UUID, what: str = "") -> str:
    return f"/staff/documents/{public_id}/{what}"


def issue_conclusion(app, world: World, consultation: uuid.UUID, version: int = 1) -> uuid.UUID:
    """A conclusion row by the centre's doctor (the PDF is not needed to be downloaded)."""
    from app.extensions import db
    from models import Conclusion, Consultation

    with app.app_context():
        c = db.session.execute(
            select(Consultation).where(Consultation.public_id == consultation)
        ).scalar_one()
        conclusion = Conclusion(
            public_id=uuid.uuid4(),
            consultation_id=c.id,
            author_id=world.doctors["doctor_c1"],
            version=version,
            diagnosis="—",
            issued_at=datetime.now(UTC),
        )
        db.session.add(conclusion)
        db.session.commit()
        return conclusion.public_id


def download_conclusion(app, world: World, actor: str, conclusion: uuid.UUID) -> bool:
    """The conclusions area's own lookup, which audits the download (or the refusal)."""
    from app.conclusions.access import find_conclusion
    from app.extensions import db
    from models import OblakoUser

    with app.app_context():
        found = find_conclusion(db.session.get(OblakoUser, world.users[actor]), conclusion)
        db.session.commit()
        return found is not None


def statements_for(app, client, url: str) -> int:
    from app.extensions import db

    seen: list[str] = []
    with app.app_context():
        engine = db.engine

    def record(conn, cursor, statement, *args) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        assert client.get(url).status_code == 200
    finally:
        event.remove(engine, "before_cursor_execute", record)
    return len(seen)


def test_the_patient_sees_who_opened_her_documents_and_when(app, world: World) -> None:
    from app.extensions import db
    from models import Doctor, MedicalCenter, Patient

    consultation = make_consultation(app, world, doctor_id=world.doctors["doctor_c1"])
    with app.app_context():
        db.session.get(Patient, world.patient).timezone = "Asia/Vladivostok"
        db.session.commit()
        doctor = db.session.get(Doctor, world.doctors["doctor_c1"])
        doctor_name = doctor.full_name
        centre = db.session.get(MedicalCenter, world.centre1).name

    patient = signed_in(app, world, "patient")
    page = text(patient.get(READERS))
    assert "Кто открывал мои документы" in page and 'id="no-readers"' in page

    doctor_client = signed_in(app, world, "doctor_c1")
    assert doctor_client.get(doc_url(world.ecg)).status_code == 200
    assert doctor_client.get(doc_url(world.ecg, "download")).status_code == 200
    # A doctor of another centre is refused: a refusal is not a reading and is not listed.
    assert signed_in(app, world, "doctor_c2").get(doc_url(world.ecg)).status_code == 404
    # The patient's own look is hers, not listed either.
    assert patient.get(f"/cabinet/documents/{world.ecg}/download").status_code == 200
    conclusion = issue_conclusion(app, world, consultation)
    assert download_conclusion(app, world, "doctor_c1", conclusion)

    page = text(patient.get(READERS))
    assert page.count('class="reading-row"') == 3
    assert page.count(doctor_name) == 3
    assert "Врач медицинского центра" in page and centre in page
    assert "ЭКГ.png" in page and "Скачан" in page and "Открыта страница документа" in page
    assert "Заключение по консультации" in page
    assert "Владивосток" in page or "UTC+10" in page  # her zone is named under the list
    # A reading from the audit trail, its time in her zone (Vladivostok, UTC+10).
    from models import AuditEvent

    with app.app_context():
        at = (
            db.session.execute(
                select(AuditEvent.at)
                .where(AuditEvent.action == "conclusion.download")
                .order_by(AuditEvent.id.desc())
            )
            .scalars()
            .first()
        )
    from app.dates import format_in_zone

    with app.test_request_context():
        assert format_in_zone(at, "Asia/Vladivostok") in page

    # The list is linked from the cabinet and from «Мои документы».
    assert READERS in text(patient.get("/cabinet/"))
    assert READERS in text(patient.get("/cabinet/documents/"))


def test_only_the_patient_herself_reads_her_list(app, world: World) -> None:
    make_consultation(app, world, doctor_id=world.doctors["doctor_c1"])
    assert signed_in(app, world, "doctor_c1").get(doc_url(world.ecg)).status_code == 200

    other = text(signed_in(app, world, "other_patient").get(READERS))
    assert 'id="no-readers"' in other and "ЭКГ.png" not in other
    for actor in ("doctor_c1", "duty", "manager"):
        response = signed_in(app, world, actor).get(READERS)
        assert response.status_code in (302, 403, 404), (actor, response.status_code)
        assert "ЭКГ.png" not in text(response)
    assert app.test_client().get(READERS).status_code == 302  # to the sign-in page


def test_the_number_of_statements_does_not_grow_with_the_readings(app, world: World) -> None:
    consultation = make_consultation(app, world, doctor_id=world.doctors["doctor_c1"])
    patient = signed_in(app, world, "patient")
    assert signed_in(app, world, "doctor_c1").get(doc_url(world.ecg)).status_code == 200
    download_conclusion(app, world, "doctor_c1", issue_conclusion(app, world, consultation))
    few = statements_for(app, patient, READERS)
    for actor in ("doctor_c1", "doctor_c1b", "doctor_c1b"):
        client = signed_in(app, world, actor)
        assert client.get(doc_url(world.ecg, "download")).status_code == 200
        assert client.get(doc_url(world.conclusion_doc, "download")).status_code in (200, 404)
    download_conclusion(app, world, "doctor_c1b", issue_conclusion(app, world, consultation, 2))
    assert statements_for(app, patient, READERS) == few
    # Paginated: a second page exists once there are more readings than a page holds.
    from app.documents.readers import PER_PAGE

    client = signed_in(app, world, "doctor_c1")
    for _ in range(PER_PAGE):
        assert client.get(doc_url(world.ecg)).status_code == 200
    assert statements_for(app, patient, READERS + "?page=2") == few
    assert text(patient.get(READERS + "?page=2")).count('class="reading-row"') >= 1
