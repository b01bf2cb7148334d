"""Row scope of the staff screens: patients and consultations each role sees (audited, counted),
the screens refused to patients, anonymous users and doctors, FAB's unscoped routes gone, and
a list's query count that does not grow with its rows."""

from __future__ import annotations

import re

import pytest
from flask.testing import FlaskClient
from sqlalchemy import event, select

from tests.conftest import csrf_token, patient_username
from tests.staff_support import doctor_username as _doctor_username
from tests.staff_support import make_consultation as _make_consultation
from tests.staff_support import signed_in as _signed_in
from tests.staff_support import text as _text

# --------------------------------------------------------------------------------------------
# scoped lists
# --------------------------------------------------------------------------------------------


@pytest.fixture
def care_world(app, make_center, make_doctor, make_patient):
    """Centre A with a doctor; patients reaching the doctor by centre, personally, or not."""
    center_a, center_b = make_center(), make_center()
    doctor = make_doctor(center_id=center_a)
    duty = make_doctor(is_duty=True)
    by_centre = make_patient(surname="Центрова")
    personal = make_patient(surname="Личная")
    elsewhere = make_patient(surname="Чужая")
    lonely = make_patient(surname="Безконсультаций")
    at_duty = make_patient(surname="Дежурная")
    ids = {
        "by_centre": _make_consultation(app, patient_id=by_centre, center_id=center_a),
        "personal": _make_consultation(
            app, patient_id=personal, center_id=center_b, doctor_id=doctor
        ),
        "elsewhere": _make_consultation(app, patient_id=elsewhere, center_id=center_b),
        "at_duty": _make_consultation(
            app, patient_id=at_duty, doctor_id=duty, kind="duty", status="scheduled"
        ),
    }
    return {
        "doctor": doctor,
        "duty": duty,
        "consultations": ids,
        "patients": {
            "by_centre": by_centre,
            "personal": personal,
            "elsewhere": elsewhere,
            "lonely": lonely,
            "at_duty": at_duty,
        },
    }


def test_doctor_sees_patients_of_own_centre_and_own_consultations(app, care_world):
    client = _signed_in(app, _doctor_username(app, care_world["doctor"]))
    html = _text(client.get("/staff/patients/list/"))
    assert "Центрова" in html and "Личная" in html
    for hidden in ("Чужая", "Безконсультаций", "Дежурная"):
        assert hidden not in html
    patients = care_world["patients"]
    assert client.get(f"/staff/patients/show/{patients['by_centre']}").status_code == 200
    assert client.get(f"/staff/patients/show/{patients['elsewhere']}").status_code == 404
    assert client.get(f"/staff/patients/show/{patients['lonely']}").status_code == 404
    # Read-only screen.
    assert client.get(f"/staff/patients/edit/{patients['by_centre']}").status_code == 403


def test_opening_a_patient_card_is_audited(app, care_world):
    from app.extensions import db
    from models import AuditEvent

    client = _signed_in(app, _doctor_username(app, care_world["doctor"]))
    patients = care_world["patients"]
    assert client.get(f"/staff/patients/show/{patients['by_centre']}").status_code == 200
    assert client.get(f"/staff/patients/show/{patients['elsewhere']}").status_code == 404
    with app.app_context():
        events = (
            db.session.execute(select(AuditEvent).where(AuditEvent.action == "patient.view"))
            .scalars()
            .all()
        )
        assert [e.patient_id for e in events] == [patients["by_centre"]]


def test_manager_sees_every_patient(app, care_world, make_staff):
    client = _signed_in(app, make_staff("Manager"))
    html = _text(client.get("/staff/patients/list/"))
    for surname in ("Центрова", "Личная", "Чужая", "Безконсультаций", "Дежурная"):
        assert surname in html


def test_record_count_is_capped(app, care_world, make_staff, monkeypatch):
    """The total stops counting at the cap (constant cost per page); pages still work."""
    import views.common

    client = _signed_in(app, make_staff("Manager"))
    monkeypatch.setattr(views.common, "COUNT_CAP", 3)
    html = _text(client.get("/staff/patients/list/"))
    assert re.search(r"Количество записей:</strong>\s*3\+", html), html
    monkeypatch.setattr(views.common, "COUNT_CAP", 1000)
    html = _text(client.get("/staff/patients/list/"))
    assert re.search(r"Количество записей:</strong>\s*5\b", html)


def test_consultation_scope_per_role(app, care_world, make_staff):
    c = care_world["consultations"]

    def visible(client) -> set[str]:
        html = _text(client.get("/staff/consultations/list/"))
        shown = set(map(int, re.findall(r"/staff/consultations/show/(\d+)", html)))
        return {name for name, pk in c.items() if pk in shown}

    doctor = _signed_in(app, _doctor_username(app, care_world["doctor"]))
    assert visible(doctor) == {"by_centre", "personal"}
    assert doctor.get(f"/staff/consultations/show/{c['elsewhere']}").status_code == 404
    assert doctor.get(f"/staff/consultations/show/{c['by_centre']}").status_code == 200

    duty = _signed_in(app, _doctor_username(app, care_world["duty"]))
    assert visible(duty) == {"at_duty"}
    assert duty.get(f"/staff/consultations/show/{c['personal']}").status_code == 404
    html = _text(duty.get("/staff/patients/list/"))
    assert "Дежурная" in html and "Центрова" not in html

    manager = _signed_in(app, make_staff("Manager"))
    assert visible(manager) == set(c)
    assert "Заявка в центр" in _text(manager.get("/staff/consultations/list/"))


def test_outbox_for_manager_only(app, make_staff, care_world):
    from app.extensions import db
    from models import OutboundMessage

    with app.app_context():
        db.session.add(OutboundMessage(channel="sms", recipient="+79120000000", body="Код 1234"))
        db.session.commit()
    manager = _signed_in(app, make_staff("Manager"))
    html = _text(manager.get("/outbox/list/"))
    assert "+79120000000" in html and "В очереди" in html
    doctor = _signed_in(app, _doctor_username(app, care_world["doctor"]))
    assert doctor.get("/outbox/list/").status_code == 403


# --------------------------------------------------------------------------------------------
# access refused
# --------------------------------------------------------------------------------------------


STAFF_SCREENS = [
    "/staff/patients/list/",
    "/staff/consultations/list/",
    "/duty-shifts/list/",
    "/duty-shifts/add",
    "/slots/list/",
    "/centres/list/",
    "/centres/add",
    "/diseases/list/",
    "/document-types/list/",
    "/doctors/list/",
    "/doctors/add",
    "/outbox/list/",
]


@pytest.mark.parametrize("path", STAFF_SCREENS)
def test_patient_is_refused_on_staff_screens(app, make_patient, path):
    client = _signed_in(app, patient_username(app, make_patient()))
    # FAB answers 403 to a signed-in user without the permission.
    assert client.get(path).status_code == 403


@pytest.mark.parametrize("path", STAFF_SCREENS)
def test_anonymous_is_sent_to_login(client, path):
    response = client.get(path)
    assert response.status_code == 302
    assert "/login" in response.headers["Location"]


def test_doctor_cannot_manage_reference_or_staff(app, care_world):
    client = _signed_in(app, _doctor_username(app, care_world["doctor"]))
    assert client.get("/diseases/list/").status_code == 200  # read the catalogue
    for path in (
        "/diseases/add",
        "/centres/list/",
        "/doctors/list/",
        "/duty-shifts/list/",
        "/slots/list/",
    ):
        assert client.get(path).status_code == 403, path


def test_unscoped_fab_routes_are_gone(app, make_staff, care_world):
    """FAB's actions and downloads skip base_filters: they are not routed at all."""
    client = _signed_in(app, make_staff("Manager"))
    token = csrf_token(client, "/staff/patients/list/")
    patient = care_world["patients"]["elsewhere"]
    assert (
        client.post(
            "/staff/patients/action_post",
            data={"action": "muldelete", "rowid": [patient], "csrf_token": token},
        ).status_code
        == 404
    )
    assert (
        client.post(
            f"/staff/patients/action/muldelete/{patient}", data={"csrf_token": token}
        ).status_code
        == 404
    )
    assert client.get("/staff/patients/download/x.pdf").status_code == 404
    assert (
        client.post(
            f"/doctors/delete/{care_world['doctor']}", data={"csrf_token": token}
        ).status_code
        == 403
    )


# --------------------------------------------------------------------------------------------
# performance
# --------------------------------------------------------------------------------------------


def _queries_for(app, client: FlaskClient, path: str) -> int:
    from app.extensions import db

    statements: list[str] = []

    def count(conn, cursor, statement, *args):
        statements.append(statement)

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        assert client.get(path).status_code == 200
    finally:
        event.remove(engine, "before_cursor_execute", count)
    return len(statements)


@pytest.mark.parametrize("path", ["/staff/patients/list/", "/staff/consultations/list/"])
def test_list_query_count_does_not_grow_with_rows(
    app, make_center, make_doctor, make_patient, path
):
    center = make_center()
    doctor = make_doctor(center_id=center)
    client = _signed_in(app, _doctor_username(app, doctor))

    def add_patients(n: int) -> None:
        for _ in range(n):
            _make_consultation(app, patient_id=make_patient(), center_id=center, doctor_id=doctor)

    add_patients(5)
    small = _queries_for(app, client, path)
    add_patients(45)
    large = _queries_for(app, client, path)
    assert small == large
