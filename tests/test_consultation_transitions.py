"""The status machine of an application (app/consultations/): every transition by every actor
(allowed ones change the status, notify and audit; refused ones change nothing), and the details
of requesting documents, rejecting, cancelling and marking a consultation missed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.consultation_world import (
    ACTORS,
    audit_actions,
    load,
    make_consultation,
    notifications_of,
    tomorrow_at,
    user,
)

pytestmark = pytest.mark.usefixtures("empty_storage")


# ---------------------------------------------------------------------------------------------
# Every transition by every actor
# ---------------------------------------------------------------------------------------------


def _schedule(c, by):
    from app.consultations import schedule_consultation

    day, at = tomorrow_at(10)
    schedule_consultation(c, by=by, day=day, at=at, duration_minutes=30)


def _request_documents(c, by):
    from app.consultations import request_documents

    request_documents(c, by=by, message="Нужно свежее УЗИ сердца")


def _reject(c, by):
    from app.consultations import reject_consultation

    reject_consultation(c, by=by, reason="Не наш профиль")


def _cancel(c, by):
    from app.consultations import cancel_consultation

    cancel_consultation(c, by=by, reason="Передумала")


def _attach(world):
    def attach(c, by):
        from app.consultations import attach_documents

        attach_documents(c, by=by, document_ids=[world.conclusion_doc])

    return attach


# transition, starting status, resulting status, actors allowed
TRANSITIONS = [
    ("schedule", "requested", "scheduled", {"doctor_c1"}),
    ("request_documents", "requested", "needs_documents", {"doctor_c1"}),
    ("reject", "requested", "rejected", {"doctor_c1"}),
    ("reject", "needs_documents", "rejected", {"doctor_c1"}),
    ("cancel", "requested", "cancelled", {"patient", "doctor_c1"}),
    ("cancel", "needs_documents", "cancelled", {"patient", "doctor_c1"}),
    ("cancel", "scheduled", "cancelled", {"patient", "doctor_c1"}),
    ("attach", "needs_documents", "requested", {"patient"}),
]


@pytest.mark.parametrize("actor", ACTORS)
@pytest.mark.parametrize(
    "name,start,end,allowed", TRANSITIONS, ids=[f"{t[0]}-{t[1]}" for t in TRANSITIONS]
)
def test_transition_by_actor(app, world, name, start, end, allowed, actor):
    from app.consultations import ConsultationError
    from app.db import unit_of_work

    extra = {}
    if start == "scheduled":
        extra = dict(
            doctor_id=world.doctors["doctor_c1"],
            scheduled_at=datetime.now(UTC) + timedelta(days=1),
        )
    public_id = make_consultation(app, world, status=start, **extra)
    action = {
        "schedule": _schedule,
        "request_documents": _request_documents,
        "reject": _reject,
        "cancel": _cancel,
        "attach": _attach(world),
    }[name]
    with app.app_context():
        if actor in allowed:
            with unit_of_work():
                action(load(public_id), user(world, actor))
            c = load(public_id)
            assert c.status == end
            assert audit_actions(public_id), "every transition is audited"
        else:
            with pytest.raises(ConsultationError):
                with unit_of_work():
                    action(load(public_id), user(world, actor))
            c = load(public_id)
            assert c.status == start
            assert audit_actions(public_id) == []
            assert notifications_of(world, "patient") == []
            assert notifications_of(world, "doctor_c1") == []


FINISHED = ["in_progress", "completed", "rejected", "cancelled", "missed"]


@pytest.mark.parametrize("status", FINISHED)
@pytest.mark.parametrize("actor", ["patient", "doctor_c1"])
def test_nothing_but_its_own_transition_from_late_statuses(app, world, status, actor):
    """Cancelling a completed (or started, ...) consultation and the rest are refused."""
    from app.consultations import ConsultationError
    from app.db import unit_of_work

    public_id = make_consultation(
        app,
        world,
        status=status,
        doctor_id=world.doctors["doctor_c1"],
        scheduled_at=datetime.now(UTC) - timedelta(hours=2),
    )
    actions = [_cancel, _schedule, _request_documents, _reject, _attach(world)]
    with app.app_context():
        for action in actions:
            with pytest.raises(ConsultationError):
                with unit_of_work():
                    action(load(public_id), user(world, actor))
            assert load(public_id).status == status


def test_cancelling_completed_says_so(app, world):
    from flask_babel import force_locale

    from app.consultations import ConsultationError

    public_id = make_consultation(app, world, status="completed")
    with app.app_context(), force_locale("ru"):
        with pytest.raises(ConsultationError) as exc:
            _cancel(load(public_id), user(world, "patient"))
        assert str(exc.value) == "Эту консультацию уже нельзя отменить."


def test_admin_may_cancel_but_not_decide(app, world):
    from app.consultations import ConsultationError

    public_id = make_consultation(app, world)
    with app.app_context():
        with pytest.raises(ConsultationError):
            _schedule(load(public_id), user(world, "admin"))
        _cancel(load(public_id), user(world, "admin"))
        assert load(public_id).status == "cancelled"


def test_duty_doctor_cancels_own_booking(app, world):
    public_id = make_consultation(
        app,
        world,
        kind="duty",
        status="scheduled",
        center_id=None,
        doctor_id=world.doctors["duty"],
        scheduled_at=datetime.now(UTC) + timedelta(days=1),
    )
    with app.app_context():
        _cancel(load(public_id), user(world, "duty"))
        c = load(public_id)
        assert c.status == "cancelled" and c.cancelled_by_id == world.users["duty"]
        [n] = notifications_of(world, "patient")
        assert n.kind == "consultation_cancelled"


# ---------------------------------------------------------------------------------------------
# Details of the transitions
# ---------------------------------------------------------------------------------------------


def test_request_documents_then_patient_attaches(app, world):
    from app.consultations import attach_documents, request_documents
    from app.db import unit_of_work

    public_id = make_consultation(app, world)
    with app.app_context():
        with unit_of_work():
            request_documents(load(public_id), by=user(world, "doctor_c1"), message="Нужно УЗИ")
        c = load(public_id)
        assert c.status == "needs_documents" and c.staff_message == "Нужно УЗИ"
        [n] = notifications_of(world, "patient")
        assert n.kind == "documents_requested" and "УЗИ" not in n.text  # no medical content
        with unit_of_work():
            attach_documents(
                load(public_id), by=user(world, "patient"), document_ids=[world.conclusion_doc]
            )
        c = load(public_id)
        assert c.status == "requested"
        assert {d.public_id for d in c.documents} == {world.ecg, world.conclusion_doc}
        for doctor in ("doctor_c1", "doctor_c1b"):
            assert [n.kind for n in notifications_of(world, doctor)] == ["documents_uploaded"]


def test_attach_foreign_document_refused(app, world):
    from app.consultations import ConsultationError, attach_documents, request_documents
    from app.db import unit_of_work

    public_id = make_consultation(app, world)
    with app.app_context():
        with unit_of_work():
            request_documents(load(public_id), by=user(world, "doctor_c1"), message="Нужно УЗИ")
        with pytest.raises(ConsultationError):
            with unit_of_work():
                attach_documents(
                    load(public_id),
                    by=user(world, "patient"),
                    document_ids=[world.conclusion_doc, world.foreign_doc],
                )
        c = load(public_id)
        assert c.status == "needs_documents"
        assert {d.public_id for d in c.documents} == {world.ecg}


def test_reject_needs_a_reason_and_tells_patient(app, world):
    from app.consultations import ConsultationError, reject_consultation

    public_id = make_consultation(app, world)
    with app.app_context():
        with pytest.raises(ConsultationError):
            reject_consultation(load(public_id), by=user(world, "doctor_c1"), reason="  ")
        reject_consultation(load(public_id), by=user(world, "doctor_c1"), reason="Не профиль")
        c = load(public_id)
        assert c.status == "rejected" and c.reject_reason == "Не профиль" and c.rejected_at
        assert [n.kind for n in notifications_of(world, "patient")] == ["application_rejected"]


def test_patient_cancel_notifies_assigned_doctor_only(app, world):
    public_id = make_consultation(
        app,
        world,
        status="scheduled",
        doctor_id=world.doctors["doctor_c1"],
        scheduled_at=datetime.now(UTC) + timedelta(days=1),
    )
    with app.app_context():
        _cancel(load(public_id), user(world, "patient"))
        c = load(public_id)
        assert c.status == "cancelled" and c.cancel_reason == "Передумала"
        assert c.cancelled_by_id == world.users["patient"] and c.cancelled_at
        assert [n.kind for n in notifications_of(world, "doctor_c1")] == ["consultation_cancelled"]
        assert notifications_of(world, "doctor_c1b") == []
        assert notifications_of(world, "patient") == []


def test_patient_cancel_unassigned_notifies_centre(app, world):
    public_id = make_consultation(app, world)
    with app.app_context():
        _cancel(load(public_id), user(world, "patient"))
        assert len(notifications_of(world, "doctor_c1")) == 1
        assert len(notifications_of(world, "doctor_c1b")) == 1
        assert notifications_of(world, "doctor_c2") == []


def test_cancel_frees_the_duty_slot(app, world):
    """The partial unique index holds a slot only while the booking is active."""
    from sqlalchemy.exc import IntegrityError

    from app.extensions import db
    from models import Consultation, DutyShift, Slot

    start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
    with app.app_context():
        shift = DutyShift(
            doctor_id=world.doctors["duty"], starts_at=start, ends_at=start + timedelta(hours=1)
        )
        slot = Slot(
            shift=shift,
            doctor_id=world.doctors["duty"],
            starts_at=start,
            ends_at=start + timedelta(minutes=30),
        )
        db.session.add_all([shift, slot])
        db.session.commit()
        slot_id = slot.id

    def booking() -> Consultation:
        return Consultation(
            kind="duty",
            status="scheduled",
            patient_id=world.other_patient,
            doctor_id=world.doctors["duty"],
            slot_id=slot_id,
            scheduled_at=start,
        )

    public_id = make_consultation(
        app,
        world,
        kind="duty",
        status="scheduled",
        center_id=None,
        doctor_id=world.doctors["duty"],
        slot_id=slot_id,
        scheduled_at=start,
    )
    with app.app_context():
        db.session.add(booking())
        with pytest.raises(IntegrityError):
            db.session.commit()
        db.session.rollback()
        _cancel(load(public_id), user(world, "patient"))
        db.session.commit()
        db.session.add(booking())
        db.session.commit()  # the slot is free again


def test_mark_missed(app, world):
    from app.consultations import ConsultationError, mark_missed

    public_id = make_consultation(
        app,
        world,
        status="scheduled",
        doctor_id=world.doctors["doctor_c1"],
        scheduled_at=datetime.now(UTC) + timedelta(hours=1),
    )
    with app.app_context():
        with pytest.raises(ConsultationError):
            mark_missed(load(public_id))  # not over yet
        with pytest.raises(ConsultationError):
            mark_missed(
                load(public_id),
                by=user(world, "doctor_c2"),
                now=datetime.now(UTC) + timedelta(hours=3),
            )
        mark_missed(load(public_id), now=datetime.now(UTC) + timedelta(hours=3))
        assert load(public_id).status == "missed"
        assert [n.kind for n in notifications_of(world, "patient")] == ["consultation_missed"]
