"""What every part of the referral pathway shares: its error, the table's columns (the Russian
headers the regional specialists see), the outcomes of a row, and small helpers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from app.errors import DomainError


class ReferralError(DomainError):
    """The file or the action was refused; nothing was saved."""


# ---------------------------------------------------------------------------------------------
# The table's columns
# ---------------------------------------------------------------------------------------------

# key, Russian header (what the regional specialists see), whether the column must be present
TEMPLATE_COLUMNS: list[tuple[str, str, bool]] = [
    ("full_name", "ФИО", True),
    ("birth_date", "дата рождения", True),
    ("sex", "пол", True),
    ("phone", "телефон", True),
    ("email", "e-mail", False),
    ("snils", "СНИЛС", False),
    ("icd10", "код МКБ-10", True),
    ("disease", "заболевание из перечня", True),
    ("centre", "центр", True),
    ("referring_org", "направившая медицинская организация", True),
    ("physician", "лечащий врач", True),
    ("note", "примечание", False),
]
HEADERS = {key: header for key, header, _required in TEMPLATE_COLUMNS}

# Outcomes of a row (docs/referrals-contract.md).
PENDING, INVALID, IMPORTED, LINKED = "pending", "invalid", "imported", "linked"
DONE_OUTCOMES = (IMPORTED, LINKED)


def cell_letter(index: int) -> str:
    """The spreadsheet's column letter of a 0-based column index (0 → A)."""
    from openpyxl.utils import get_column_letter

    return get_column_letter(index + 1)


def present(value: Any) -> bool:
    """A cell with something in it (not None, not only spaces)."""
    return value is not None and str(value).strip() != ""


def chunks(items: list, size: int = 500) -> Iterator[list]:
    """Slices of at most `size`: the IN lists of the set-based look-ups stay short."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
