"""Who may open the reports, and who sees personal data in them.

The reports count consultations and never name the patient. Only the referral progress (which
row became which patient) and the outbox failures (which address bounced) carry a patient's
name, phone or address, and only for PERSONAL_DATA_ROLES (Manager, Admin): the managers run the
referral pathway and resend failed messages, so they see these on their own screens already.
Anyone else given a report would get the same rows without those columns.
"""

from __future__ import annotations

from app.permissions import ADMIN, MANAGER
from app.roles import role_names

REPORT_ROLES = frozenset({MANAGER, ADMIN})
PERSONAL_DATA_ROLES = frozenset({MANAGER, ADMIN})


def may_see_reports(user) -> bool:
    return bool(REPORT_ROLES & role_names(user))


def may_see_personal_data(user) -> bool:
    return bool(PERSONAL_DATA_ROLES & role_names(user))
