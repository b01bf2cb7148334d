"""Referral import (pathway 3), the import: accounts, consultations and one SMS per row,
idempotent re-imports and resumes, linked patients told once, refused chunks retried row by row."""

from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy import func, select

from tests.referral_support import _count, _import, _rows, _validate, make_manager
from tests.referral_tables import invitation, row, xlsx


@pytest.fixture
def manager(app):
    return make_manager(app)


def test_import_creates_accounts_consultations_and_one_sms(app, catalogue, manager, make_patient):
    from app.extensions import db
    from models import Consultation, OblakoUser, OutboundMessage, Patient

    existing = make_patient(phone="+79123450010", birth_date=date(1970, 5, 6))
    data = xlsx(
        [
            row(),
            row(
                name="Сидоров Пётр",
                sex="м",
                phone="+79123450002",
                born="01.02.1960",
                code="I20",
                snils="112-233-445 95",
            ),
            row(phone="+79123450010", born="06.05.1970"),  # registered: linked, no password
            row(phone="bad"),
        ]
    )
    import_id = _validate(app, manager, data)
    _import(app, import_id)
    rows = _rows(app, import_id)
    assert [r[1] for r in rows] == ["imported", "imported", "linked", "invalid"]
    assert _count(app, Patient) == 3
    assert _count(app, Consultation) == 3
    with app.app_context():
        from app.referrals.importer import import_progress
        from models import ReferralImport

        imp = db.session.get(ReferralImport, import_id)
        assert imp.status == "done" and imp.imported_rows == 3 and imp.finished_at
        assert import_progress(imp)["percent"] == 100
        c = (
            db.session.execute(
                select(Consultation).where(Consultation.referral_row_id.is_not(None))
            )
            .scalars()
            .first()
        )
        assert c.kind == "referral" and c.status == "awaiting_documents"
        assert c.center_id == catalogue and c.disease_id is not None
        patient = db.session.execute(
            select(Patient).where(Patient.phone == "+79123450001")
        ).scalar_one()
        assert patient.source == "referral" and patient.user.username == "+79123450001"
        user = db.session.get(OblakoUser, patient.user_id)
        assert user.must_change_password and user.password_expires_at
        sms = list(
            db.session.execute(
                select(OutboundMessage).where(OutboundMessage.dedupe_key.like("referral-invite:%"))
            ).scalars()
        )
        assert len(sms) == 2 and {m.recipient for m in sms} == {"+79123450001", "+79123450002"}
        body = next(m.body for m in sms if m.recipient == "+79123450001")
        sms_parts = invitation(body)
        assert sms_parts["url"] == "https://oblako.test/login/"
        assert sms_parts["login"] == "+79123450001"
        assert sms_parts["link"].startswith("https://oblako.test/s/")
        for word in ("I10", "гипертензия", "Эссенциальная", "Кардио"):
            assert word not in body  # never a diagnosis
        password = sms_parts["password"]
        assert len(password) >= 12
        from werkzeug.security import check_password_hash

        from app.otp import check_one_time_password  # noqa: F401  (the sign-in part's check)

        assert check_password_hash(user.password, password)
        assert patient.id != existing


def test_reimport_same_file_and_overlap_is_idempotent(app, catalogue, manager):
    from models import Consultation, OutboundMessage, Patient

    data = xlsx([row(), row(phone="+79123450002", name="Петрова Ольга")])
    _import(app, _validate(app, manager, data))
    counts = (_count(app, Patient), _count(app, Consultation), _count(app, OutboundMessage))
    assert counts == (2, 2, 2)
    again = _validate(app, manager, data)
    assert all(r[3] for r in _rows(app, again))  # matched in the preview
    _import(app, again)
    overlap = _validate(
        app, manager, xlsx([row(note="снова"), row(phone="+79123450003", name="Новая Нина")])
    )
    _import(app, overlap)
    assert _count(app, Patient) == 3
    assert _count(app, Consultation) == 3
    assert _count(app, OutboundMessage) == 3  # only the new patient got an SMS
    assert [r[1] for r in _rows(app, again)] == ["linked", "linked"]


def test_interrupted_import_resumes_without_duplicates(app, catalogue, manager):
    from models import Consultation, OutboundMessage, Patient, ReferralImport

    rows = [row(phone=f"+7912345{n:04d}", name=f"Пациентова{n} Анна") for n in range(1, 8)]
    import_id = _validate(app, manager, xlsx(rows))
    result = _import(app, import_id, chunk_size=3, max_chunks=1)  # "the worker died"
    assert result["remaining"] == 4
    with app.app_context():
        from app.extensions import db

        imp = db.session.get(ReferralImport, import_id)
        assert imp.status == "importing" and imp.imported_rows == 3
    assert _count(app, Patient) == 3
    _import(app, import_id, chunk_size=3)
    _import(app, import_id, chunk_size=3)  # and once more: nothing changes
    assert _count(app, Patient) == 7
    assert _count(app, Consultation) == 7
    assert _count(app, OutboundMessage) == 7


def test_phone_taken_after_the_preview_marks_the_row_not_another_patient(
    app, catalogue, manager, make_patient
):
    from models import Consultation, OutboundMessage

    import_id = _validate(app, manager, xlsx([row(), row(phone="+79123450002")]))
    make_patient(phone="+79123450001", birth_date=date(1999, 9, 9))  # meanwhile, someone else
    _import(app, import_id)
    rows = _rows(app, import_id)
    assert [r[1] for r in rows] == ["invalid", "imported"]
    assert rows[0][2] and rows[0][3] is None
    assert _count(app, Consultation) == 1 and _count(app, OutboundMessage) == 1


def test_linked_patient_is_told_of_the_new_referral_without_credentials(
    app, catalogue, manager, make_patient
):
    """A registered patient matched by a row gets a cabinet notification and an SMS (no
    password, no diagnosis); importing the same file again tells them nothing new."""
    from app.extensions import db
    from models import Consultation, Notification, OutboundMessage, Patient

    existing = make_patient(phone="+79123450010", birth_date=date(1970, 5, 6))
    data = xlsx([row(phone="+79123450010", born="06.05.1970"), row()])
    import_id = _validate(app, manager, data)
    _import(app, import_id)
    assert [r[1] for r in _rows(app, import_id)] == ["linked", "imported"]
    with app.app_context():
        patient = db.session.get(Patient, existing)
        consultation = db.session.execute(
            select(Consultation).where(Consultation.patient_id == existing)
        ).scalar_one()
        notes = list(
            db.session.execute(
                select(Notification).where(Notification.user_id == patient.user_id)
            ).scalars()
        )
        assert len(notes) == 1
        assert notes[0].link == f"/cabinet/consultations/{consultation.public_id}"
        assert "новое направление" in notes[0].text
        sms = list(
            db.session.execute(
                select(OutboundMessage).where(
                    OutboundMessage.user_id == patient.user_id, OutboundMessage.channel == "sms"
                )
            ).scalars()
        )
        assert len(sms) == 1 and sms[0].recipient == "+79123450010"
        body = sms[0].body
        assert body.startswith("Облако здоровья: у вас новое направление")
        assert "https://oblako.test/login/" in body
        assert "пароль:" not in body.lower() and "логин): +7" not in body
        for word in ("I10", "гипертензия", "Эссенциальная", "Кардио"):
            assert word not in body  # never a diagnosis
        # The patient the import created gets its invitation only, not this notice as well.
        created = db.session.execute(
            select(Patient).where(Patient.phone == "+79123450001")
        ).scalar_one()
        assert [
            m.dedupe_key.split(":")[0]
            for m in db.session.execute(
                select(OutboundMessage).where(OutboundMessage.user_id == created.user_id)
            ).scalars()
        ] == ["referral-invite"]
        before = _count(app, OutboundMessage), _count(app, Notification)
    again = _validate(app, manager, data)
    _import(app, again)
    assert [r[1] for r in _rows(app, again)] == ["linked", "linked"]
    assert (_count(app, OutboundMessage), _count(app, Notification)) == before


def test_linked_patient_is_notified_when_a_refused_chunk_is_retried(
    app, catalogue, manager, make_patient, monkeypatch
):
    """The retry of a refused chunk (one row at a time) goes through the same chunked path:
    the linked patient is told of the new referral there too, once."""
    import app.referrals.importer as referrals
    from app.extensions import db
    from models import Notification, OutboundMessage, Patient

    existing = make_patient(phone="+79123450010", birth_date=date(1970, 5, 6))
    import_id = _validate(app, manager, xlsx([row(phone="+79123450010", born="06.05.1970")]))
    chunk = referrals._import_chunk
    calls: list[int] = []

    def refuse_once(rows, *args, **kwargs):
        calls.append(len(rows))
        if len(calls) == 1:
            raise ValueError("the chunk is refused")  # as a database refusal: a retry follows
        return chunk(rows, *args, **kwargs)

    monkeypatch.setattr(referrals, "_import_chunk", refuse_once)
    _import(app, import_id)
    assert [r[1] for r in _rows(app, import_id)] == ["linked"]
    assert calls == [1, 1]  # the chunk, then its row retried alone
    with app.app_context():
        user_id = db.session.get(Patient, existing).user_id
        assert (
            db.session.execute(
                select(func.count())
                .select_from(Notification)
                .where(Notification.user_id == user_id)
            ).scalar_one()
            == 1
        )
        assert (
            db.session.execute(
                select(func.count())
                .select_from(OutboundMessage)
                .where(OutboundMessage.user_id == user_id, OutboundMessage.channel == "sms")
            ).scalar_one()
            == 1
        )


def test_a_database_refusal_in_a_chunk_imports_the_other_rows_one_by_one(
    app, catalogue, manager, monkeypatch
):
    """The chunk's batched INSERT is refused (an account took row 2's phone as its login after
    the preview, without a patient record): the chunk is rolled back and retried row by row —
    the other rows are imported, the refused one is reported, nothing is doubled."""
    import app.referrals.importer as referrals
    from app.accounts import hash_password
    from app.extensions import db
    from models import Consultation, OblakoUser, OutboundMessage, Patient, ReferralImport

    retried: list[list[int]] = []
    one_by_one = referrals._import_one_by_one

    def spy(row_ids, *args):
        retried.append(list(row_ids))
        return one_by_one(row_ids, *args)

    monkeypatch.setattr(referrals, "_import_one_by_one", spy)
    rows = [row(phone=f"+7912345{n:04d}", name=f"Пациентова{n} Анна") for n in range(1, 5)]
    import_id = _validate(app, manager, xlsx(rows))
    with app.app_context():
        db.session.add(
            OblakoUser(
                username="+79123450002",
                first_name="Чужой",
                last_name="Логин",
                email="taken@example.org",
                password=hash_password("Secret123abc"),
                active=True,
            )
        )
        db.session.commit()
    result = _import(app, import_id)
    assert len(retried) == 1 and len(retried[0]) == 4  # the whole chunk, retried row by row
    outcomes = _rows(app, import_id)
    assert [r[1] for r in outcomes] == ["imported", "invalid", "imported", "imported"]
    assert outcomes[1][2] and outcomes[1][3] is None
    assert outcomes[1][2] == [{"column": "", "message": "Строку не удалось импортировать."}]
    assert _count(app, Patient) == 3
    assert _count(app, Consultation) == 3
    assert _count(app, OutboundMessage) == 3  # one invitation per imported row, none for row 2
    with app.app_context():
        imp = db.session.get(ReferralImport, import_id)
        assert imp.status == "done" and imp.imported_rows == 3
        assert imp.valid_rows == 3 and imp.error_rows == 1
    assert result["imported"] == 3


def test_every_row_of_a_bulk_import_gets_its_own_account_patient_and_consultation(
    app, catalogue, manager
):
    """The batched INSERTs hand back ids by each row's key (login, account, public id): every
    row ends with the patient, account, consultation and SMS of its own phone, across chunks."""
    from app.extensions import db
    from models import Consultation, OblakoUser, OutboundMessage, Patient, ReferralImportRow

    rows = [
        row(
            phone=f"+7912346{n:04d}",
            name=f"Пациентова{n} Анна",
            email=f"Patient{n}@Example.org" if n % 3 == 0 else "",
        )
        for n in range(1, 24)
    ]
    import_id = _validate(app, manager, xlsx(rows))
    _import(app, import_id, chunk_size=7)
    with app.app_context():
        imported = list(
            db.session.execute(
                select(ReferralImportRow).where(ReferralImportRow.import_id == import_id)
            ).scalars()
        )
        assert len(imported) == 23 and {r.outcome for r in imported} == {"imported"}
        for r in imported:
            patient = db.session.get(Patient, r.patient_id)
            user = db.session.get(OblakoUser, patient.user_id)
            assert patient.phone == user.username == r.data["phone"]
            assert patient.surname == user.last_name == r.data["surname"]
            consultation = db.session.execute(
                select(Consultation).where(Consultation.referral_row_id == r.id)
            ).scalar_one()
            assert consultation.id == r.data["consultation_id"]
            assert consultation.patient_id == patient.id
            sms = db.session.execute(
                select(OutboundMessage).where(OutboundMessage.user_id == user.id)
            ).scalar_one()
            assert sms.recipient == patient.phone
            assert invitation(sms.body)["login"] == patient.phone
        assert _count(app, OblakoUser, func.lower(OblakoUser.email).like("patient%")) == 7
