"""«Новая заявка» leads instead of refusing (issue 17, item 2): each missing document added on
its checklist line (several files at once, or the phone's camera), nothing she typed or sent
lost on any refusal, a refused file named, the server the authority on what is missing."""

from __future__ import annotations

import io
import re

import pytest
from sqlalchemy import func, select

from tests.conftest import make_image, make_pdf
from tests.consultation_world import World, post, signed_in, text

NEW = "/cabinet/applications/new"
COMPLAINTS = "Перебои в работе сердца по ночам"


@pytest.fixture
def types(app, world) -> dict[str, int]:
    from app.extensions import db
    from models import DocumentType

    with app.app_context():
        return {t.code: t.id for t in db.session.execute(select(DocumentType)).scalars()}


def page_url(world: World) -> str:
    return f"{NEW}?centre={world.centre1_public}"


def form(world: World, **over) -> dict:
    data = {
        "centre": str(world.centre1_public),
        "disease": str(world.disease_i48),  # requires a doctor's conclusion and an ECG
        "diagnosis_text": "",
        "complaints": COMPLAINTS,
    }
    data.update(over)
    return data


def send(client, world: World, data: dict):
    url = page_url(world)
    return post(client, url, url, data, content_type="multipart/form-data")


def documents_named(app, *names: str):
    from app.extensions import db
    from models import MedicalDocument

    with app.app_context():
        return list(
            db.session.execute(
                select(MedicalDocument).where(MedicalDocument.original_name.in_(names))
            ).scalars()
        )


def counts(app) -> tuple[int, int]:
    from app.extensions import db
    from models import Consultation, MedicalDocument

    with app.app_context():
        return (
            db.session.execute(select(func.count(Consultation.id))).scalar_one(),
            db.session.execute(select(func.count(MedicalDocument.id))).scalar_one(),
        )


def test_each_checklist_line_takes_several_files_or_a_photo(app, world, types) -> None:
    page = text(signed_in(app, world, "other_patient").get(page_url(world)))
    for code in ("conclusion", "ecg"):
        files = re.search(rf'<input type="file" name="files-{types[code]}"[^>]*>', page).group(0)
        assert "multiple" in files
        assert 'accept=".pdf,.jpg,.jpeg,.png,.dcm,application/pdf,image/jpeg,image/png,' in files
        photo = re.search(rf'<input type="file" name="photo-{types[code]}"[^>]*>', page).group(0)
        assert 'capture="environment"' in photo and 'accept="image/jpeg,image/png"' in photo
    assert "Добавить файлы" in page and "Сфотографировать" in page
    assert re.search(r"oblako/application_new\.[0-9a-f]{12}\.js", page)  # hashed name


def test_files_are_kept_when_something_is_still_missing(app, world: World, types) -> None:
    client = signed_in(app, world, "other_patient")
    before = counts(app)
    response = send(
        client,
        world,
        form(
            world,
            **{
                f"files-{types['conclusion']}": [
                    (io.BytesIO(make_pdf()), "Заключение, стр. 1.pdf"),
                    (io.BytesIO(make_image("PNG")), "Заключение, стр. 2.png"),
                ]
            },
        ),
    )
    page = text(response)
    assert response.status_code == 400
    # The server says what is missing; both files are in «Мои документы» and ticked, the
    # complaints still typed, the line of the conclusion ticked and the ECG's not.
    assert "Не хватает документов: ЭКГ." in page
    assert "2 файла добавлены в «Мои документы» и в эту заявку." in page
    assert COMPLAINTS in page
    kept = documents_named(app, "Заключение, стр. 1.pdf", "Заключение, стр. 2.png")
    assert len(kept) == 2 and {d.document_type_id for d in kept} == {types["conclusion"]}
    for doc in kept:
        assert re.search(rf'value="{doc.public_id}"[^>]*checked', page)
    assert counts(app) == (before[0], before[1] + 2)
    assert re.search(f'class="checklist-item checklist-ok" data-type="{types["conclusion"]}"', page)
    assert re.search(f'class="checklist-item checklist-missing" data-type="{types["ecg"]}"', page)
    assert "Ещё не хватает: ЭКГ." in page

    # She adds the ECG with the camera on its line; the ticked files come back with the form.
    token = re.search(r'name="form_token" type="hidden" value="([^"]+)"', page).group(1)
    response = send(
        client,
        world,
        form(
            world,
            form_token=token,
            documents=[str(d.public_id) for d in kept],
            **{f"photo-{types['ecg']}": (io.BytesIO(make_image("JPEG")), "image.jpg")},
        ),
    )
    assert response.status_code == 302, text(response)
    from app.extensions import db
    from models import Consultation

    with app.app_context():
        c = db.session.execute(select(Consultation)).scalar_one()
        assert c.patient_id == world.other_patient and c.status == "requested"
        assert sorted(d.original_name for d in c.documents) == [
            "image.jpg",
            "Заключение, стр. 1.pdf",
            "Заключение, стр. 2.png",
        ]
        assert {d.document_type_id for d in c.documents if d.original_name == "image.jpg"} == {
            types["ecg"]
        }
    # The same form sent again (a second tap): the first application, no second copy of files.
    after = counts(app)
    again = send(
        client,
        world,
        form(
            world,
            form_token=token,
            **{f"photo-{types['ecg']}": (io.BytesIO(make_image("JPEG")), "image.jpg")},
        ),
    )
    assert again.status_code == 302 and again.headers["Location"].endswith(str(c.public_id))
    assert counts(app) == after


def test_a_bad_file_is_named_and_the_good_ones_and_the_text_kept(app, world, types) -> None:
    client = signed_in(app, world, "other_patient")
    before = counts(app)
    response = send(
        client,
        world,
        form(
            world,
            **{
                f"files-{types['ecg']}": [
                    (io.BytesIO(make_image("PNG")), "ЭКГ-лента.png"),
                    (io.BytesIO(b"<html>not a pdf</html>"), "фото.pdf"),
                ],
                f"files-{types['conclusion']}": (
                    io.BytesIO(make_pdf()),
                    "Заключение кардиолога.pdf",
                ),
                "files-999999": (io.BytesIO(make_pdf()), "без типа.pdf"),
                "photo-abc": (io.BytesIO(make_pdf()), "не поле.pdf"),
            },
        ),
    )
    page = text(response)
    assert response.status_code == 400
    assert (
        "Файл «фото.pdf» не добавлен: Можно загружать только файлы PDF, JPEG, PNG и DICOM." in page
    )
    assert "Файл «без типа.pdf» не добавлен: Выберите тип документа." in page
    assert COMPLAINTS in page
    # Nothing sent while a file was refused; the good ones are kept and ticked.
    assert counts(app) == (before[0], before[1] + 2)
    for doc in documents_named(app, "ЭКГ-лента.png", "Заключение кардиолога.pdf"):
        assert re.search(rf'value="{doc.public_id}"[^>]*checked', page)
    assert documents_named(app, "фото.pdf", "без типа.pdf", "не поле.pdf") == []


def test_another_patients_documents_cannot_be_ticked(app, world: World) -> None:
    client = signed_in(app, world, "other_patient")
    before = counts(app)
    response = send(
        client, world, form(world, documents=[str(world.ecg), str(world.conclusion_doc)])
    )
    assert response.status_code == 400
    assert "Приложить можно только свои документы." in text(response)
    assert counts(app) == before


def test_several_files_at_once_on_the_consultations_page(app, world: World, types) -> None:
    """«Добавить документы» from a card leads to the consultation's form, which takes several
    files at once too (all stored with the consultation, or none)."""
    from tests.consultation_world import make_consultation

    public_id = make_consultation(app, world, status="needs_documents")
    client = signed_in(app, world, "patient")
    url = f"/cabinet/consultations/{public_id}"
    page = text(client.get(url))
    assert re.search(r'<input[^>]*id="file"[^>]*multiple', page)
    response = post(
        client,
        url,
        f"{url}/documents",
        {
            "file": [
                (io.BytesIO(make_pdf()), "Выписка, стр. 1.pdf"),
                (io.BytesIO(make_image("PNG")), "Выписка, стр. 2.png"),
            ],
            "file_type": str(types["conclusion"]),
        },
        content_type="multipart/form-data",
    )
    assert response.status_code == 302
    from app.extensions import db
    from models import Consultation

    with app.app_context():
        c = db.session.execute(
            select(Consultation).where(Consultation.public_id == public_id)
        ).scalar_one()
        names = {d.original_name for d in c.documents}
        assert {"Выписка, стр. 1.pdf", "Выписка, стр. 2.png"} <= names
        assert c.status == "requested"
