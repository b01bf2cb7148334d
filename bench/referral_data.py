"""The referral import bench's data, the same for both sides: the XLSX file (the template's
first sheet, «Направления», with N valid rows) and the world each measured subprocess sets up on
its fresh database before the clock starts (roles, the catalogue, the centres taking the
cardiology diseases, one Manager). Kept apart so that the pipeline and the baseline plainly read
the same file into the same world.
"""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

from common import BENCH_PASSWORD, NAMES, SURNAMES
from flask import Flask
from sqlalchemy import select

CENTRES = ("Кардиоцентр им. Бакулева", "Центр сердца Сибирь", "Северо-Западный центр")
SIGN_IN_URL = "http://localhost/login/"  # what the view puts in the SMS under the test client

PATRONYMICS = ["Петрович", "Ивановна", "Сергеевич", "Алексеевна", ""]
ORGS = ["ГБУЗ «Районная больница №3»", "ЦРБ г. Мирный", "Поликлиника №12"]


# ---------------------------------------------------------------------------------------------
# The file
# ---------------------------------------------------------------------------------------------


def _snils(n: int) -> str:
    """A distinct СНИЛС with a correct control number (app.referrals.validation.normalize_snils)."""
    number = f"{2_000_000 + n:09d}"
    total = sum(int(d) * (9 - i) for i, d in enumerate(number))
    control = total if total < 100 else (0 if total in (100, 101) else total % 101)
    control = 0 if control == 100 else control
    return f"{number[:3]}-{number[3:6]}-{number[6:]} {control:02d}"


def build_xlsx(path: Path, rows: int, codes: list[str]) -> None:
    """The template's first sheet («Направления», the Russian headers) with `rows` valid rows:
    distinct phones, real birth dates (a date cell in even rows, DD.MM.YYYY text in odd ones,
    as a filled template has both), a catalogue disease and a centre; an e-mail and a СНИЛС in
    every other row (both optional in the template)."""
    from openpyxl import Workbook

    from app.referrals.common import TEMPLATE_COLUMNS

    wb = Workbook(write_only=True)
    ws = wb.create_sheet("Направления")
    ws.append([header for _key, header, _required in TEMPLATE_COLUMNS])
    for n in range(rows):
        born = date(1940 + n % 60, 1 + n % 12, 1 + n % 28)
        sex = "ж" if n % 2 else "м"
        surname = SURNAMES[n % 8] + ("а" if sex == "ж" else "")
        values = {
            "full_name": f"{surname}{n} {NAMES[n % 8]} {PATRONYMICS[n % 5]}".strip(),
            "birth_date": datetime(born.year, born.month, born.day)
            if n % 2 == 0
            else born.strftime("%d.%m.%Y"),
            "sex": sex,
            "phone": f"+7 912 {100 + n // 10_000:03d}-{n % 10_000 // 100:02d}-{n % 100:02d}",
            "email": f"patient{n}@example.ru" if n % 2 == 0 else None,
            "snils": _snils(n) if n % 2 == 1 else None,
            "icd10": codes[n % len(codes)],
            "disease": None,
            "centre": CENTRES[n % len(CENTRES)],
            "referring_org": ORGS[n % len(ORGS)],
            "physician": "Петров П. П.",
            "note": "",
        }
        ws.append([values[key] for key, _header, _required in TEMPLATE_COLUMNS])
    wb.save(path)


# ---------------------------------------------------------------------------------------------
# The world (in each child, on its fresh database)
# ---------------------------------------------------------------------------------------------


def set_up_world(app: Flask) -> list[str]:
    """Roles, the catalogue, the centres (taking the cardiology diseases), one Manager.
    Returns the ICD-10 codes the rows may use."""
    from app.accounts import create_manager
    from app.catalogue import load_catalogue
    from app.demo import ensure_roles
    from app.extensions import db
    from models import Disease, MedicalCenter

    with app.app_context():
        ensure_roles()
        load_catalogue()
        diseases = list(
            db.session.execute(
                select(Disease).where(Disease.profile == "cardiology").order_by(Disease.id)
            ).scalars()
        )
        for name in CENTRES:
            centre = MedicalCenter(name=name, profile="cardiology", region="Москва")
            db.session.add(centre)
            centre.diseases.extend(diseases)
        create_manager(
            username="bench-manager",
            password=BENCH_PASSWORD,
            first_name="Анна",
            last_name="Менеджерова",
            email="bench-manager@example.org",
        )
        db.session.commit()
        return [d.icd10_code for d in diseases]


def _catalogue_codes() -> list[str]:
    """The cardiology ICD-10 codes of the catalogue (what set_up_world links to the centres)."""
    from app.catalogue import DISEASES

    return [code for code, _name, profile, _required in DISEASES if profile == "cardiology"]
