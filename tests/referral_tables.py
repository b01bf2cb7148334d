"""Referral tables as a centre sends them (XLSX and CSV bytes, the template's Russian header),
built in memory for the referral import tests (test_referrals_*, test_referral_views)."""

from __future__ import annotations

import io
import re

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


# The invitation SMS as a patient reads it (app/referrals/invitations.py), spelt out here rather
# than read from the app: this is the check. The labels are the sign-in form's.
INVITATION_RE = re.compile(
    r"^Облако здоровья: вас приглашают на онлайн-консультацию\.\n"
    r"Войти одним нажатием: (?P<link>\S+/s/[A-Za-z0-9_-]{22})\n"
    r"Или на (?P<url>\S+)\n"
    r"Телефон \(логин\): (?P<login>\+\d+)\n"
    r"Пароль: (?P<password>[a-z0-9]+)\n"
    r"Ссылка и пароль действуют 7 дней\.$"
)


def invitation(body: str) -> re.Match:
    """The invitation SMS's parts (link, url, login, password); fails on any other text."""
    match = INVITATION_RE.match(body)
    assert match, f"not an invitation SMS: {body!r}"
    return match
