"""Medical documents, who sees them: other patients, doctors by centre or consultation,
managers, admins and anonymous visitors (row scope, 404s audited), and the JSON API."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select

from tests.conftest import csrf_token, login, patient_username
from tests.document_support import (
    LIST,
    UPLOAD,
    audit_events,
    consultation,
    doctor_username,
    document_types,
    documents_of,
    signed_in_patient,
    store,
)

pytestmark = pytest.mark.usefixtures("empty_storage")  # no document files left by earlier tests


@pytest.fixture
def types(app):
    return document_types(app)


@pytest.fixture
def patient_client(app, client, make_patient):
    return signed_in_patient(app, client, make_patient())


# ---------------------------------------------------------------------------------------------
# Scope: other patients, doctors, managers, anonymous
# ---------------------------------------------------------------------------------------------


def test_other_patient_gets_404(app, patient_client, make_patient, types):
    other_id = make_patient()
    foreign = store(app, other_id, types["lab"], "png", "чужой.png")
    html = patient_client.get(LIST).get_data(as_text=True)
    assert "чужой.png" not in html
    for path in ("/", "/inline", "/download"):
        assert patient_client.get(f"/cabinet/documents/{foreign}{path}").status_code == 404
    response = patient_client.post(
        f"/cabinet/documents/{foreign}/delete",
        data={"csrf_token": csrf_token(patient_client, UPLOAD)},
    )
    assert response.status_code == 404
    assert len(documents_of(app, other_id)) == 1
    denied = [e for e in audit_events(app) if e[3] == "denied"]
    assert len(denied) == 4
    assert {e[1] for e in denied} == {str(foreign)}
    assert {e[2] for e in denied} == {other_id}
    # An id that does not exist at all is a plain 404 too.
    assert patient_client.get(f"/cabinet/documents/{uuid.uuid4()}/download").status_code == 404
    assert patient_client.get("/cabinet/documents/12/download").status_code == 404


def test_patient_sees_no_staff_screen(app, patient_client, types):
    public_id = store(app, patient_client.patient_id, types["lab"], "png")
    assert patient_client.get("/staff/documents/").status_code == 403
    assert patient_client.get(f"/staff/documents/{public_id}/download").status_code == 403


def test_doctor_without_relation_gets_404(
    app, client, make_patient, make_doctor, make_center, types
):
    patient_id = make_patient()
    public_id = store(app, patient_id, types["lab"], "png", "анализ.png")
    other_center = make_center()
    consultation(app, patient_id, center_id=make_center())  # another centre
    doctor_id = make_doctor(center_id=other_center)
    login(client, doctor_username(app, doctor_id))
    assert "анализ.png" not in client.get("/staff/documents/").get_data(as_text=True)
    for path in ("/", "/inline", "/download"):
        assert client.get(f"/staff/documents/{public_id}{path}").status_code == 404
    assert [e[3] for e in audit_events(app) if e[0] != "document.upload"] == ["denied"] * 3


def test_doctor_of_the_centre_sees_documents(
    app, client, make_patient, make_doctor, make_center, types
):
    patient_id = make_patient(surname="Кардиова")
    public_id = store(app, patient_id, types["ecg"], "png", "экг.png")
    center_id = make_center()
    consultation(app, patient_id, center_id=center_id, kind="centre_request", status="requested")
    doctor_id = make_doctor(center_id=center_id)
    login(client, doctor_username(app, doctor_id))

    html = client.get("/staff/documents/").get_data(as_text=True)
    assert "экг.png" in html and "Кардиова" in html
    show = client.get(f"/staff/documents/{public_id}/").get_data(as_text=True)
    assert f'src="/staff/documents/{public_id}/inline"' in show
    download = client.get(f"/staff/documents/{public_id}/download")
    assert download.status_code == 200
    assert download.headers["Content-Disposition"].startswith("attachment;")
    assert download.headers["Cache-Control"] == "no-store"
    assert client.get(f"/staff/documents/{public_id}/inline").status_code == 200
    actor = audit_events(app, "document.download")[0]
    assert actor[2] == patient_id and actor[3] == "ok"


def test_doctor_of_the_consultation_sees_documents(app, client, make_patient, make_doctor, types):
    patient_id = make_patient()
    public_id = store(app, patient_id, types["ecg"], "png")
    duty_id = make_doctor(is_duty=True)
    consultation(app, patient_id, doctor_id=duty_id, kind="duty", status="scheduled")
    login(client, doctor_username(app, duty_id))
    assert client.get(f"/staff/documents/{public_id}/download").status_code == 200


def test_manager_has_no_access_to_documents(app, client, make_patient, make_staff, types):
    patient_id = make_patient()
    public_id = store(app, patient_id, types["ecg"], "png")
    login(client, make_staff("Manager"))
    assert client.get("/staff/documents/").status_code == 403
    assert client.get(f"/staff/documents/{public_id}/download").status_code == 403
    assert client.get(f"/cabinet/documents/{public_id}/download").status_code == 403


def test_admin_sees_every_document(app, client, make_patient, make_staff, types):
    public_id = store(app, make_patient(), types["ecg"], "png")
    login(client, make_staff("Admin"))
    assert client.get(f"/staff/documents/{public_id}/download").status_code == 200


def test_anonymous_is_sent_to_login(app, client, make_patient, types):
    public_id = store(app, make_patient(), types["ecg"], "png")
    for path in (
        LIST,
        UPLOAD,
        f"/cabinet/documents/{public_id}/download",
        "/staff/documents/",
        f"/staff/documents/{public_id}/download",
    ):
        response = client.get(path)
        assert response.status_code == 302, path
        assert "/login" in response.headers["Location"]
    assert client.get("/api/v1/my/documents/").status_code == 401


def test_scope_conditions(app, make_patient, make_doctor, make_center, make_staff):
    from app.access import staff_patient_condition
    from app.extensions import db
    from models import OblakoUser, Patient

    center_id = make_center()
    mine, other = make_patient(), make_patient()
    consultation(app, mine, center_id=center_id)
    doctor_id = make_doctor(center_id=center_id)
    manager = make_staff("Manager")

    def visible(username: str) -> set[int]:
        with app.app_context():
            user = db.session.execute(
                select(OblakoUser).where(OblakoUser.username == username)
            ).scalar_one()
            return set(
                db.session.execute(
                    select(Patient.id).where(staff_patient_condition(user))
                ).scalars()
            )

    assert visible(doctor_username(app, doctor_id)) == {mine}
    assert visible(manager) == {mine, other}
    assert visible(patient_username(app, mine)) == set()


def test_staff_list_for_a_patient_out_of_scope_is_404(
    app, client, make_patient, make_doctor, make_center, types
):
    from app.extensions import db
    from models import Patient

    center_id = make_center()
    mine, other = make_patient(surname="Своя"), make_patient(surname="Чужая")
    consultation(app, mine, center_id=center_id)
    store(app, mine, types["lab"], "png", "свой.png")
    store(app, other, types["lab"], "png", "чужой.png")
    with app.app_context():
        mine_uuid = db.session.get(Patient, mine).public_id
        other_uuid = db.session.get(Patient, other).public_id
    login(client, doctor_username(app, make_doctor(center_id=center_id)))
    html = client.get(f"/staff/documents/?patient={mine_uuid}").get_data(as_text=True)
    assert "свой.png" in html and "чужой.png" not in html
    assert client.get(f"/staff/documents/?patient={other_uuid}").status_code == 404
    assert "Документы пациентов" in client.get("/staff/documents/").get_data(as_text=True)


# ---------------------------------------------------------------------------------------------
# JSON API
# ---------------------------------------------------------------------------------------------


def test_api_lists_own_documents(app, patient_client, make_patient, types):
    own = store(app, patient_client.patient_id, types["ecg"], "png")
    store(app, make_patient(), types["ecg"], "png")
    response = patient_client.get("/api/v1/my/documents/")
    assert response.status_code == 200
    body = response.get_json()
    assert body["count"] == 1
    [item] = body["result"]
    assert item["id"] == str(own)
    assert item["type"] == "ecg"
    [doc] = documents_of(app, patient_client.patient_id)
    assert (item["sha256"], item["size"]) == (doc["sha256"], doc["size"])
    assert response.headers["Cache-Control"] == "no-store"


def test_api_with_jwt_and_refused_for_staff(app, client, make_patient, make_doctor, types):
    from flask_jwt_extended import create_access_token

    from app.extensions import db
    from models import Patient

    patient_id = make_patient()
    store(app, patient_id, types["ecg"], "png")
    with app.app_context():
        user_id = db.session.get(Patient, patient_id).user_id
        token = create_access_token(identity=str(user_id), fresh=True)
    response = client.get("/api/v1/my/documents/", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    assert response.get_json()["count"] == 1

    doctor_client = app.test_client()
    login(doctor_client, doctor_username(app, make_doctor()))
    assert doctor_client.get("/api/v1/my/documents/").status_code == 403
