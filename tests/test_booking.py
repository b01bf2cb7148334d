"""Pathway 2: booking a duty doctor by schedule — the free slots, the booking and its refusals."""

from __future__ import annotations

import re
import uuid

import pytest
from sqlalchemy import event, func, select

from tests.conftest import (
    TAKEN_RU,
    active_bookings,
    add_shift,
    csrf_token,
    login,
    patient_username,
    tomorrow_at,
)


def slot_row(app, public_id: str):
    from app.extensions import db
    from models import Slot

    with app.app_context():
        return db.session.execute(
            select(Slot).where(Slot.public_id == uuid.UUID(public_id))
        ).scalar_one()


def set_slot(app, public_id: str, **values) -> None:
    from app.extensions import db
    from models import Slot

    with app.app_context():
        slot = db.session.execute(
            select(Slot).where(Slot.public_id == uuid.UUID(public_id))
        ).scalar_one()
        for k, v in values.items():
            setattr(slot, k, v)
        db.session.commit()


def book(app, patient_id: int, slot_id: str, **kw):
    """book_slot() in its own unit of work, as the view runs it; returns the consultation id."""
    from app.booking import book_slot
    from app.db import unit_of_work
    from app.extensions import db
    from models import Patient

    with app.app_context():
        with unit_of_work():
            c = book_slot(
                db.session.get(Patient, patient_id),
                slot_id,
                question=kw.pop("question", ""),
                document_ids=kw.pop("document_ids", ()),
                **kw,
            )
        return c.id


def add_document(app, patient_id: int, name: str = "выписка.pdf") -> str:
    from app.extensions import db
    from models import DocumentType, MedicalDocument

    with app.app_context():
        dtype = db.session.execute(select(DocumentType).limit(1)).scalar_one_or_none()
        if dtype is None:
            dtype = DocumentType(code=f"t{uuid.uuid4().hex[:8]}", name="Выписка", name_en="")
            db.session.add(dtype)
            db.session.flush()
        doc = MedicalDocument(
            patient_id=patient_id,
            document_type_id=dtype.id,
            storage_key=uuid.uuid4().hex,
            original_name=name,
            content_type="application/pdf",
            size_bytes=10,
            sha256="0" * 64,
        )
        db.session.add(doc)
        db.session.commit()
        return str(doc.public_id)


@pytest.fixture
def duty(app, make_doctor):
    """(duty doctor id, four free slots tomorrow from 10:00 UTC)."""
    doctor_id = make_doctor(is_duty=True)
    return doctor_id, add_shift(app, doctor_id, tomorrow_at(10))


@pytest.fixture
def patient_client(app, make_patient):
    patient_id = make_patient(timezone="Asia/Vladivostok")
    client = app.test_client()
    login(client, patient_username(app, patient_id))
    return client, patient_id


def post_booking(client, slot_id: str, **data):
    token = csrf_token(client, f"/cabinet/booking/{slot_id}")
    return client.post(
        f"/cabinet/booking/{slot_id}",
        data={"csrf_token": token, "mode": "video", **data},
        follow_redirects=True,
    )


# --- the free slots --------------------------------------------------------------------------


def test_free_slots_exclude_booked_blocked_past_far_and_inactive(
    app, make_doctor, make_patient, duty
):
    from app.booking import free_slots
    from app.extensions import db
    from models import Consultation, ConsultationKind, ConsultationStatus, Doctor

    doctor_id, slots = duty
    free, blocked, booked, cancelled = slots
    past = add_shift(app, doctor_id, tomorrow_at(10, days=-1), slots=1)[0]
    far = add_shift(app, doctor_id, tomorrow_at(10, days=15), slots=1)[0]
    off_doctor = make_doctor(is_duty=True)
    off_slot = add_shift(app, off_doctor, tomorrow_at(12), slots=1)[0]
    set_slot(app, blocked, blocked=True)
    patient_id = make_patient()
    book(app, patient_id, booked)
    book(app, patient_id, cancelled)
    with app.app_context():
        c = db.session.execute(
            select(Consultation).where(Consultation.slot_id == slot_row(app, cancelled).id)
        ).scalar_one()
        assert c.kind == ConsultationKind.DUTY
        c.status = ConsultationStatus.CANCELLED
        db.session.get(Doctor, off_doctor).active = False
        db.session.commit()

        listed = {str(s.public_id) for s in free_slots()}
    assert listed == {free, cancelled}
    assert not listed & {blocked, booked, past, far, off_slot}


def test_listing_is_one_query_whatever_the_number_of_slots(app, make_doctor):
    from app.booking import free_slots_by_doctor
    from app.extensions import db

    for _ in range(2):
        add_shift(app, make_doctor(is_duty=True), tomorrow_at(9), slots=1)
    with app.app_context():
        statements: list[str] = []

        def count(conn, cursor, statement, *args):
            statements.append(statement)

        event.listen(db.engine, "before_cursor_execute", count)
        try:
            few = free_slots_by_doctor("Europe/Moscow")
            few_queries = len(statements)
            db.session.expire_all()
        finally:
            event.remove(db.engine, "before_cursor_execute", count)
    for n in range(3):
        add_shift(app, make_doctor(is_duty=True), tomorrow_at(6, days=2 + n), slots=40, minutes=15)
    with app.app_context():
        statements.clear()
        event.listen(db.engine, "before_cursor_execute", count)
        try:
            many = free_slots_by_doctor("Europe/Moscow")
            for entry in many:  # touching the doctor and the slots must not query
                _ = [(entry.doctor.full_name, d.day, len(d.slots)) for d in entry.days]
        finally:
            event.remove(db.engine, "before_cursor_execute", count)
    assert sum(e.count for e in few) == 2
    assert sum(e.count for e in many) == 122
    assert few_queries == len(statements) == 1


def test_page_groups_by_doctor_and_day_in_the_patients_time_zone(app, patient_client, duty):
    client, _ = patient_client
    _, slots = duty
    html = client.get("/cabinet/booking/").get_data(as_text=True)
    assert "Запись к дежурному врачу" in html
    assert "Консультация может быть оказана всем желающим" in html
    # A topic first (the shift names none: it takes every topic), then the days and times.
    assert 'href="/cabinet/booking/?topic=lifestyle"' in html
    html = client.get("/cabinet/booking/?topic=lifestyle").get_data(as_text=True)
    assert "Владивосток" in html or "Vladivostok" in html
    # 10:00 UTC is 20:00 in Vladivostok (UTC+10): times are the patient's, not the server's.
    assert re.search(r">\s*20:00\s*<", html)
    assert re.search(r">\s*21:30\s*<", html)
    assert not re.search(r">\s*10:00\s*<", html)
    for slot_id in slots:
        assert f"/cabinet/booking/{slot_id}" in html
    assert "Врачев" in html and "Профилактика, вопросы ЗОЖ" in html  # name; shift's note


def test_menu_entry_under_the_patients_cabinet(patient_client):
    client, _ = patient_client
    html = client.get("/cabinet/booking/").get_data(as_text=True)
    assert 'href="/cabinet/booking/"' in html


# --- booking ---------------------------------------------------------------------------------


def test_booking_creates_a_scheduled_duty_consultation(app, patient_client, duty):
    from app.extensions import db
    from models import AuditEvent, Consultation, Doctor, Notification

    client, patient_id = patient_client
    doctor_id, slots = duty
    form = client.get(f"/cabinet/booking/{slots[1]}").get_data(as_text=True)
    assert "Способ связи" in form and "Видеосвязь" in form and 'type="radio"' in form
    assert "20:30" in form  # 10:30 UTC in Vladivostok

    response = post_booking(client, slots[1], question="Как снизить давление?")
    html = response.get_data(as_text=True)
    assert "Вы записаны к дежурному врачу" in html
    with app.app_context():
        c = db.session.execute(select(Consultation)).scalar_one()
        slot = slot_row(app, slots[1])
        assert (c.kind, c.status, c.mode) == ("duty", "scheduled", "video")
        assert (c.patient_id, c.doctor_id, c.slot_id) == (patient_id, doctor_id, slot.id)
        assert c.scheduled_at == slot.starts_at and c.duration_minutes == 30
        assert c.question == "Как снизить давление?"
        doctor_user = db.session.get(Doctor, doctor_id).user_id
        note = db.session.execute(
            select(Notification).where(Notification.user_id == doctor_user)
        ).scalar_one()
        assert "Новая запись" in note.text and str(c.public_id) in note.link
        assert db.session.execute(
            select(AuditEvent).where(AuditEvent.action == "consultation.book")
        ).scalar_one()
    # The slot is no longer offered.
    listed = client.get("/cabinet/booking/?topic=cardiovascular").get_data(as_text=True)
    assert f"/cabinet/booking/{slots[0]}" in listed
    assert f"/cabinet/booking/{slots[1]}" not in listed


def test_second_booking_of_the_same_slot_is_refused(app, make_patient, patient_client, duty):
    from app.booking import BookingError

    client, _ = patient_client
    _, slots = duty
    book(app, make_patient(), slots[0])
    with pytest.raises(BookingError) as exc:
        book(app, make_patient(), slots[0])
    with app.test_request_context():
        assert str(exc.value) == TAKEN_RU
    # Through the form: the form page itself already says so, and a POST is refused too.
    response = client.get(f"/cabinet/booking/{slots[0]}", follow_redirects=True)
    assert TAKEN_RU in response.get_data(as_text=True)
    token = csrf_token(client, f"/cabinet/booking/{slots[1]}")
    response = client.post(
        f"/cabinet/booking/{slots[0]}",
        data={"csrf_token": token, "mode": "video"},
        follow_redirects=True,
    )
    assert TAKEN_RU in response.get_data(as_text=True)
    assert active_bookings(app, slots[0]) == 1


def test_unique_index_refuses_when_the_python_checks_are_skipped(
    app, make_patient, duty, monkeypatch
):
    """The database, not the check in Python, keeps a slot to one active booking."""
    import app.booking.book as booking

    _, slots = duty
    book(app, make_patient(), slots[0])
    real_lock = booking._lock_booking
    monkeypatch.setattr(booking, "bookable_slot", lambda pid, now: None)
    monkeypatch.setattr(
        booking, "_lock_booking", lambda patient_id, pid: real_lock(patient_id, pid, lock=False)
    )
    with pytest.raises(booking.BookingError) as exc:
        book(app, make_patient(), slots[0])
    assert exc.value.slot_gone
    assert active_bookings(app, slots[0]) == 1


def test_session_stays_usable_after_a_refused_insert(app, make_patient, duty, monkeypatch):
    import app.booking.book as booking
    from app.extensions import db
    from models import Consultation, Patient

    _, slots = duty
    book(app, make_patient(), slots[0])
    patient_id = make_patient()
    monkeypatch.setattr(booking, "bookable_slot", lambda pid, now: None)
    with app.app_context():
        patient = db.session.get(Patient, patient_id)
        with pytest.raises(booking.BookingError):
            booking.book_slot(patient, slots[0], question="", document_ids=())
        booking.book_slot(patient, slots[1], question="", document_ids=())  # same transaction
        db.session.commit()
        assert (
            db.session.execute(
                select(func.count(Consultation.id)).where(Consultation.patient_id == patient_id)
            ).scalar_one()
            == 1
        )


def test_booking_and_refusal_statement_budget(app, make_patient, duty):
    """Under a race the cost per attempt is what counts (bench/bench_booking_race.py): a slot
    already taken is refused by one unlocked statement, a booking is a handful of statements
    and still notifies the doctor (cabinet + outbox) and writes the audit event."""
    from app.booking import BookingError, book_slot
    from app.db import unit_of_work
    from app.extensions import db
    from models import AuditEvent, Notification, OutboundMessage, Patient

    _, slots = duty
    first, second = make_patient(), make_patient()
    statements: list[str] = []

    def count(conn, cursor, statement, *args):
        statements.append(" ".join(statement.split()))

    with app.test_request_context():
        patients = [db.session.get(Patient, pid) for pid in (first, second)]
        db.session.commit()  # expired, as in a fresh request
        event.listen(db.engine, "before_cursor_execute", count)
        try:
            with unit_of_work():
                c = book_slot(patients[0], slots[0], question="", document_ids=())
            booked = list(statements)
            statements.clear()
            with pytest.raises(BookingError) as exc, unit_of_work():
                book_slot(patients[1], slots[0], question="", document_ids=())
            refused = list(statements)
            assert str(exc.value) == TAKEN_RU
        finally:
            event.remove(db.engine, "before_cursor_execute", count)
        assert len(refused) == 1 and "FOR " not in refused[0], refused
        locks = [s for s in booked if " FOR NO KEY UPDATE" in s or s.startswith("UPDATE slot")]
        assert locks, booked  # the authoritative path still takes its locks
        # The look, the patient (expired here), the locks of the patient and the slot (SQLite:
        # its no-op write), the count of the patient's bookings, the consultation's insert,
        # then what every transition writes through notify() and audit(): the audit event,
        # the look-up of the doctor's opt-ins, the notification and its outbox row. (Issue 16
        # replaced the one hand-built statement that used to do the writes on PostgreSQL.)
        # And the consultation's number: its year's counter row (allocate_consultation_numbers).
        sqlite = db.engine.dialect.name == "sqlite"
        assert len(booked) <= (12 if sqlite else 11), booked
        link = f"/care/consultations/{c.public_id}"
        assert db.session.execute(
            select(Notification).where(Notification.link == link)
        ).scalar_one()
        assert db.session.execute(
            select(OutboundMessage).where(
                OutboundMessage.dedupe_key == f"booking:{c.public_id}:doctor:email"
            )
        ).scalar_one()
        assert db.session.execute(
            select(AuditEvent).where(AuditEvent.object_id == str(c.public_id))
        ).scalar_one()


def test_booking_notifies_and_audits_through_the_transitions_helpers(
    app, make_patient, duty, monkeypatch
):
    """The booking is a transition like the others: its doctor's notification goes through
    notify() (app/consultations/common.py) and its audit event through audit_consultation()
    (app/audit.py), the helpers every transition calls, not rows of its own making. Spies
    that call through."""
    import app.audit as audit_module
    import app.consultations.common as common
    from app.extensions import db
    from models import Doctor, Patient

    doctor_id, slots = duty
    patient_id = make_patient()
    seen: list[tuple] = []
    real_notify, real_audit = common.notify, audit_module.audit

    def notify_spy(user, kind, text, **kw):
        seen.append(("notify", user.id, kind, kw.get("link")))
        return real_notify(user, kind, text, **kw)

    def audit_spy(action, **kw):
        seen.append(("audit", action, kw.get("actor_id"), kw.get("patient_id")))
        return real_audit(action, **kw)

    monkeypatch.setattr(common, "notify", notify_spy)
    monkeypatch.setattr(audit_module, "audit", audit_spy)
    consultation_id = book(app, patient_id, slots[0])
    with app.app_context():
        from models import Consultation

        c = db.session.get(Consultation, consultation_id)
        doctor_user = db.session.get(Doctor, doctor_id).user_id
        patient_user = db.session.get(Patient, patient_id).user_id
        assert sorted(seen) == [
            ("audit", "consultation.book", patient_user, patient_id),
            ("notify", doctor_user, "consultation_booked", f"/care/consultations/{c.public_id}"),
        ]


def test_limit_of_upcoming_bookings(app, make_patient, duty, monkeypatch):
    from app.booking import BookingError

    _, slots = duty
    assert app.config["MAX_UPCOMING_DUTY_BOOKINGS"] == 2
    patient_id = make_patient()
    book(app, patient_id, slots[0])
    book(app, patient_id, slots[1])
    with pytest.raises(BookingError) as exc:
        book(app, patient_id, slots[2])
    with app.test_request_context():
        assert "максимальное число предстоящих записей" in str(exc.value)
        assert "(2)" in str(exc.value)
    assert active_bookings(app, slots[2]) == 0
    # The limit is configuration.
    monkeypatch.setitem(app.config, "MAX_UPCOMING_DUTY_BOOKINGS", 3)
    book(app, patient_id, slots[2])
    assert active_bookings(app, slots[2]) == 1


def test_limit_counts_past_bookings_out(app, make_patient, make_doctor, monkeypatch):
    doctor_id = make_doctor(is_duty=True)
    early = add_shift(app, doctor_id, tomorrow_at(8), slots=1)[0]
    later = add_shift(app, doctor_id, tomorrow_at(12), slots=1)[0]
    monkeypatch.setitem(app.config, "MAX_UPCOMING_DUTY_BOOKINGS", 1)
    patient_id = make_patient()
    book(app, patient_id, early)
    # Once the first consultation's time has passed, it no longer holds a place in the limit.
    book(app, patient_id, later, now=tomorrow_at(9))
    assert active_bookings(app, later) == 1


def test_past_blocked_and_inactive_doctor_slots_are_refused(app, make_patient, duty):
    from app.booking import BookingError
    from app.extensions import db
    from models import Doctor

    doctor_id, slots = duty
    patient_id = make_patient()
    past = add_shift(app, doctor_id, tomorrow_at(10, days=-1), slots=1)[0]
    set_slot(app, slots[0], blocked=True)
    messages = {}
    for name, slot_id in (("past", past), ("blocked", slots[0])):
        with pytest.raises(BookingError) as exc:
            book(app, patient_id, slot_id)
        with app.test_request_context():
            messages[name] = str(exc.value)
    assert messages == {
        "past": "Это время уже прошло. Выберите другое.",
        "blocked": "На это время записаться нельзя.",
    }
    with app.app_context():
        db.session.get(Doctor, doctor_id).active = False
        db.session.commit()
    with pytest.raises(BookingError):
        book(app, patient_id, slots[1])
    assert active_bookings(app, slots[1]) == 0


def test_a_cancelled_booking_frees_the_slot(app, make_patient, duty):
    from app.extensions import db
    from models import Consultation, ConsultationStatus

    _, slots = duty
    first = book(app, make_patient(), slots[0])
    with app.app_context():
        # The cancel transition belongs to app/consultations/transitions.py; its effect on the
        # slot is the status leaving SLOT_HOLDING_STATUSES, which the partial index looks at.
        db.session.get(Consultation, first).status = ConsultationStatus.CANCELLED
        db.session.commit()
    second_patient = make_patient()
    second = book(app, second_patient, slots[0])
    assert second != first
    assert active_bookings(app, slots[0]) == 1


def test_only_own_documents_can_be_attached(app, make_patient, patient_client, duty):
    from app.booking import BookingError
    from app.extensions import db
    from models import Consultation

    client, patient_id = patient_client
    _, slots = duty
    own = add_document(app, patient_id, "моя-выписка.pdf")
    foreign = add_document(app, make_patient(), "чужая-выписка.pdf")
    form = client.get(f"/cabinet/booking/{slots[0]}").get_data(as_text=True)
    assert "моя-выписка.pdf" in form and "чужая-выписка.pdf" not in form

    response = post_booking(client, slots[0], documents=[own, foreign])
    assert "Приложить можно только свои документы." in response.get_data(as_text=True)
    with pytest.raises(BookingError):
        book(app, patient_id, slots[0], document_ids=[foreign])
    with pytest.raises(BookingError):
        book(app, patient_id, slots[0], document_ids=["not-a-uuid"])
    assert active_bookings(app, slots[0]) == 0

    response = post_booking(client, slots[0], documents=[own])
    assert "Вы записаны к дежурному врачу" in response.get_data(as_text=True)
    with app.app_context():
        c = db.session.execute(select(Consultation)).scalar_one()
        assert [str(d.public_id) for d in c.documents] == [own]


def test_booking_without_documents_or_question_is_fine(app, patient_client, duty):
    client, _ = patient_client
    _, slots = duty
    response = post_booking(client, slots[3])
    assert "Вы записаны к дежурному врачу" in response.get_data(as_text=True)
    assert active_bookings(app, slots[3]) == 1


def test_only_video_mode(app, patient_client, duty):
    client, _ = patient_client
    _, slots = duty
    response = post_booking(client, slots[0], mode="phone")
    assert "Вы записаны" not in response.get_data(as_text=True)
    assert active_bookings(app, slots[0]) == 0


# --- who may book ----------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["Manager", "Doctor", "DutyDoctor"])
def test_staff_cannot_book(app, make_staff, duty, role):
    _, slots = duty
    client = app.test_client()
    login(client, make_staff(role))
    assert client.get("/cabinet/booking/").status_code == 403
    assert client.get(f"/cabinet/booking/{slots[0]}").status_code == 403
    token = csrf_token(client, "/account/password/")
    response = client.post(
        f"/cabinet/booking/{slots[0]}", data={"csrf_token": token, "mode": "video"}
    )
    assert response.status_code == 403
    assert active_bookings(app, slots[0]) == 0


def test_anonymous_is_sent_to_login(app, client, duty):
    _, slots = duty
    for url in ("/cabinet/booking/", f"/cabinet/booking/{slots[0]}"):
        response = client.get(url)
        assert response.status_code == 302 and "/login/" in response.headers["Location"]
    response = client.post(f"/cabinet/booking/{slots[0]}", data={"mode": "video"})
    assert response.status_code in (302, 303, 400)
    assert "/cabinet/booking" not in response.headers.get("Location", "")
    assert active_bookings(app, slots[0]) == 0


def test_unknown_slot_is_404_never_500(app, patient_client, duty):
    client, _ = patient_client
    unknown = uuid.uuid4()
    assert client.get(f"/cabinet/booking/{unknown}").status_code == 404
    token = csrf_token(client, f"/cabinet/booking/{duty[1][0]}")
    response = client.post(
        f"/cabinet/booking/{unknown}", data={"csrf_token": token, "mode": "video"}
    )
    assert response.status_code == 404
    assert client.get("/cabinet/booking/not-a-uuid").status_code == 404


def test_post_without_csrf_is_refused(app, patient_client, duty):
    client, _ = patient_client
    _, slots = duty
    response = client.post(f"/cabinet/booking/{slots[0]}", data={"mode": "video"})
    assert response.status_code in (303, 400)  # app/hardening.py answers a CSRF failure with 303
    assert active_bookings(app, slots[0]) == 0
