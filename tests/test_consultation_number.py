"""The consultation number (issue 16): one rule in models.py, the same number everywhere.

- The database gives the numbers: consultations created at once over HTTP (applications and
  duty bookings, in two web processes) get distinct, consecutive numbers; a referral import's
  bulk insert takes its chunk's numbers in one go and the next consultation follows on.
- A patient reads the same number on the page, in the SMS, on the conclusion PDF; staff find
  the consultation by typing it, with or without separators, within their own scope.
- Migration 0014 numbers existing consultations in creation order within their year.
"""

from __future__ import annotations

import io
import re
import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from tests.conftest import (
    REFERRAL_CENTRE,
    TEST_PASSWORD,
    add_shift,
    consultation_number,
    csrf_token,
    login,
    patient_username,
)
from tests.web_process import HttpClient

YEAR = f"{datetime.now(UTC).year % 100:02d}"


def numbers_in_db(app) -> list[str]:
    from app.extensions import db
    from models import Consultation

    with app.app_context():
        return list(
            db.session.execute(select(Consultation.number).order_by(Consultation.id)).scalars()
        )


def counter(app) -> dict[int, int]:
    from app.extensions import db
    from models import ConsultationNumberCounter as N

    with app.app_context():
        return {y: n for y, n in db.session.execute(select(N.year, N.last_number))}


# ---------------------------------------------------------------------------------------------
# The rule itself
# ---------------------------------------------------------------------------------------------


@pytest.mark.no_db
@pytest.mark.parametrize(
    "typed,digits",
    [
        ("26-42", "2642"),
        ("2642", "2642"),
        ("№ 26-42", "2642"),
        ("№26-042", "2642"),  # a zero said aloud on the phone
        (" 26 42 ", "2642"),
        ("26/42", "2642"),
        ("26–42", "2642"),  # an en dash from a word processor
        ("26-100000", "26100000"),
        ("42", None),  # no year: not a number of ours
        ("", None),
        ("абв", None),
        ("26-4-2", None),
        ("1" * 100, None),
    ],
)
def test_typed_number_is_read_as_the_stored_digits(typed, digits):
    from models import typed_consultation_number

    assert typed_consultation_number(typed) == digits


@pytest.mark.no_db
def test_the_number_is_shown_with_the_year_apart():
    from models import Consultation, format_consultation_number

    assert format_consultation_number("2642") == "26-42"
    assert format_consultation_number("26100000") == "26-100000"
    assert str(Consultation(number="2642")) == "№26-42"


def test_the_database_spells_the_number_as_python_does(app, make_patient):
    """Reports and exports select Consultation.label / display_number in SQL (millions of
    rows): the database must give what str(consultation) gives."""
    from app.extensions import db
    from models import Consultation

    patient_id = make_patient()
    with app.app_context():
        made = [
            Consultation(kind="duty", status="scheduled", patient_id=patient_id) for _ in range(12)
        ]
        db.session.add_all(made)
        db.session.commit()
        rows = db.session.execute(
            select(Consultation.id, Consultation.display_number, Consultation.label)
        ).all()
        by_id = {c.id: c for c in made}
        assert len(rows) == 12
        for id_, display, label in rows:
            assert (display, label) == (by_id[id_].display_number, str(by_id[id_]))
        assert str(by_id[max(by_id)]) == f"№{YEAR}-12"


# ---------------------------------------------------------------------------------------------
# Allocation under concurrency: every way of creating a consultation
# ---------------------------------------------------------------------------------------------

APPLICANTS = 6
BOOKERS = 4


def _hidden(html: str, name: str) -> str:
    match = re.search(rf'name="{name}"[^>]*value="([^"]+)"', html) or re.search(
        rf'value="([^"]+)"[^>]*name="{name}"', html
    )
    assert match, f"no {name} on the page"
    return match.group(1)


def _signed_in(base_url: str, username: str) -> HttpClient:
    client = HttpClient(base_url)
    token = client.csrf_token("/login/")
    answer = client.post(
        "/login/", {"username": username, "password": TEST_PASSWORD, "csrf_token": token}
    )
    assert answer.status == 302 and "/login" not in answer.headers["Location"], answer
    return client


def _application_form(page: str, centre: str) -> dict[str, str]:
    """The «Новая заявка» form filled in with a typed diagnosis (no catalogue disease)."""
    return {
        "csrf_token": _hidden(page, "csrf_token"),
        "form_token": _hidden(page, "form_token"),
        "centre": centre,
        "disease": "",
        "diagnosis_text": "Нарушение ритма сердца",
        "complaints": "Перебои в работе сердца",
    }


def test_concurrent_creations_over_http_get_distinct_consecutive_numbers(
    app, make_patient, make_center, make_doctor, web_process_factory
):
    from app.extensions import db
    from models import MedicalCenter

    centre_id = make_center("Кардиоцентр")
    with app.app_context():
        centre = str(db.session.get(MedicalCenter, centre_id).public_id)
    tomorrow = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=1)
    slots = add_shift(app, make_doctor(is_duty=True), tomorrow, slots=BOOKERS)
    hosts = [web_process_factory().url, web_process_factory().url]  # two web hosts

    posts: list[tuple[HttpClient, str, dict]] = []
    for i in range(APPLICANTS + BOOKERS):
        client = _signed_in(hosts[i % 2], patient_username(app, make_patient()))
        if i < APPLICANTS:
            path = f"/cabinet/applications/new?centre={centre}"
            form = _application_form(client.get(path).text, centre)
        else:
            path = f"/cabinet/booking/{slots[i - APPLICANTS]}"
            page = client.get(path).text
            form = {"csrf_token": _hidden(page, "csrf_token"), "question": "", "mode": "video"}
        posts.append((client, path, form))

    barrier = threading.Barrier(len(posts))
    answers: list = [None] * len(posts)

    def post(i: int) -> None:
        client, path, form = posts[i]
        barrier.wait(timeout=60)
        answers[i] = client.post(path, form)

    threads = [threading.Thread(target=post, args=(i,)) for i in range(len(posts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=180)

    assert [a.status for a in answers] == [302] * len(posts), [
        (a.status, a.text[:300]) for a in answers
    ]
    numbers = numbers_in_db(app)
    assert len(numbers) == len(posts)
    # Distinct and consecutive: 1…N of this year, none skipped, none twice.
    assert sorted(numbers, key=lambda n: int(n[2:])) == [
        f"{YEAR}{n}" for n in range(1, len(posts) + 1)
    ]
    assert counter(app) == {int(YEAR): len(posts)}


def test_a_referral_import_numbers_its_whole_chunk_and_the_next_one_follows(app, catalogue):
    """The chunked import inserts its consultations in one executemany: they take their
    numbers in one statement, and a consultation created afterwards gets the next one."""
    from sqlalchemy import event

    from app.extensions import db
    from app.referrals.common import TEMPLATE_COLUMNS
    from app.referrals.importer import run_import
    from app.referrals.validation import validate_upload
    from models import Consultation

    rows = [";".join(header for _key, header, _required in TEMPLATE_COLUMNS)] + [
        f"Иванова{i} Мария Петровна;15.03.1975;ж;+7912345000{i};;;I10;;{REFERRAL_CENTRE};ЦРБ;"
        "Петров П. П.;"
        for i in range(5)
    ]
    upserts: list[str] = []

    def watch(conn, cursor, statement, *args) -> None:
        if "consultation_number_counter" in statement:
            upserts.append(statement)

    with app.app_context():
        imp = validate_upload(None, "t.csv", "\r\n".join(rows).encode("utf-8-sig"))
        db.session.commit()
        assert imp.valid_rows == 5
        event.listen(db.engine, "before_cursor_execute", watch)
        try:
            run_import(imp.id, sign_in_url="https://oblako.test/login/")
        finally:
            event.remove(db.engine, "before_cursor_execute", watch)
        patient_id = db.session.execute(select(Consultation.patient_id).limit(1)).scalar_one()
    assert len(upserts) == 1, upserts  # the whole chunk's numbers in one statement
    assert sorted(numbers_in_db(app), key=lambda n: int(n[2:])) == [
        f"{YEAR}{n}" for n in range(1, 6)
    ]
    with app.app_context():
        later = Consultation(kind="duty", status="scheduled", patient_id=patient_id)
        db.session.add(later)
        db.session.commit()
        assert later.number == f"{YEAR}6"


# ---------------------------------------------------------------------------------------------
# The same number on the page, in the SMS, on the PDF, and in the staff search
# ---------------------------------------------------------------------------------------------

CARE = "/care/consultations"


def _client(app, username: str):
    client = app.test_client()
    assert login(client, username).status_code == 302
    return client


def _post(client, url: str, data: dict | None = None):
    token = csrf_token(client, "/account/password/")
    return client.post(url, data={**(data or {}), "csrf_token": token})


def _sms_to(app, phone: str) -> list[str]:
    from app.extensions import db
    from models import OutboundChannel, OutboundMessage

    with app.app_context():
        return list(
            db.session.execute(
                select(OutboundMessage.body).where(
                    OutboundMessage.recipient == phone,
                    OutboundMessage.channel == OutboundChannel.SMS,
                )
            ).scalars()
        )


def _pdf_text(data: bytes) -> str:
    from pypdf import PdfReader

    return " ".join(
        " ".join(page.extract_text().split()) for page in PdfReader(io.BytesIO(data)).pages
    )


def _listed(page: str) -> list[str]:
    """The numbers in the staff list's number column."""
    return re.findall(r"<td>\s*(\d{2}-\d+)\s*</td>", page)


def test_the_same_number_on_the_page_in_the_sms_on_the_pdf_and_in_search(
    app, make_patient, make_center, make_doctor
):
    from app.extensions import db
    from models import Conclusion, Consultation, MedicalCenter, Patient

    centre_id = make_center("Кардиоцентр «Сердце»")
    make_doctor(username="num_doc", center_id=centre_id)
    make_doctor(username="num_other", center_id=make_center("Онкоцентр"))
    patient_id = make_patient(surname="Смирнова")
    with app.app_context():
        centre = str(db.session.get(MedicalCenter, centre_id).public_id)
        phone = db.session.get(Patient, patient_id).phone

    # The patient applies through the real form.
    patient = _client(app, patient_username(app, patient_id))
    path = f"/cabinet/applications/new?centre={centre}"
    answer = patient.post(
        path, data=_application_form(patient.get(path).get_data(as_text=True), centre)
    )
    assert answer.status_code == 302
    public_id = answer.headers["Location"].rsplit("/", 1)[1]
    number = consultation_number(app, public_id)
    assert number == f"{YEAR}-1"
    shown = f"№{number}"

    # The doctor schedules it (an SMS to the patient), starts it (another), concludes it.
    doctor = _client(app, "num_doc")
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date()
    scheduled = _post(
        doctor,
        f"{CARE}/{public_id}/schedule",
        {"day": tomorrow.isoformat(), "at": "10:00", "duration": "30"},
    )
    assert scheduled.status_code == 302
    with app.app_context():
        db.session.execute(  # the appointment is now: the doctor may start it
            update(Consultation)
            .where(Consultation.public_id == uuid.UUID(public_id))
            .values(scheduled_at=datetime.now(UTC) + timedelta(minutes=5))
        )
        db.session.commit()
    assert _post(doctor, f"{CARE}/{public_id}/start").status_code == 302
    issued = _post(
        doctor,
        f"{CARE}/{public_id}/conclusion",
        {
            "complaints_history": "Перебои в работе сердца в течение месяца.",
            "findings": "—",
            "diagnosis": "Экстрасистолия.",
            "icd10_code": "I49.4",
            "recommendations": "Холтер ЭКГ.",
            "next_steps": "Повторная консультация.",
        },
    )
    assert issued.status_code == 302

    sms = _sms_to(app, phone)
    assert len(sms) >= 3 and all(shown in body for body in sms), sms

    for url, client in (
        (f"/cabinet/consultations/{public_id}", patient),
        ("/cabinet/consultations/", patient),
        (f"{CARE}/{public_id}", doctor),
    ):
        assert shown in client.get(url).get_data(as_text=True), url

    with app.app_context():
        conclusion = db.session.execute(
            select(Conclusion)
            .join(Consultation)
            .where(Consultation.public_id == uuid.UUID(public_id))
        ).scalar_one()
        pdf_url = f"/conclusions/{conclusion.public_id}.pdf"
    pdf = patient.get(pdf_url)
    assert pdf.status_code == 200
    assert shown in _pdf_text(pdf.data)
    assert f"-{number}-v1.pdf" in pdf.headers["Content-Disposition"]

    # Staff type the number as the patient says it; another centre's doctor finds nothing.
    search = "/staff/consultations/list/?_flt_0_number="
    for typed in (number, number.replace("-", ""), f"№ {YEAR}-01", f"{YEAR} 1"):
        page = doctor.get(search + typed)
        assert page.status_code == 200
        assert _listed(page.get_data(as_text=True)) == [number], typed
    for typed in (f"{YEAR}-2", "абв", "1" * 60):
        page = doctor.get(search + typed)
        assert page.status_code == 200
        assert _listed(page.get_data(as_text=True)) == [], typed
    other = _client(app, "num_other")
    assert _listed(other.get(search + number).get_data(as_text=True)) == []
    assert _listed(doctor.get("/staff/consultations/list/").get_data(as_text=True)) == [number]


# ---------------------------------------------------------------------------------------------
# Migration 0014 on a database that already has consultations
# ---------------------------------------------------------------------------------------------


def test_migration_numbers_existing_consultations_in_creation_order(app, scratch_database_url):
    from flask_migrate import downgrade, upgrade

    from app import create_app
    from app.extensions import db
    from models import Consultation, OblakoUser, Patient

    scratch = create_app(
        {
            **{k: app.config[k] for k in ("SECRET_KEY", "STORAGE_DIR", "REDIS_URL")},
            "TESTING": True,
            "SQLALCHEMY_DATABASE_URI": scratch_database_url,
            "RATELIMIT_STORAGE_URI": app.config["RATELIMIT_STORAGE_URI"],
            "SERVER_NAME": "localhost",
        }
    )
    created = [  # in insertion (id) order
        datetime(2026, 3, 1, 9, 0, tzinfo=UTC),
        datetime(2025, 6, 1, 12, 0, tzinfo=UTC),
        datetime(2026, 1, 5, 8, 0, tzinfo=UTC),
        datetime(2025, 6, 1, 12, 0, tzinfo=UTC),  # same moment as the second: by id
        datetime(2025, 12, 31, 23, 30, tzinfo=UTC),
    ]
    try:
        with scratch.app_context():
            upgrade()
            user = OblakoUser(
                first_name="А", last_name="Б", username="mig", email="mig@example.org", active=True
            )
            db.session.add(user)
            db.session.flush()
            patient = Patient(
                user_id=user.id,
                surname="Б",
                name="А",
                birth_date=datetime(1960, 1, 1).date(),
                sex="female",
                phone="+79120000001",
            )
            db.session.add(patient)
            db.session.flush()
            for at in created:
                db.session.add(
                    Consultation(
                        kind="duty", status="completed", patient_id=patient.id, created_at=at
                    )
                )
                db.session.flush()
            db.session.commit()
            patient_id = patient.id
            db.session.remove()

            downgrade(revision="0013")
            upgrade()

            numbers = list(
                db.session.execute(select(Consultation.number).order_by(Consultation.id)).scalars()
            )
            assert numbers == ["262", "251", "261", "252", "253"]
            last = select(Consultation.number).order_by(Consultation.id.desc()).limit(1)
            fresh = Consultation(kind="duty", status="scheduled", patient_id=patient_id)
            db.session.add(fresh)
            db.session.commit()
            expected = {"25": 4, "26": 3}.get(YEAR, 1)
            assert db.session.execute(last).scalar_one() == f"{YEAR}{expected}"
            db.session.remove()
    finally:
        with scratch.app_context():
            db.engine.dispose()
