"""Row scope: which patients and which medical documents a given user may see.

Every screen, download and API that shows patients or their documents filters through these
conditions (DESIGN §4: FAB's actions, downloads and the REST API do not apply base_filters on
their own). They are pure SQL conditions — no query runs while building them — so a list page
stays one SELECT whatever the user's role.

Rules:
- Admin: everything.
- Manager: every patient (the staff patient list), but no medical documents.
- Doctor / DutyDoctor: the patients who have a consultation with the doctor's centre or with
  the doctor personally, and those patients' documents.
- Patient: their own documents only, and no staff screen.

Consultations have two rules, because the two kinds of screen show different things:
- consultation_list_condition: the staff list of consultations (who asked whom, when, where it
  stands — no medical content): Admin and Manager all, a doctor their centre's and their own,
  a duty doctor their own bookings.
- care_consultation_condition: the care screens (complaints, documents, conclusion, the room):
  the same for doctors, Admin all, but a Manager nothing — they see no medical content.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, Select, false, or_, select, true
from sqlalchemy.orm import InstrumentedAttribute

from app.permissions import ADMIN, DOCTOR, DUTY_DOCTOR, MANAGER, PATIENT
from app.roles import role_names
from models import Consultation, Doctor, MedicalDocument, Patient


def own_doctor_ids(user) -> Select:
    # Resolved in SQL rather than in Python: the doctor's row may change (centre moved,
    # deactivated) and the condition must follow it without another round trip.
    return select(Doctor.id).where(Doctor.user_id == user.id, Doctor.active.is_(True))


def own_center_ids(user) -> Select:
    return select(Doctor.center_id).where(
        Doctor.user_id == user.id, Doctor.active.is_(True), Doctor.center_id.is_not(None)
    )


def visible_patient_ids_subquery(user) -> Select | None:
    """SELECT of the patient ids a doctor may see through consultations; None for non-doctors.

    Admin and Manager are not restricted by consultations (see staff_patient_condition), so
    they get None here as well: the caller decides what "no doctor scope" means.
    """
    if not {DOCTOR, DUTY_DOCTOR} & role_names(user):
        return None
    return select(Consultation.patient_id).where(
        or_(
            Consultation.doctor_id.in_(own_doctor_ids(user)),
            Consultation.center_id.in_(own_center_ids(user)),
        )
    )


def staff_patient_condition(user) -> ColumnElement[bool]:
    """Condition on Patient.id: the patients a staff member may see in staff screens."""
    roles = role_names(user)
    if {ADMIN, MANAGER} & roles:
        return true()
    subquery = visible_patient_ids_subquery(user)
    if subquery is None:
        return false()  # patients, anonymous users and unknown roles see no staff screen
    return Patient.id.in_(subquery)


def staff_document_condition(user) -> ColumnElement[bool]:
    """Condition on MedicalDocument: what a staff member may open. Managers get nothing."""
    roles = role_names(user)
    if ADMIN in roles:
        return true()
    subquery = visible_patient_ids_subquery(user)
    if subquery is None:
        return false()
    return MedicalDocument.patient_id.in_(subquery)


def own_document_condition(user) -> ColumnElement[bool]:
    """Condition on MedicalDocument: the documents of the patient record behind this user."""
    if PATIENT not in role_names(user):
        return false()
    own_patient = select(Patient.id).where(Patient.user_id == user.id)
    return MedicalDocument.patient_id.in_(own_patient)


def document_condition(user) -> ColumnElement[bool]:
    """Every document the user may see by any role they hold (own, or through care)."""
    return or_(own_document_condition(user), staff_document_condition(user))


def _doctor_consultation_condition(roles: set[str], user) -> ColumnElement[bool]:
    """A doctor: their centre's consultations and their own; a duty doctor: their own."""
    conditions: list[ColumnElement[bool]] = []
    if {DOCTOR, DUTY_DOCTOR} & roles:
        conditions.append(Consultation.doctor_id.in_(own_doctor_ids(user)))
    if DOCTOR in roles:
        conditions.append(Consultation.center_id.in_(own_center_ids(user)))
    return or_(*conditions) if conditions else false()


def consultation_list_condition(user) -> ColumnElement[bool]:
    """Condition on Consultation for the staff list (no medical content): Manager sees all."""
    roles = role_names(user)
    if {ADMIN, MANAGER} & roles:
        return true()
    return _doctor_consultation_condition(roles, user)


def care_consultation_condition(user) -> ColumnElement[bool]:
    """Condition on Consultation for the care screens (medical content): Manager sees none."""
    roles = role_names(user)
    if ADMIN in roles:
        return true()
    return _doctor_consultation_condition(roles, user)


def staff_schedule_condition(
    user, doctor_column: InstrumentedAttribute[int]
) -> ColumnElement[bool]:
    """Shifts and slots: Manager/Admin all, a duty doctor only their own, anyone else none."""
    roles = role_names(user)
    if {ADMIN, MANAGER} & roles:
        return true()
    if DUTY_DOCTOR in roles:
        return doctor_column.in_(own_doctor_ids(user))
    return false()
