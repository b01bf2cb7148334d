"""The empty referral table the manager downloads: the template sheet, an example row and the
catalogue (diseases and the centres that take them) on separate sheets."""

from __future__ import annotations

import io

from sqlalchemy import select

from app.extensions import db
from app.referrals.common import TEMPLATE_COLUMNS, cell_letter
from models import Disease, MedicalCenter


def build_template_xlsx() -> bytes:
    """The empty table (first sheet) with an example and the catalogue on separate sheets."""
    from openpyxl import Workbook
    from openpyxl.styles import Font

    wb = Workbook()
    ws = wb.active
    ws.title = "Направления"
    ws.append([header for _key, header, _required in TEMPLATE_COLUMNS])
    for cell in ws[1]:
        cell.font = Font(bold=True)
    for index, (_key, header, _required) in enumerate(TEMPLATE_COLUMNS):
        ws.column_dimensions[cell_letter(index)].width = max(14, len(header) + 4)
    ws.freeze_panes = "A2"

    example = wb.create_sheet("Пример")
    example.append([header for _key, header, _required in TEMPLATE_COLUMNS])
    example.append(
        [
            "Иванова Мария Петровна",
            "15.03.1975",
            "ж",
            "+7 912 345-67-89",
            "",
            "112-233-445 95",
            "I10",
            "Эссенциальная (первичная) гипертензия",
            "Название центра из справочника",
            "ГБУЗ «Районная больница»",
            "Петров П. П.",
            "",
        ]
    )
    ref = wb.create_sheet("Справочник")
    ref.append(["код МКБ-10", "заболевание из перечня", "центры"])
    diseases = db.session.execute(
        select(Disease).where(Disease.active.is_(True)).order_by(Disease.icd10_code)
    ).scalars()
    for disease in diseases:
        centres = ", ".join(c.name for c in disease.centers if c.active)
        ref.append([disease.icd10_code, disease.name, centres])
    ref.append([])
    ref.append(["центр"])
    for centre in db.session.execute(
        select(MedicalCenter).where(MedicalCenter.active.is_(True)).order_by(MedicalCenter.name)
    ).scalars():
        ref.append([centre.name])
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()
