"""Demo data for a newcomer's first run: `flask oblako demo-data` (idempotent)."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select

from app.accounts import create_doctor, create_manager, create_patient, get_role
from app.catalogue import load_catalogue
from app.extensions import db
from app.permissions import ROLE_MATRIX
from app.scheduling import generate_slots
from models import Doctor, DutyShift, MedicalCenter, OblakoUser, Patient, utcnow

# Demo passwords are printed by `make run` and listed in the README; never use them in production.
DEMO_PASSWORD_STAFF = "Oblako2026"
DEMO_PASSWORD_PATIENT = "Pacient2026"

DEMO_LOGINS: list[tuple[str, str, str]] = [
    ("Admin", "admin", "Admin2026x"),
    ("Manager", "manager", DEMO_PASSWORD_STAFF),
    ("Doctor", "cardio", DEMO_PASSWORD_STAFF),
    ("Doctor", "gyn", DEMO_PASSWORD_STAFF),
    ("DutyDoctor", "duty1", DEMO_PASSWORD_STAFF),
    ("DutyDoctor", "duty2", DEMO_PASSWORD_STAFF),
    ("Patient", "+79120000001", DEMO_PASSWORD_PATIENT),
    ("Patient", "+79120000002", DEMO_PASSWORD_PATIENT),
    ("Patient", "+79120000003", DEMO_PASSWORD_PATIENT),
]

CENTERS = [
    (
        "Центр сердечно-сосудистой хирургии",
        "cardiology",
        "Кардиология и сердечно-сосудистая хирургия: консультации по заключению лечащего врача.",
    ),
    (
        "Центр охраны здоровья матери и ребёнка",
        "gynaecology",
        "Гинекология и репродуктивное здоровье: консультации по заключению лечащего врача.",
    ),
]

PATIENTS = [
    (
        "Иванова",
        "Мария",
        "Петровна",
        date(1968, 3, 14),
        "female",
        "+79120000001",
        "maria@example.org",
        "Республика Саха (Якутия)",
        "Asia/Yakutsk",
    ),
    (
        "Петров",
        "Сергей",
        "Николаевич",
        date(1957, 11, 2),
        "male",
        "+79120000002",
        "petrov@example.org",
        "Камчатский край",
        "Asia/Kamchatka",
    ),
    (
        "Смирнова",
        "Ольга",
        "Андреевна",
        date(1985, 6, 25),
        "female",
        "+79120000003",
        None,
        "Калининградская область",
        "Europe/Kaliningrad",
    ),
]


def ensure_roles() -> None:
    for name in ROLE_MATRIX:
        get_role(name)


def _user_exists(username: str) -> bool:
    stmt = select(OblakoUser.id).where(OblakoUser.username == username)
    return db.session.execute(stmt).first() is not None


def load_demo_data() -> bool:
    """Create the demo world unless it is already there. Returns True when it created it."""
    ensure_roles()
    types = load_catalogue()
    if _user_exists("manager"):
        return False
    from app.accounts import create_user
    from app.permissions import ADMIN

    create_user(
        username="admin",
        password="Admin2026x",
        role_names=[ADMIN],
        first_name="Админ",
        last_name="Системный",
        email="admin@oblako.invalid",
    )
    create_manager(
        username="manager",
        password=DEMO_PASSWORD_STAFF,
        first_name="Анна",
        last_name="Менеджерова",
        email="manager@oblako.invalid",
    )
    centers = {}
    for name, profile, description in CENTERS:
        center = db.session.execute(
            select(MedicalCenter).where(MedicalCenter.name == name)
        ).scalar_one_or_none()
        if center is None:
            center = MedicalCenter(
                name=name, profile=profile, region="Москва", description=description
            )
            db.session.add(center)
        centers[profile] = center
    db.session.flush()
    from models import Disease

    for disease in db.session.execute(select(Disease)).scalars():
        center = centers.get(disease.profile)
        if center is not None and center not in disease.centers:
            disease.centers.append(center)

    create_doctor(
        username="cardio",
        password=DEMO_PASSWORD_STAFF,
        surname="Сердцев",
        name="Алексей",
        patronymic="Викторович",
        specialty="Кардиолог",
        email="cardio@oblako.invalid",
        center_id=centers["cardiology"].id,
        is_duty=False,
    )
    create_doctor(
        username="gyn",
        password=DEMO_PASSWORD_STAFF,
        surname="Берегова",
        name="Елена",
        patronymic="Игоревна",
        specialty="Гинеколог",
        email="gyn@oblako.invalid",
        center_id=centers["gynaecology"].id,
        is_duty=False,
    )
    duty = [
        create_doctor(
            username="duty1",
            password=DEMO_PASSWORD_STAFF,
            surname="Дежурнов",
            name="Игорь",
            patronymic="Павлович",
            specialty="Терапевт, кардиолог",
            email="duty1@oblako.invalid",
            center_id=None,
            is_duty=True,
        ),
        create_doctor(
            username="duty2",
            password=DEMO_PASSWORD_STAFF,
            surname="Ночная",
            name="Светлана",
            patronymic="Олеговна",
            specialty="Акушер-гинеколог",
            email="duty2@oblako.invalid",
            center_id=None,
            is_duty=True,
        ),
    ]
    _demo_shifts(duty)
    for surname, name, patronymic, born, sex, phone, email, region, tz in PATIENTS:
        patient = create_patient(
            surname=surname,
            name=name,
            patronymic=patronymic,
            birth_date=born,
            sex=sex,
            phone=phone,
            email=email,
            region=region,
            timezone=tz,
            password=DEMO_PASSWORD_PATIENT,
        )
        from app.accounts import record_consent
        from models import ConsentKind

        record_consent(patient.user, ConsentKind.PERSONAL_DATA)
        _demo_documents(patient, types)
    db.session.flush()
    return True


def _demo_shifts(doctors: list[Doctor]) -> None:
    """Shifts for the next 7 days, 09:00–13:00 and 14:00–18:00 Moscow time."""
    moscow = ZoneInfo("Europe/Moscow")
    today = utcnow().astimezone(moscow).date()
    for offset in range(7):
        day = today + timedelta(days=offset)
        for doctor, (start, end) in zip(doctors, [(9, 13), (14, 18)], strict=True):
            shift = DutyShift(
                doctor_id=doctor.id,
                starts_at=datetime.combine(day, time(start), moscow),
                ends_at=datetime.combine(day, time(end), moscow),
                slot_minutes=30,
                topics="Профилактика, лечение и реабилитация; вопросы ЗОЖ",
            )
            db.session.add(shift)
            db.session.add_all(generate_slots(shift))


def _demo_documents(patient: Patient, types: dict) -> None:
    """Each demo patient gets a discharge summary (PDF) and an ECG (PNG)."""
    from app.documents.demo import store_demo_documents

    store_demo_documents(patient, types)
