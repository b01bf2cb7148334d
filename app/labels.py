"""Words for a consultation's status and kind, one mapping per audience.

- PATIENT_*: the patient's words («Заявка отправлена», «Нужны документы»), on every page about
  one consultation — the cabinet, and the care screens the doctor shares with the patient's
  case — so that both sides name a status the same way when they talk.
- STAFF_*: the registry's words («Запрошена», «Требуются документы»), on the staff lists and in
  reports and their exports, where a status is a column to filter and count.

Both mappings cover every ConsultationStatus / ConsultationKind (tests/test_structure.py).
"""

from __future__ import annotations

from flask_babel import lazy_gettext as _l

from models import ConsultationKind, ConsultationStatus, OutboundChannel, OutboundStatus, Sex

PATIENT_STATUS_LABELS = {
    ConsultationStatus.AWAITING_DOCUMENTS: _l("Awaiting documents"),
    ConsultationStatus.REQUESTED: _l("Application sent"),
    ConsultationStatus.NEEDS_DOCUMENTS: _l("Documents needed"),
    ConsultationStatus.SCHEDULED: _l("Scheduled"),
    ConsultationStatus.IN_PROGRESS: _l("In progress"),
    ConsultationStatus.COMPLETED: _l("Completed"),
    ConsultationStatus.REJECTED: _l("Rejected"),
    ConsultationStatus.CANCELLED: _l("Cancelled"),
    ConsultationStatus.MISSED: _l("Missed"),
}
# The registry's words where they differ; the rest are the same words for everyone.
STAFF_STATUS_LABELS = {
    **PATIENT_STATUS_LABELS,
    ConsultationStatus.REQUESTED: _l("Requested"),
    ConsultationStatus.NEEDS_DOCUMENTS: _l("Needs documents"),
}

PATIENT_KIND_LABELS = {
    ConsultationKind.CENTRE_REQUEST: _l("Application to a medical centre"),
    ConsultationKind.DUTY: _l("Duty doctor"),
    ConsultationKind.REFERRAL: _l("Referral from the treating physician"),
}
STAFF_KIND_LABELS = {
    ConsultationKind.CENTRE_REQUEST: _l("Centre request"),
    ConsultationKind.DUTY: _l("Duty doctor"),
    ConsultationKind.REFERRAL: _l("Referral"),
}

# The outbox, as staff read it (the Outbox screen and the managers' reports).
CHANNEL_LABELS = {OutboundChannel.SMS: _l("SMS"), OutboundChannel.EMAIL: _l("E-mail")}
OUTBOUND_STATUS_LABELS = {
    OutboundStatus.QUEUED: _l("Queued"),
    OutboundStatus.SENT: _l("Sent"),
    OutboundStatus.FAILED: _l("Failed"),
}

# One audience: the same words for the patient's profile and the staff's patient card.
SEX_LABELS = {Sex.FEMALE: _l("Female"), Sex.MALE: _l("Male")}
