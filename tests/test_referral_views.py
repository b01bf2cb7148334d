"""«Импорт направлений» screens: the manager's flow end to end, and nobody else gets in."""

from __future__ import annotations

import io
import uuid

import pytest
from sqlalchemy import func, select

from tests.conftest import csrf_token, login, patient_username
from tests.referral_tables import CENTRE, invitation, row, xlsx

pytest_plugins: list[str] = []


@pytest.fixture
def catalogue(app):
    from app.catalogue import load_catalogue
    from app.extensions import db
    from models import Disease, MedicalCenter

    with app.app_context():
        load_catalogue()
        centre = MedicalCenter(name=CENTRE, profile="cardiology", region="Москва")
        db.session.add(centre)
        for d in db.session.execute(select(Disease)).scalars():
            d.centers.append(centre)
        db.session.commit()
        return centre.id


def _signed_in(app, username):
    client = app.test_client()
    response = login(client, username)
    assert response.status_code == 302 and "/login" not in response.headers["Location"]
    return client


def _upload(client, data: bytes, filename: str):
    token = csrf_token(client, "/referrals/")
    return client.post(
        "/referrals/upload",
        data={"csrf_token": token, "file": (io.BytesIO(data), filename)},
        content_type="multipart/form-data",
    )


def _count(app, model):
    from app.extensions import db

    with app.app_context():
        return db.session.execute(select(func.count()).select_from(model)).scalar()


def _import_public_id(app):
    from app.extensions import db
    from models import ReferralImport

    with app.app_context():
        return (
            db.session.execute(select(ReferralImport.public_id).order_by(ReferralImport.id.desc()))
            .scalars()
            .first()
        )


def test_manager_flow(app, catalogue, make_staff):
    from models import Consultation, OutboundMessage, Patient

    client = _signed_in(app, make_staff("Manager"))
    page = client.get("/referrals/")
    assert page.status_code == 200 and "Импорт направлений" in page.get_data(as_text=True)
    menu = client.get("/").get_data(as_text=True)
    assert "/referrals/" in menu

    template = client.get("/referrals/template.xlsx")
    assert template.status_code == 200
    assert "attachment" in template.headers["Content-Disposition"]
    assert template.data.startswith(b"PK")

    data = xlsx(
        [
            row(),
            row(name="Петрова Ольга", phone="+79123450002"),
            row(name="Сидоров Иван", sex="м", phone="+79123450003"),
            row(phone="12"),
        ]
    )
    response = _upload(client, data, "направления.xlsx")
    assert response.status_code == 302
    public_id = _import_public_id(app)
    assert response.headers["Location"].endswith(f"/referrals/{public_id}")
    html = client.get(f"/referrals/{public_id}").get_data(as_text=True)
    assert "Строка 5, «телефон»" in html
    assert "Подтвердить и импортировать" in html
    assert _count(app, Patient) == 0 and _count(app, OutboundMessage) == 0

    progress = client.get(f"/referrals/{public_id}/progress").get_json()
    assert progress["status"] == "validated" and progress["valid_rows"] == 3

    token = csrf_token(client, f"/referrals/{public_id}")
    confirmed = client.post(f"/referrals/{public_id}/confirm", data={"csrf_token": token})
    assert confirmed.status_code == 302
    progress = client.get(f"/referrals/{public_id}/progress").get_json()  # immediate Huey
    assert progress["done"] and progress["percent"] == 100 and progress["imported_rows"] == 3
    assert _count(app, Patient) == 3 and _count(app, Consultation) == 3
    assert _count(app, OutboundMessage) == 3

    # The same file again: a preview that matches everyone, and no second SMS on confirm.
    _upload(client, data, "направления.xlsx")
    second = _import_public_id(app)
    token = csrf_token(client, f"/referrals/{second}")
    client.post(f"/referrals/{second}/confirm", data={"csrf_token": token})
    assert _count(app, Patient) == 3 and _count(app, OutboundMessage) == 3
    assert _count(app, Consultation) == 3

    html = client.get(f"/referrals/{public_id}").get_data(as_text=True)
    assert "Приглашён" in html and "Отправить пароль заново" in html
    export = client.get(f"/referrals/{public_id}/export.xlsx")
    assert export.status_code == 200 and export.data.startswith(b"PK")

    # Resend: a new SMS, the old password stops working.
    from app.extensions import db

    with app.app_context():
        patient = db.session.execute(
            select(Patient).where(Patient.phone == "+79123450001")
        ).scalar_one()
        old = db.session.execute(
            select(OutboundMessage.body).where(OutboundMessage.recipient == patient.phone)
        ).scalar_one()
        patient_public_id = patient.public_id
    old_password = invitation(old)["password"]
    token = csrf_token(client, f"/referrals/{public_id}")
    resent = client.post(
        f"/referrals/resend/{patient_public_id}",
        data={"csrf_token": token, "back": str(public_id)},
    )
    assert resent.status_code == 302 and str(public_id) in resent.headers["Location"]
    assert _count(app, OutboundMessage) == 4
    from werkzeug.security import check_password_hash

    with app.app_context():
        user = db.session.get(Patient, patient.id).user
        assert not check_password_hash(user.password, old_password)
        new = db.session.execute(
            select(OutboundMessage.body).order_by(OutboundMessage.id.desc()).limit(1)
        ).scalar_one()
        assert check_password_hash(user.password, invitation(new)["password"])


@pytest.mark.parametrize(
    "data,filename,expected",
    [
        (b"", "empty.csv", "Файл пуст"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00", "photo.xlsx", "не таблица"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 64, "old.xls", ".xls"),
    ],
)
def test_bad_files_are_refused_with_a_message(app, catalogue, make_staff, data, filename, expected):
    from models import ReferralImport

    client = _signed_in(app, make_staff("Manager"))
    response = _upload(client, data, filename)
    assert response.status_code == 302 and response.headers["Location"].endswith("/referrals/")
    assert expected in client.get("/referrals/").get_data(as_text=True)
    assert _count(app, ReferralImport) == 0


def test_a_file_over_the_size_limit_is_refused(app, catalogue, make_staff):
    from models import ReferralImport

    client = _signed_in(app, make_staff("Manager"))
    app.config["REFERRAL_MAX_BYTES"] = 600 * 1024
    try:  # bigger than werkzeug keeps in memory: the upload is spooled to a file on disk
        response = _upload(client, b"PK\x03\x04" + b"\x00" * (700 * 1024), "big.xlsx")
    finally:
        app.config.pop("REFERRAL_MAX_BYTES")
    assert response.status_code == 302 and response.headers["Location"].endswith("/referrals/")
    assert "Файл слишком большой" in client.get("/referrals/").get_data(as_text=True)
    assert _count(app, ReferralImport) == 0


def _routes(public_id, patient_public_id):
    return [
        ("get", "/referrals/"),
        ("get", "/referrals/template.xlsx"),
        ("post", "/referrals/upload"),
        ("get", f"/referrals/{public_id}"),
        ("get", f"/referrals/{public_id}/progress"),
        ("post", f"/referrals/{public_id}/confirm"),
        ("get", f"/referrals/{public_id}/export.xlsx"),
        ("post", f"/referrals/resend/{patient_public_id}"),
    ]


def test_nobody_but_managers_gets_in(app, catalogue, make_staff, make_patient, make_doctor):
    from models import OutboundMessage, ReferralImport

    manager = _signed_in(app, make_staff("Manager"))
    _upload(manager, xlsx([row()]), "t.xlsx")
    public_id = _import_public_id(app)
    token = csrf_token(manager, f"/referrals/{public_id}")
    manager.post(f"/referrals/{public_id}/confirm", data={"csrf_token": token})
    from app.extensions import db
    from models import Patient

    with app.app_context():
        referral_patient = db.session.execute(select(Patient)).scalar_one()
        patient_public_id, referral_patient_id = referral_patient.public_id, referral_patient.id
    sms_before = _count(app, OutboundMessage)

    patient_id = make_patient()
    personas = {
        "anonymous": app.test_client(),
        "patient": _signed_in(app, patient_username(app, patient_id)),
        "referral patient's own": None,
        "doctor": None,
        "duty doctor": None,
    }
    from models import Doctor

    doc_id, duty_id = make_doctor(center_id=catalogue), make_doctor(is_duty=True)
    with app.app_context():
        doc = db.session.get(Doctor, doc_id).user.username
        duty = db.session.get(Doctor, duty_id).user.username
    personas["doctor"] = _signed_in(app, doc)
    personas["duty doctor"] = _signed_in(app, duty)
    del personas["referral patient's own"]
    for name, client in personas.items():
        token = csrf_token(client, "/login/" if name == "anonymous" else "/account/password/")
        for method, path in _routes(public_id, patient_public_id):
            if method == "get":
                response = client.get(path)
            else:
                response = client.post(
                    path,
                    data={"csrf_token": token, "file": (io.BytesIO(xlsx([row()])), "t.xlsx")},
                    content_type="multipart/form-data",
                )
            assert response.status_code in (302, 401, 403, 404), (name, path)
            if response.status_code == 302:
                location = response.headers["Location"]
                assert "/login" in location or "/referrals" not in location, (name, path)
            body = response.get_data()
            assert b"PK" != body[:2], (name, path)
            assert b"imported_rows" not in body, (name, path)
    assert _count(app, ReferralImport) == 1
    assert _count(app, OutboundMessage) == sms_before
    assert referral_patient_id


def test_unknown_import_is_404(app, make_staff):
    client = _signed_in(app, make_staff("Manager"))
    assert client.get(f"/referrals/{uuid.uuid4()}").status_code == 404
    assert client.get(f"/referrals/{uuid.uuid4()}/progress").status_code == 404
