"""Pathway 1 through the HTTP views, the patient's «Новая заявка»: the centres, the form and its
checklist, documents uploaded on the spot, refusals that name what is missing and lose nothing."""

from __future__ import annotations

import io
import re
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from tests.conftest import make_pdf
from tests.consultation_world import notification_texts, post, signed_in, text

pytestmark = pytest.mark.usefixtures("empty_storage")


def consultations_count(app) -> int:
    from app.extensions import db
    from models import Consultation

    with app.app_context():
        return db.session.execute(select(func.count(Consultation.id))).scalar()


NEW = "/cabinet/applications/new"


def test_patient_menu_has_new_application_and_consultations(app, world):
    client = signed_in(app, world, "patient")
    page = text(client.get("/cabinet/"))
    assert "Новая заявка" in page and "Консультации" in page


def test_centre_list_and_form_show_profile_and_checklist(app, world):
    client = signed_in(app, world, "patient")
    page = text(client.get(NEW))
    assert "Кардиоцентр" in page and "Кардиология" in page
    page = text(client.get(f"{NEW}?centre={world.centre1_public}"))
    assert "Иванова Анна Ивановна" in page  # from the profile, not editable
    assert re.search(r'id="applicant-age">\s*\d+\s*<', page)
    assert "Документы, нужные при этом заболевании" in page
    # Each line names the diseases requiring it (a type several of them require: once).
    assert re.search(rf'data-diseases="[^"]*\b{world.disease_i48}\b[^"]*" data-label="ЭКГ"', page)
    assert "Заключение врача" in page and "ЭКГ" in page
    assert "Лейомиома" not in page  # another centre's catalogue


def application_form(world, **over) -> dict:
    data = {
        "centre": str(world.centre1_public),
        "disease": str(world.disease_i48),
        "diagnosis_text": "",
        "complaints": "Перебои в работе сердца",
        "documents": [str(world.ecg)],
    }
    data.update(over)
    return data


def test_eligibility_refusal_names_missing_documents(app, world):
    client = signed_in(app, world, "patient")
    page_url = f"{NEW}?centre={world.centre1_public}"
    response = post(client, page_url, page_url, application_form(world, documents=[]))
    assert response.status_code == 400
    assert "Не хватает документов: Заключение врача, ЭКГ." in text(response)
    response = post(client, page_url, page_url, application_form(world))
    assert "Не хватает документов: Заключение врача." in text(response)
    assert consultations_count(app) == 0


def test_submit_with_upload_on_the_spot(app, world, types_ids):
    client = signed_in(app, world, "patient")
    page_url = f"{NEW}?centre={world.centre1_public}"
    data = application_form(
        world,
        file=(io.BytesIO(make_pdf()), "Заключение кардиолога.pdf"),
        file_type=str(types_ids["conclusion"]),
        # server-set fields are ignored if posted
        status="completed",
        patient_id="1",
    )
    response = post(client, page_url, page_url, data, content_type="multipart/form-data")
    assert response.status_code == 302
    from app.extensions import db
    from models import Consultation

    with app.app_context():
        c = db.session.execute(select(Consultation)).scalar_one()
        assert c.status == "requested" and c.patient_id == world.patient
        assert c.due_by - c.submitted_at == timedelta(days=3)
        names = sorted(d.original_name for d in c.documents)
        assert names == ["Заключение кардиолога.pdf", "ЭКГ.png"]
        public_id = c.public_id
    assert response.headers["Location"].endswith(f"/cabinet/consultations/{public_id}")
    page = text(client.get(f"/cabinet/consultations/{public_id}"))
    assert "Заявка отправлена. Врачи центра изучат её" in page
    assert len(notification_texts(app, world, "doctor_c1")) == 1
    assert len(notification_texts(app, world, "doctor_c1b")) == 1


def test_upload_on_the_spot_is_validated(app, world, types_ids):
    client = signed_in(app, world, "patient")
    page_url = f"{NEW}?centre={world.centre1_public}"
    data = application_form(
        world,
        file=(io.BytesIO(b"<html>not a pdf</html>"), "Заключение.pdf"),
        file_type=str(types_ids["conclusion"]),
    )
    response = post(client, page_url, page_url, data, content_type="multipart/form-data")
    assert response.status_code == 400
    assert "Можно загружать только файлы PDF, JPEG, PNG и DICOM." in text(response)
    assert consultations_count(app) == 0


def test_refused_application_keeps_the_uploaded_file(app, world, types_ids):
    """Nothing she sent is lost (issue 17, item 2): the application is refused, the file stays
    in «Мои документы» and comes back ticked on the form, with what she typed."""
    from app.extensions import db
    from models import MedicalDocument

    with app.app_context():
        before = db.session.execute(select(func.count(MedicalDocument.id))).scalar()
    client = signed_in(app, world, "patient")
    page_url = f"{NEW}?centre={world.centre1_public}"
    # A real PDF, but filed as «Другое»: the conclusion is still missing.
    data = application_form(
        world,
        file=(io.BytesIO(make_pdf()), "Прочее.pdf"),
        file_type=str(types_ids["other"]),
    )
    response = post(client, page_url, page_url, data, content_type="multipart/form-data")
    page = text(response)
    assert "Не хватает документов: Заключение врача." in page
    assert "Перебои в работе сердца" in page
    with app.app_context():
        assert db.session.execute(select(func.count(MedicalDocument.id))).scalar() == before + 1
        kept = db.session.execute(
            select(MedicalDocument).where(MedicalDocument.original_name == "Прочее.pdf")
        ).scalar_one()
    assert re.search(rf'value="{kept.public_id}"[^>]*checked', page)
    assert consultations_count(app) == 0


def test_free_text_diagnosis(app, world):
    client = signed_in(app, world, "patient")
    page_url = f"{NEW}?centre={world.centre1_public}"
    data = application_form(world, disease="", diagnosis_text="Миокардит", documents=[])
    assert post(client, page_url, page_url, data).status_code == 302
    assert consultations_count(app) == 1


@pytest.mark.parametrize("bad", ["foreign", "garbage"])
def test_foreign_document_ids_refused(app, world, bad):
    client = signed_in(app, world, "patient")
    page_url = f"{NEW}?centre={world.centre1_public}"
    ids = [str(world.ecg), str(world.conclusion_doc)]
    ids.append(str(world.foreign_doc) if bad == "foreign" else "not-a-uuid")
    response = post(client, page_url, page_url, application_form(world, documents=ids))
    assert response.status_code == 400
    assert "Приложить можно только свои документы." in text(response)
    assert consultations_count(app) == 0


def test_unknown_centre_shows_the_list(app, world):
    client = signed_in(app, world, "patient")
    page = text(client.get(f"{NEW}?centre=not-a-uuid", follow_redirects=True))
    assert "Выберите медицинский центр из списка." in page
