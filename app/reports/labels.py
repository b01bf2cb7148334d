"""The reports' vocabulary: the labels of kinds, statuses and outcomes, the reports' titles,
and which statuses a report covers. A consultation's number is models.Consultation.label,
selected by the database for pages and exports alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask_babel import lazy_gettext as _l

from models import (
    ConsultationKind,
    ConsultationStatus,
)

OUTCOMES = ("in_time", "late", "overdue", "waiting", "withdrawn")
OUTCOME_LABELS = {
    "in_time": _l("Within the promised time"),
    "late": _l("Scheduled late"),
    "overdue": _l("Overdue, not scheduled"),
    "waiting": _l("Waiting, not due yet"),
    "withdrawn": _l("Withdrawn before the due time"),
}
CANCEL_BY_LABELS = {
    "patient": _l("Patient"),
    "staff": _l("Clinic staff"),
    "system": _l("System"),
    "missed": _l("Did not take place"),
}
ROW_OUTCOME_LABELS = {
    "pending": _l("Waiting for import"),
    "invalid": _l("Error"),
    "imported": _l("Account created"),
    "linked": _l("Linked to a registered patient"),
}

REPORT_TITLES = {
    "consultations": _l("Consultations"),
    "sla": _l("Service level"),
    "load": _l("Doctor load"),
    "cancellations": _l("Cancellations and missed consultations"),
    "referrals": _l("Referral imports"),
    "outbox": _l("Outbound messages"),
}

# The kinds that carry a promise (due_by): the service-level report covers these only.
SLA_KINDS = (ConsultationKind.CENTRE_REQUEST, ConsultationKind.REFERRAL)
# An application waiting for the doctor's answer.
QUEUE_STATUSES = (ConsultationStatus.REQUESTED, ConsultationStatus.NEEDS_DOCUMENTS)
# The doctor-load report's columns: what became of the appointments in the period.
LOAD_STATUSES = (
    ConsultationStatus.SCHEDULED,
    ConsultationStatus.IN_PROGRESS,
    ConsultationStatus.COMPLETED,
    ConsultationStatus.CANCELLED,
    ConsultationStatus.MISSED,
)


def labels(mapping: Mapping[str, Any]) -> dict[str, str]:
    """The label dictionary rendered once in the current locale (exports look up per row)."""
    return {key: str(value) for key, value in mapping.items()}
