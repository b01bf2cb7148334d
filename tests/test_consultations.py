"""The status machine of an application (app/consultations/), at the service level.

Every transition is tried by every kind of actor: the patient who owns the consultation,
another patient, a doctor of the consultation's centre, a doctor of another centre, a duty
doctor, a manager (and an admin where it matters). Allowed ones change the status, notify and
audit; refused ones raise a domain error and change nothing.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, time, timedelta

import pytest
from sqlalchemy import func, select

from tests.consultation_world import (
    World,
    audit_actions,
    load,
    make_consultation,
    set_timezones,
    user,
)

pytestmark = pytest.mark.usefixtures("empty_storage")

ACTORS = ("patient", "other_patient", "doctor_c1", "doctor_c2", "duty", "manager")


def notifications_of(world: World, actor: str) -> list:
    from app.extensions import db
    from models import Notification

    return list(
        db.session.execute(
            select(Notification)
            .where(Notification.user_id == world.users[actor])
            .order_by(Notification.id)
        ).scalars()
    )


def tomorrow_at(hour: int, minute: int = 0) -> tuple[date, time]:
    return (datetime.now(UTC) + timedelta(days=2)).date(), time(hour, minute)


# ---------------------------------------------------------------------------------------------
# Row scope
# ---------------------------------------------------------------------------------------------

PATIENT_SCOPE = {"patient": True}
STAFF_SCOPE_CENTRE = {"doctor_c1": True, "admin": True}


@pytest.mark.parametrize("actor", [*ACTORS, "admin"])
def test_patient_scope(app, world, actor):
    from app.consultations import consultation_for_patient
    from app.errors import NotFound

    public_id = make_consultation(app, world)
    with app.app_context():
        if PATIENT_SCOPE.get(actor):
            assert consultation_for_patient(user(world, actor), public_id).public_id == public_id
        else:
            with pytest.raises(NotFound):
                consultation_for_patient(user(world, actor), public_id)
        with pytest.raises(NotFound):
            consultation_for_patient(user(world, actor), uuid.uuid4())


@pytest.mark.parametrize("actor", [*ACTORS, "admin"])
def test_staff_scope_of_a_centre_application(app, world, actor):
    from app.consultations import consultation_for_staff
    from app.errors import NotFound

    public_id = make_consultation(app, world)
    with app.app_context():
        if STAFF_SCOPE_CENTRE.get(actor):
            assert consultation_for_staff(user(world, actor), public_id).public_id == public_id
        else:
            with pytest.raises(NotFound):
                consultation_for_staff(user(world, actor), public_id)


@pytest.mark.parametrize("actor", ACTORS)
def test_staff_scope_of_a_duty_booking(app, world, actor):
    """A duty booking (no centre) is seen by its own duty doctor only."""
    from app.consultations import consultation_for_staff
    from app.errors import NotFound

    public_id = make_consultation(
        app, world, kind="duty", status="scheduled", center_id=None, doctor_id=world.doctors["duty"]
    )
    with app.app_context():
        if actor == "duty":
            assert consultation_for_staff(user(world, actor), public_id)
        else:
            with pytest.raises(NotFound):
                consultation_for_staff(user(world, actor), public_id)


def test_doctor_sees_consultation_assigned_to_them_outside_centre(app, world):
    from app.consultations import consultation_for_staff

    public_id = make_consultation(
        app,
        world,
        status="scheduled",
        center_id=world.centre1,
        doctor_id=world.doctors["doctor_c2"],
    )
    with app.app_context():
        assert consultation_for_staff(user(world, "doctor_c2"), public_id)


def test_deactivated_doctor_loses_scope(app, world):
    from app.consultations import consultation_for_staff
    from app.errors import NotFound
    from app.extensions import db
    from models import Doctor

    public_id = make_consultation(app, world)
    with app.app_context():
        db.session.get(Doctor, world.doctors["doctor_c1"]).active = False
        db.session.commit()
        with pytest.raises(NotFound):
            consultation_for_staff(user(world, "doctor_c1"), public_id)


# ---------------------------------------------------------------------------------------------
# Submitting an application
# ---------------------------------------------------------------------------------------------


def application(world: World, **over):
    from app.consultations import ApplicationData

    data = dict(
        centre_public_id=world.centre1_public,
        disease_id=world.disease_i48,
        diagnosis_text="",
        complaints="Перебои в работе сердца, одышка",
        document_ids=(world.ecg, world.conclusion_doc),
    )
    data.update(over)
    return ApplicationData(**data)


def test_submit_creates_requested_application_and_notifies_centre(app, world):
    from app.consultations import submit_application
    from app.db import unit_of_work

    with app.app_context():
        before = datetime.now(UTC)
        with unit_of_work():
            c = submit_application(user(world, "patient"), application(world))
        c = load(c.public_id)
        assert c.status == "requested" and c.kind == "centre_request"
        assert c.patient_id == world.patient and c.center_id == world.centre1
        assert c.doctor_id is None
        assert before <= c.submitted_at <= datetime.now(UTC)
        assert c.due_by == c.submitted_at + timedelta(days=3)
        assert {d.public_id for d in c.documents} == {world.ecg, world.conclusion_doc}
        for doctor in ("doctor_c1", "doctor_c1b"):
            [n] = notifications_of(world, doctor)
            assert n.kind == "application_submitted"
            assert "Кардиоцентр" in n.text and n.link == f"/care/consultations/{c.public_id}"
        assert notifications_of(world, "doctor_c2") == []
        assert notifications_of(world, "duty") == []
        assert audit_actions(c.public_id) == ["consultation.submit"]


@pytest.mark.parametrize("actor", [a for a in ACTORS if a != "patient"])
def test_only_a_patient_submits_for_themselves(app, world, actor):
    from app.consultations import ConsultationError, submit_application
    from models import Consultation

    with app.app_context():
        with pytest.raises(ConsultationError):
            # Another patient's attempt fails on the documents, which are not theirs.
            submit_application(user(world, actor), application(world))
        from app.extensions import db

        db.session.rollback()
        assert db.session.execute(select(func.count(Consultation.id))).scalar() == 0


def test_missing_documents_are_named(app, world):
    from app.consultations import ConsultationError, submit_application

    with app.app_context():
        with pytest.raises(ConsultationError) as exc:
            submit_application(user(world, "patient"), application(world, document_ids=()))
        from flask_babel import force_locale

        with force_locale("ru"):
            assert str(exc.value) == "Не хватает документов: Заключение врача, ЭКГ."
        with pytest.raises(ConsultationError) as exc:
            submit_application(
                user(world, "patient"), application(world, document_ids=(world.ecg,))
            )
        with force_locale("ru"):
            assert str(exc.value) == "Не хватает документов: Заключение врача."


def test_free_text_diagnosis_needs_no_checklist(app, world):
    from app.consultations import submit_application

    with app.app_context():
        c = submit_application(
            user(world, "patient"),
            application(world, disease_id=None, diagnosis_text="Миокардит", document_ids=()),
        )
        assert c.disease_id is None and c.diagnosis_text == "Миокардит"
        assert c.status == "requested"


@pytest.mark.parametrize(
    "over",
    [
        {"document_ids": ("FOREIGN",)},
        {"centre_public_id": uuid.uuid4()},
        {"disease_id": "D25"},  # not in centre 1's catalogue
        {"disease_id": None, "diagnosis_text": ""},
        {"complaints": "   "},
        {"complaints": "ж" * 5000},
    ],
)
def test_submit_refusals_save_nothing(app, world, over):
    from app.consultations import ConsultationError, submit_application
    from app.db import unit_of_work
    from app.extensions import db
    from models import Consultation

    if over.get("document_ids") == ("FOREIGN",):
        over["document_ids"] = (world.ecg, world.conclusion_doc, world.foreign_doc)
    if over.get("disease_id") == "D25":
        over["disease_id"] = world.disease_d25
    with app.app_context():
        with pytest.raises(ConsultationError):
            with unit_of_work():
                submit_application(user(world, "patient"), application(world, **over))
        assert db.session.execute(select(func.count(Consultation.id))).scalar() == 0
        assert notifications_of(world, "doctor_c1") == []


def test_inactive_centre_refused(app, world):
    from app.consultations import ConsultationError, submit_application
    from app.extensions import db
    from models import MedicalCenter

    with app.app_context():
        db.session.get(MedicalCenter, world.centre1).active = False
        db.session.commit()
        with pytest.raises(ConsultationError):
            submit_application(user(world, "patient"), application(world))


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


def test_schedule_reads_doctor_zone_and_tells_patient_in_theirs(app, world):
    from app.consultations import schedule_consultation

    set_timezones(app, world, doctor="Asia/Vladivostok", patient="Europe/Kaliningrad")
    public_id = make_consultation(app, world)
    day = (datetime.now(UTC) + timedelta(days=3)).date()
    with app.app_context():
        schedule_consultation(
            load(public_id),
            by=user(world, "doctor_c1"),
            day=day,
            at=time(10, 0),
            duration_minutes=45,
        )
        from app.extensions import db

        db.session.commit()
        c = load(public_id)
        # 10:00 in Vladivostok (UTC+10) is 00:00 UTC, 02:00 in Kaliningrad (UTC+2).
        assert c.scheduled_at == datetime.combine(day, time(0, 0), tzinfo=UTC)
        assert c.duration_minutes == 45
        assert c.doctor_id == world.doctors["doctor_c1"] and c.scheduled_set_at is not None
        [n] = notifications_of(world, "patient")
        assert n.text.startswith("Консультация")
        assert "назначена на" in n.text and "02:00" in n.text and "Калининград" in n.text
        assert n.link == f"/cabinet/consultations/{public_id}"


@pytest.mark.parametrize(
    "when,minutes,ok",
    [
        ((10, 0), 30, False),  # the same time
        ((10, 15), 30, False),  # starts inside the other
        ((9, 45), 30, False),  # ends inside the other
        ((9, 0), 120, False),  # covers the other
        ((10, 30), 30, True),  # right after
        ((9, 30), 30, True),  # right before
    ],
)
def test_schedule_overlap(app, world, when, minutes, ok):
    from app.consultations import ConsultationError, schedule_consultation

    set_timezones(app, world, doctor="Europe/Moscow", patient="Europe/Moscow")
    day = (datetime.now(UTC) + timedelta(days=3)).date()
    existing = datetime.combine(day, time(10, 0)).replace(tzinfo=UTC) - timedelta(hours=3)
    make_consultation(
        app,
        world,
        kind="duty",
        status="scheduled",
        center_id=None,
        doctor_id=world.doctors["doctor_c1"],
        scheduled_at=existing,
        duration_minutes=30,
    )
    public_id = make_consultation(app, world)
    with app.app_context():
        c = load(public_id)
        kwargs = dict(
            by=user(world, "doctor_c1"), day=day, at=time(*when), duration_minutes=minutes
        )
        if ok:
            schedule_consultation(c, **kwargs)
            assert c.status == "scheduled"
        else:
            with pytest.raises(ConsultationError):
                schedule_consultation(c, **kwargs)
            assert load(public_id).status == "requested"


def test_overlap_ignores_cancelled_and_other_doctors(app, world):
    from app.consultations import schedule_consultation

    day = (datetime.now(UTC) + timedelta(days=3)).date()
    at = datetime.combine(day, time(7, 0), tzinfo=UTC)  # 10:00 Moscow
    make_consultation(
        app, world, status="cancelled", doctor_id=world.doctors["doctor_c1"], scheduled_at=at
    )
    make_consultation(
        app, world, status="scheduled", doctor_id=world.doctors["doctor_c1b"], scheduled_at=at
    )
    public_id = make_consultation(app, world)
    with app.app_context():
        c = load(public_id)
        schedule_consultation(
            c, by=user(world, "doctor_c1"), day=day, at=time(10, 0), duration_minutes=30
        )
        assert c.status == "scheduled"


def test_overlap_with_in_progress_refused(app, world):
    from app.consultations import ConsultationError, schedule_consultation

    day = (datetime.now(UTC) + timedelta(days=3)).date()
    make_consultation(
        app,
        world,
        status="in_progress",
        doctor_id=world.doctors["doctor_c1"],
        scheduled_at=datetime.combine(day, time(7, 0), tzinfo=UTC),
        duration_minutes=60,
    )
    public_id = make_consultation(app, world)
    with app.app_context():
        with pytest.raises(ConsultationError):
            schedule_consultation(
                load(public_id),
                by=user(world, "doctor_c1"),
                day=day,
                at=time(10, 30),
                duration_minutes=30,
            )


@pytest.mark.parametrize("minutes", [0, 14, 121])
def test_schedule_duration_bounds(app, world, minutes):
    from app.consultations import ConsultationError, schedule_consultation

    public_id = make_consultation(app, world)
    day, at = tomorrow_at(10)
    with app.app_context():
        with pytest.raises(ConsultationError):
            schedule_consultation(
                load(public_id),
                by=user(world, "doctor_c1"),
                day=day,
                at=at,
                duration_minutes=minutes,
            )


def test_schedule_in_the_past_refused(app, world):
    from flask_babel import force_locale

    from app.consultations import ConsultationError, schedule_consultation

    public_id = make_consultation(app, world)
    yesterday = (datetime.now(UTC) - timedelta(days=1)).date()
    with app.app_context(), force_locale("ru"):
        with pytest.raises(ConsultationError) as exc:
            schedule_consultation(
                load(public_id),
                by=user(world, "doctor_c1"),
                day=yesterday,
                at=time(12, 0),
                duration_minutes=30,
            )
        assert str(exc.value) == "Дата и время консультации уже прошли."


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


# ---------------------------------------------------------------------------------------------
# The queue and the day
# ---------------------------------------------------------------------------------------------


def test_queue_oldest_first_own_centre_only(app, world):
    from app.consultations import doctor_queue
    from app.extensions import db
    from models import Doctor

    now = datetime.now(UTC)
    newest = make_consultation(app, world, submitted_at=now - timedelta(hours=1))
    oldest = make_consultation(app, world, submitted_at=now - timedelta(days=5))
    middle = make_consultation(
        app, world, status="needs_documents", submitted_at=now - timedelta(days=1)
    )
    make_consultation(app, world, status="scheduled", submitted_at=now - timedelta(days=6))
    make_consultation(app, world, center_id=world.centre2, submitted_at=now - timedelta(days=7))
    with app.app_context():
        page = doctor_queue(db.session.get(Doctor, world.doctors["doctor_c1"]))
        assert [c.public_id for c in page.items] == [oldest, middle, newest]
        assert page.total == 3 and not page.capped


def test_queue_is_a_constant_number_of_queries(app, world):
    from sqlalchemy import event

    from app.consultations import doctor_queue
    from app.extensions import db
    from models import Doctor

    for _ in range(12):
        make_consultation(app, world)
    with app.app_context():
        doctor = db.session.get(Doctor, world.doctors["doctor_c1"])
        statements: list[str] = []

        def count(*args, **kw):
            statements.append(args[2])

        event.listen(db.engine, "before_cursor_execute", count)
        try:
            page = doctor_queue(doctor, page_size=5)
            for c in page.items:
                _ = c.patient.full_name, c.disease and c.disease.name
        finally:
            event.remove(db.engine, "before_cursor_execute", count)
        assert len(page.items) == 5 and page.pages == 3
        assert len(statements) == 2


def test_doctor_day_uses_doctor_zone(app, world):
    from app.consultations import doctor_day
    from app.extensions import db
    from models import Doctor

    set_timezones(app, world, doctor="Asia/Vladivostok", patient="Europe/Moscow")
    day = date(2031, 5, 12)
    # 23:30 UTC on the 11th is 09:30 on the 12th in Vladivostok; 14:30 UTC on the 12th is
    # 00:30 on the 13th there.
    inside = make_consultation(
        app,
        world,
        status="scheduled",
        doctor_id=world.doctors["doctor_c1"],
        scheduled_at=datetime(2031, 5, 11, 23, 30, tzinfo=UTC),
    )
    make_consultation(
        app,
        world,
        status="scheduled",
        doctor_id=world.doctors["doctor_c1"],
        scheduled_at=datetime(2031, 5, 12, 14, 30, tzinfo=UTC),
    )
    with app.app_context():
        items = doctor_day(db.session.get(Doctor, world.doctors["doctor_c1"]), day)
        assert [c.public_id for c in items] == [inside]
