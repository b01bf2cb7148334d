"""Consultations: the application to a centre, the status machine, row scope and staff lists.

The package is the area's public face (views and other areas import from `app.consultations`);
each module holds one responsibility:

- common.py        the error, limits and status sets, links, the acting person, and the one
                   way every transition notifies (notify_staff(), notify_patient()); each
                   audits with app.audit.audit_consultation()
- scope.py         row scope: who may open which consultation (404 for the rest)
- applications.py  pathway 1: centres and their catalogue, submit_application, and one
                   application per centre and disease (the form token, the unique index)
- transitions.py   the status machine, one function per transition
- queries.py       the centre's queue, a doctor's day, the latest conclusion

The duty booking (pathway 2) is app/booking; time zones are app/dates.
"""

from app.consultations.applications import (
    ApplicationData,
    ApplicationExists,
    active_centre,
    active_centres,
    centre_diseases,
    clean_form_token,
    document_type_label,
    missing_documents,
    new_form_token,
    submit_application,
)
from app.consultations.common import (
    ACTIVE,
    APPLICATION_DUE,
    BUSY_STATUSES,
    CANCELLABLE,
    COMPLAINTS_MAX,
    DIAGNOSIS_MAX,
    DOCUMENTS_OPEN,
    MAX_DURATION,
    MIN_DURATION,
    PATIENT_LINK,
    QUEUE_STATUSES,
    REASON_MAX,
    REFERRAL_DUE,
    ConsultationError,
    active_doctor,
    centre_doctors,
    conclusion_pdf_link,
    notify_patient,
    notify_staff,
    patient_link,
    staff_link,
)
from app.consultations.queries import (
    COUNT_CAP,
    QUEUE_PAGE_SIZE,
    QueuePage,
    doctor_day,
    doctor_queue,
    doctor_today,
)
from app.consultations.scope import (
    consultation_for_patient,
    consultation_for_staff,
    patient_consultation_condition,
)
from app.consultations.transitions import (
    attach_documents,
    cancel_consultation,
    documents_uploaded,
    mark_missed,
    reject_consultation,
    request_documents,
    schedule_consultation,
)

__all__ = [
    "ACTIVE",
    "APPLICATION_DUE",
    "BUSY_STATUSES",
    "CANCELLABLE",
    "COMPLAINTS_MAX",
    "COUNT_CAP",
    "DIAGNOSIS_MAX",
    "DOCUMENTS_OPEN",
    "MAX_DURATION",
    "MIN_DURATION",
    "PATIENT_LINK",
    "QUEUE_PAGE_SIZE",
    "QUEUE_STATUSES",
    "REASON_MAX",
    "REFERRAL_DUE",
    "ApplicationData",
    "ApplicationExists",
    "ConsultationError",
    "QueuePage",
    "active_centre",
    "active_centres",
    "active_doctor",
    "attach_documents",
    "cancel_consultation",
    "centre_diseases",
    "centre_doctors",
    "clean_form_token",
    "conclusion_pdf_link",
    "consultation_for_patient",
    "consultation_for_staff",
    "doctor_day",
    "doctor_queue",
    "doctor_today",
    "document_type_label",
    "documents_uploaded",
    "mark_missed",
    "missing_documents",
    "new_form_token",
    "notify_patient",
    "notify_staff",
    "patient_consultation_condition",
    "patient_link",
    "reject_consultation",
    "request_documents",
    "schedule_consultation",
    "staff_link",
    "submit_application",
]
