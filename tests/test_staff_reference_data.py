"""Staff reference data through the CRUD screens: the navbar menu (per role and language), medical
centres, the disease catalogue with its required documents, document types."""

from __future__ import annotations

from sqlalchemy import select

from tests.conftest import TEST_PASSWORD
from tests.staff_support import count as _count
from tests.staff_support import post_form as _post_form
from tests.staff_support import signed_in as _signed_in
from tests.staff_support import text as _text


def test_manager_menu_is_russian(app, make_staff):
    client = _signed_in(app, make_staff("Manager"))
    html = _text(client.get("/centres/list/"))
    for label in (
        "Пациенты",
        "Консультации",
        "Дежурства",
        "Слоты записи",
        "Медицинские центры",
        "Перечень заболеваний",
        "Типы документов",
        "Врачи",
        "Исходящие сообщения",
    ):
        assert label in html, label


def test_menu_is_per_role_and_language_and_a_made_role_is_read_live(app, make_staff):
    """The navbar menu is rendered once per role set and language (views/account.py): each role
    still gets its own, each language its own, and a role made on the Roles screen (permissions
    in the database) sees an edit of its permissions on the next page."""
    from app.accounts import create_user
    from app.extensions import db

    manager, doctor = _signed_in(app, make_staff("Manager")), _signed_in(app, make_staff("Doctor"))
    for _ in range(2):  # the second page comes from the cache
        assert 'href="/outbox/list/"' in _text(manager.get("/notifications/"))
        assert 'href="/outbox/list/"' not in _text(doctor.get("/notifications/"))
    assert "Исходящие сообщения" in _text(manager.get("/notifications/"))
    manager.get("/lang/en")
    assert "Outbound messages" in _text(manager.get("/notifications/"))

    sm = app.appbuilder.sm
    with app.app_context():
        role = sm.add_role("Регистратура")
        sm.add_permission_role(role, sm.add_permission_view_menu("menu_access", "Outbox"))
        create_user(
            username="desk1",
            password=TEST_PASSWORD,
            role_names=["Регистратура"],
            first_name="Регистратор",
            last_name="Первый",
            email="desk1@example.org",
        )
        db.session.commit()
    desk = _signed_in(app, "desk1")
    assert 'href="/outbox/list/"' in _text(desk.get("/no-such-page/"))
    with app.app_context():
        role = sm.find_role("Регистратура")
        sm.del_permission_role(role, sm.find_permission_view_menu("menu_access", "Outbox"))
        db.session.commit()
    assert 'href="/outbox/list/"' not in _text(desk.get("/no-such-page/"))


def test_manager_creates_centre(app, make_staff):
    from models import MedicalCenter

    client = _signed_in(app, make_staff("Manager"))
    response = _post_form(
        client,
        "/centres/add",
        {
            "name": "Центр нефрологии",
            "profile": "nephrology",
            "region": "Казань",
            "description": "Консультации нефролога",
            "active": "y",
        },
    )
    assert response.status_code == 302
    assert _count(app, MedicalCenter, MedicalCenter.name == "Центр нефрологии") == 1
    html = _text(client.get("/centres/list/"))
    assert "Центр нефрологии" in html
    assert "Название" in html  # the column label, translated


def test_manager_creates_disease_with_required_documents(app, make_staff, make_center):
    from app.extensions import db
    from models import Disease, DocumentType

    center_id = make_center()
    with app.app_context():
        types = [
            DocumentType(code="ecg", name="ЭКГ"),
            DocumentType(code="lab", name="Анализы"),
            DocumentType(code="mri", name="МРТ"),
        ]
        db.session.add_all(types)
        db.session.commit()
        ecg, lab = types[0].id, types[1].id

    client = _signed_in(app, make_staff("Manager"))
    response = _post_form(
        client,
        "/diseases/add",
        {
            "icd10_code": "I10",
            "name": "Гипертензия",
            "profile": "cardiology",
            "active": "y",
            "required_document_types": [str(ecg), str(lab)],
            "centers": [str(center_id)],
        },
    )
    assert response.status_code == 302
    with app.app_context():
        disease = db.session.execute(
            select(Disease).where(Disease.icd10_code == "I10")
        ).scalar_one()
        assert sorted(t.code for t in disease.required_document_types) == ["ecg", "lab"]
        assert [c.id for c in disease.centers] == [center_id]
        disease_id = disease.id
    html = _text(client.get(f"/diseases/show/{disease_id}"))
    assert "Необходимые документы" in html and "ЭКГ" in html and "МРТ" not in html


def test_manager_creates_document_type(app, make_staff):
    from models import DocumentType

    client = _signed_in(app, make_staff("Manager"))
    response = _post_form(
        client,
        "/document-types/add",
        {
            "code": "xray",
            "name": "Рентген",
            "name_en": "X-ray",
            "sort_order": "9",
        },
    )
    assert response.status_code == 302
    assert _count(app, DocumentType, DocumentType.code == "xray") == 1
