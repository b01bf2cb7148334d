"""Referral tables as a centre sends them (XLSX and CSV bytes, the template's Russian header),
built in memory for the referral import tests (test_referrals, test_referral_views)."""

from __future__ import annotations

import io

from tests.conftest import REFERRAL_CENTRE

HEADER = [
    "ФИО",
    "дата рождения",
    "пол",
    "телефон",
    "e-mail",
    "СНИЛС",
    "код МКБ-10",
    "заболевание из перечня",
    "центр",
    "направившая медицинская организация",
    "лечащий врач",
    "примечание",
]


CENTRE = REFERRAL_CENTRE  # the centre the `catalogue` fixture makes


def row(
    name="Иванова Мария Петровна",
    born="15.03.1975",
    sex="ж",
    phone="+79123450001",
    email="",
    snils="",
    code="I10",
    disease="",
    centre=CENTRE,
    note="",
):
    return [
        name,
        born,
        sex,
        phone,
        email,
        snils,
        code,
        disease,
        centre,
        "ЦРБ",
        "Петров П. П.",
        note,
    ]


def xlsx(rows, header=HEADER) -> bytes:
    from openpyxl import Workbook

    wb = Workbook()
    ws = wb.active
    ws.append(header)
    for r in rows:
        ws.append(r)
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()


def csv_bytes(rows, *, sep=";", encoding="utf-8-sig", header=HEADER) -> bytes:
    lines = [sep.join(header)] + [sep.join(r) for r in rows]
    return "\r\n".join(lines).encode(encoding)
