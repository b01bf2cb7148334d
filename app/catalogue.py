"""The reference catalogue: document types and the diseases a consultation may be asked for.

Loaded by `flask oblako init` (every setup and release) and `flask oblako demo-data`; managers
maintain it afterwards through the screens.
"""

from __future__ import annotations

import re

from app.extensions import db
from models import Disease, DocumentType

# code, Russian name, English name
DOCUMENT_TYPES: list[tuple[str, str, str]] = [
    ("discharge", "Выписка", "Discharge summary"),
    ("conclusion", "Заключение врача", "Doctor's conclusion"),
    ("ultrasound", "УЗИ", "Ultrasound"),
    ("mri", "МРТ", "MRI"),
    ("ct", "КТ", "CT"),
    ("lab", "Результаты анализов", "Lab results"),
    ("ecg", "ЭКГ", "ECG"),
    ("other", "Другое", "Other"),
]

# ICD-10 code, name, profile, required document type codes
DISEASES: list[tuple[str, str, str, list[str]]] = [
    ("I10", "Эссенциальная (первичная) гипертензия", "cardiology", ["conclusion", "ecg", "lab"]),
    ("I20", "Стенокардия", "cardiology", ["conclusion", "ecg", "ultrasound"]),
    (
        "I25",
        "Хроническая ишемическая болезнь сердца",
        "cardiology",
        ["discharge", "ecg", "ultrasound"],
    ),
    ("I48", "Фибрилляция и трепетание предсердий", "cardiology", ["conclusion", "ecg"]),
    ("I50", "Сердечная недостаточность", "cardiology", ["discharge", "ultrasound", "lab"]),
    (
        "Q21",
        "Врождённые аномалии сердечной перегородки",
        "cardiology",
        ["conclusion", "ultrasound"],
    ),
    ("D25", "Лейомиома матки", "gynaecology", ["conclusion", "ultrasound"]),
    ("N80", "Эндометриоз", "gynaecology", ["conclusion", "ultrasound", "mri"]),
    ("N83", "Невоспалительные болезни яичника", "gynaecology", ["conclusion", "ultrasound"]),
    ("N95", "Нарушения менопаузы и перименопаузы", "gynaecology", ["conclusion", "lab"]),
    ("N97", "Женское бесплодие", "gynaecology", ["conclusion", "ultrasound", "lab"]),
]

PROFILES = {"cardiology", "gynaecology"}

# ICD-10: a letter, two digits, optionally a dot and one or two more digits (A00, I21.0, M54.16).
ICD10_RE = re.compile(r"^[A-Z][0-9]{2}(\.[0-9]{1,2})?$")
# Doctors and regional specialists type on a Russian keyboard: Cyrillic letters that look like
# Latin ones are taken for the Latin letter ("С34" with a Cyrillic Es is C34), "I21,0" for I21.0.
_LOOKALIKES = str.maketrans("АВСЕНІКМОРТХУ", "ABCEHIKMOPTXY")


def normalize_icd10(raw: str | None) -> str:
    code = (raw or "").strip().upper().translate(_LOOKALIKES).replace(",", ".")
    return re.sub(r"\s+", "", code)


def valid_icd10(code: str) -> bool:
    return bool(ICD10_RE.match(code))


def load_catalogue() -> dict[str, DocumentType]:
    """Create what is missing; never overwrite what managers have edited."""
    types = {t.code: t for t in db.session.query(DocumentType).all()}
    for order, (code, name, name_en) in enumerate(DOCUMENT_TYPES):
        if code not in types:
            types[code] = DocumentType(code=code, name=name, name_en=name_en, sort_order=order)
            db.session.add(types[code])
    existing = {d.icd10_code for d in db.session.query(Disease).all()}
    for code, name, profile, required in DISEASES:
        if code not in existing:
            db.session.add(
                Disease(
                    icd10_code=code,
                    name=name,
                    profile=profile,
                    required_document_types=[types[r] for r in required],
                )
            )
    db.session.flush()
    return types
