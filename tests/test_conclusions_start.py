"""Starting a consultation: by its doctor, a colleague of the centre or the duty doctor, not too
early, only when scheduled, once; refused to other doctors, patients, managers, anonymous."""

from __future__ import annotations

import uuid

import pytest

from tests.conclusion_support import (
    as_user,
    audit_actions,
    build_world,
    conclusions,
    consultation_row,
    doctor_client,
    flashed,
    form_url,
    issue,
    make_consultation,
    notifications_of,
    patient_client,
    post,
    start,
    start_url,
)


@pytest.fixture
def world(app, make_patient, make_center, make_doctor, make_staff):
    return build_world(app, make_patient, make_center, make_doctor, make_staff)


def test_assigned_doctor_starts_and_the_patient_is_told(app, world):
    cid = world["consultation"]
    client, response = start(app, cid)
    assert response.status_code == 302
    assert "Консультация началась, пациент уведомлён." in flashed(client)
    row = consultation_row(app, cid)
    assert row.status == "in_progress" and row.started_at is not None
    texts = notifications_of(app, world["p"])
    assert any("Консультация началась" in t for t in texts)
    [event] = audit_actions(app, "consultation.start")
    assert event.object_id == cid and event.outcome == "ok"


def test_centre_doctor_takes_an_unassigned_consultation(app, world):
    from app.extensions import db
    from models import Doctor

    cid = make_consultation(app, world, doctor=None)
    _, response = start(app, cid, "doc_d2")
    assert response.status_code == 302
    row = consultation_row(app, cid)
    assert row.status == "in_progress"
    with app.app_context():
        assert row.doctor_id == world["d2"] == db.session.get(Doctor, world["d2"]).id


def test_duty_doctor_starts_and_concludes_own_booking(app, world):
    cid = make_consultation(app, world, doctor=world["duty"])
    client, response = start(app, cid, "doc_duty")
    assert response.status_code == 302
    assert consultation_row(app, cid).status == "in_progress"
    response = issue(client, cid)
    assert response.status_code == 302
    assert consultation_row(app, cid).status == "completed"
    assert [c.version for c in conclusions(app, cid)] == [1]


def test_too_early_is_refused_with_the_time(app, world):
    cid = make_consultation(app, world, doctor=world["d1"], minutes=60)
    client, _ = start(app, cid)
    assert "Слишком рано" in flashed(client)
    assert consultation_row(app, cid).status == "scheduled"
    # Fifteen minutes before is allowed.
    cid = make_consultation(app, world, doctor=world["d1"], minutes=14)
    start(app, cid)
    assert consultation_row(app, cid).status == "in_progress"


@pytest.mark.parametrize(
    ("status", "message"),
    [
        ("in_progress", "Консультация уже началась."),
        ("completed", "Консультация уже завершена."),
        ("cancelled", "Консультация отменена, её нельзя начать."),
        ("requested", "Начать можно только назначенную консультацию"),
        ("missed", "Консультация пропущена"),
    ],
)
def test_only_a_scheduled_consultation_starts(app, world, status, message):
    cid = make_consultation(app, world, doctor=world["d1"], status=status)
    client, response = start(app, cid)
    assert response.status_code == 302
    assert message in flashed(client)
    assert consultation_row(app, cid).status == status
    assert audit_actions(app, "consultation.start") == []


def test_starting_twice_keeps_the_first_start(app, world):
    cid = world["consultation"]
    client, _ = start(app, cid)
    first = consultation_row(app, cid).started_at
    post(client, start_url(cid))
    assert "Консультация уже началась." in flashed(client)
    assert consultation_row(app, cid).started_at == first
    assert len(notifications_of(app, world["p"])) == 1


def test_other_doctor_of_the_centre_cannot_start_anothers_consultation(app, world):
    client, _ = start(app, world["consultation"], "doc_d2")
    assert "Начать консультацию может только её врач." in flashed(client)
    assert consultation_row(app, world["consultation"]).status == "scheduled"


@pytest.mark.parametrize("who", ["doc_d3", "doc_duty"])
def test_doctor_outside_the_scope_gets_404(app, world, who):
    _, response = start(app, world["consultation"], who)
    assert response.status_code == 404
    assert doctor_client(app, who).get(form_url(world["consultation"])).status_code == 404
    assert consultation_row(app, world["consultation"]).status == "scheduled"


def test_patient_manager_and_anonymous_cannot_start(app, world):
    cid = world["consultation"]
    for client in (patient_client(app, world["p"]), as_user(app, "manager1")):
        assert post(client, start_url(cid)).status_code == 403
        assert client.get(form_url(cid)).status_code == 403
    anonymous = app.test_client()
    response = anonymous.get(form_url(cid))
    assert response.status_code == 302 and "/login/" in response.headers["Location"]
    assert consultation_row(app, cid).status == "scheduled"


def test_unknown_consultation_is_404(app, world):
    client = doctor_client(app)
    assert post(client, start_url(uuid.uuid4())).status_code == 404
    assert client.get(form_url(uuid.uuid4())).status_code == 404
    assert client.get("/care/consultations/not-a-uuid/conclusion").status_code == 404


def test_patient_cannot_start_or_issue_even_own(app, world):
    pc = patient_client(app, world["p"])
    assert post(pc, start_url(world["consultation"])).status_code == 403
    assert issue(pc, world["consultation"]).status_code == 403
    assert consultation_row(app, world["consultation"]).status == "scheduled"


def test_scheduled_consultation_page_offers_the_start(app, world):
    client = doctor_client(app)
    html = client.get(form_url(world["consultation"])).get_data(as_text=True)
    assert "Начать консультацию" in html
    assert "Сначала начните консультацию, затем выдайте заключение." in html
    assert "Выдать заключение</button>" not in html
    # The colleague sees the consultation but no start button: it is not theirs.
    other = doctor_client(app, "doc_d2").get(form_url(world["consultation"]))
    assert "Начать консультацию" not in other.get_data(as_text=True)
