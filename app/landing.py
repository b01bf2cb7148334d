"""Where a signed-in person lands: one rule, role → endpoint, for the sign-in and the index page.

Staff land where they work: a centre's doctor on the applications queue («Заявки»), a duty doctor
on «Мой день», a manager on the referral imports; a patient on the cabinet. The administrator
keeps the welcome page. A person with several roles lands by the first of them in LANDING.
"""

from __future__ import annotations

from flask import current_app, url_for
from sqlalchemy import select

from app.extensions import db
from app.permissions import ADMIN, DOCTOR, DUTY_DOCTOR, MANAGER, PATIENT
from app.roles import role_names
from models import Consultation, ConsultationKind, ConsultationStatus, Patient

# In order of precedence; None: the index page itself (the welcome page).
LANDING: tuple[tuple[str, str | None], ...] = (
    (ADMIN, None),
    (PATIENT, "CabinetView.index"),
    (DOCTOR, "CareView.queue"),
    (DUTY_DOCTOR, "CareView.schedule_day"),
    (MANAGER, "ReferralImportView.list"),
)


def landing_endpoint(user) -> str | None:
    """The endpoint the user starts on; None for a visitor, the administrator and a user with
    no role of LANDING (they see the index page)."""
    names = role_names(user)
    for role, endpoint in LANDING:
        if role in names:
            return endpoint
    return None


def landing_url(user) -> str:
    """The address of the user's landing page; the index page when the rule names none (or a
    view this app does not serve)."""
    endpoint = landing_endpoint(user)
    if endpoint is not None and endpoint in current_app.view_functions:
        return url_for(endpoint)
    return current_app.appbuilder.get_url_for_index


def after_first_password_url(user) -> str:
    """Where a patient goes once she has set her own password on the first sign-in: the
    referral that waits for her documents (the newest, if several), else her landing page."""
    public_id = db.session.execute(
        select(Consultation.public_id)
        .join(Patient, Patient.id == Consultation.patient_id)
        .where(
            Patient.user_id == user.id,
            Consultation.kind == ConsultationKind.REFERRAL,
            Consultation.status == ConsultationStatus.AWAITING_DOCUMENTS,
        )
        .order_by(Consultation.id.desc())
        .limit(1)
    ).scalar_one_or_none()
    if public_id is not None and "MyConsultationView.show" in current_app.view_functions:
        return url_for("MyConsultationView.show", public_id=public_id)
    return landing_url(user)
