"""Staff screens: doctors' accounts, the scoped patient and consultation lists, the outbox.

- DoctorView: a manager creates doctor and duty doctor accounts (login, password under the
  policy of app.accounts, centre, specialty) and deactivates them. No delete: a doctor's
  consultations, conclusions and audit trail keep pointing to the record.
- PatientStaffView / ConsultationStaffView: read-only, row-scoped per signed-in user
  (app.access.staff_patient_condition, app.access.consultation_list_condition).
- OutboxView: read-only list of SMS and e-mail the service has queued or sent.
"""

from __future__ import annotations

from typing import Any

from flask import g
from flask_appbuilder.fieldwidgets import BS3PasswordFieldWidget, BS3TextFieldWidget, Select2Widget
from flask_babel import lazy_gettext as _l
from wtforms import PasswordField, SelectField, StringField
from wtforms.validators import DataRequired, Length, Optional, Regexp, ValidationError

from app.access import consultation_list_condition, staff_patient_condition
from app.audit import audit
from app.booking import mode_label, topic_label
from app.errors import DomainError
from app.extensions import db
from app.i18n import RUSSIAN_TIMEZONES, local_date, local_datetime
from app.labels import (
    CHANNEL_LABELS,
    OUTBOUND_STATUS_LABELS,
    SEX_LABELS,
    STAFF_KIND_LABELS,
    STAFF_STATUS_LABELS,
)
from app.outbox import DELIVERED_VIA_LABELS
from app.passwords import check_password
from app.staff import (
    check_email_free,
    check_login_free,
    create_staff_account,
    sync_staff_account,
)
from models import (
    Consultation,
    Doctor,
    IdentityStatus,
    OutboundMessage,
    Patient,
    PatientSource,
    format_consultation_number,
)
from views.common import (
    RowScope,
    StaffInterface,
    StaffModelView,
    checkbox_field,
    optional_text_field,
    unit_of_work,
    yes_no,
)

READ_ONLY = ["can_list", "can_show"]

SOURCE_LABELS = {PatientSource.SELF: _l("Self-registered"), PatientSource.REFERRAL: _l("Referral")}
IDENTITY_LABELS = {
    IdentityStatus.UNVERIFIED: _l("Not verified"),
    IdentityStatus.VERIFIED: _l("Verified"),
}


def _labelled(labels: dict[str, Any]):
    """Formatter showing a stored code by its translated label (unknown codes as they are)."""
    return lambda value: labels.get(value, value)


# ---------------------------------------------------------------------------------------------
# Doctors
# ---------------------------------------------------------------------------------------------


def _password_policy(form, field) -> None:
    try:
        check_password(
            field.data or "",
            personal=(form.surname.data, form.name.data, form.username.data),
        )
    except DomainError as exc:
        raise ValidationError(str(exc)) from exc


def _login_free(form, field) -> None:
    try:
        check_login_free(field.data or "")
    except DomainError as exc:
        raise ValidationError(str(exc)) from exc


def _email_free(form, field) -> None:
    try:
        check_email_free(field.data or None)
    except DomainError as exc:
        raise ValidationError(str(exc)) from exc


_TIMEZONE_CHOICES = [(tz, tz) for tz in RUSSIAN_TIMEZONES]


class DoctorView(StaffModelView):
    route_base = "/doctors"
    datamodel = StaffInterface(Doctor, eager=["center", "user"])
    base_permissions = ["can_list", "can_show", "can_add", "can_edit"]
    base_order = ("surname", "asc")
    list_title = _l("Doctors")
    show_title = _l("Doctor")
    add_title = _l("New doctor account")
    edit_title = _l("Edit doctor")

    list_columns = ["surname", "name", "patronymic", "specialty", "center", "is_duty", "active"]
    show_columns = [
        "surname",
        "name",
        "patronymic",
        "specialty",
        "center",
        "is_duty",
        "timezone",
        "user.username",
        "active",
    ]
    _person = ["surname", "name", "patronymic", "specialty", "center", "is_duty", "timezone"]
    add_columns = [*_person, "username", "password", "email"]
    edit_columns = [*_person, "active"]
    search_columns = ["surname", "specialty", "center", "is_duty", "active"]
    order_columns = ["surname", "name", "specialty", "is_duty", "active"]
    label_columns = {
        "surname": _l("Surname"),
        "name": _l("First name"),
        "patronymic": _l("Patronymic"),
        "specialty": _l("Specialty"),
        "center": _l("Medical centre"),
        "is_duty": _l("Duty doctor"),
        "timezone": _l("Time zone"),
        "active": _l("Active"),
        "user.username": _l("Login name"),
        "username": _l("Login name"),
        "password": _l("Password"),
        "email": _l("E-mail"),
    }
    description_columns = {
        "center": _l("Leave empty for a duty doctor who does not belong to a centre."),
    }
    formatters_columns = {"is_duty": yes_no, "active": yes_no}
    _common_fields = {
        "patronymic": optional_text_field(_l("Patronymic"), 100),
        "is_duty": checkbox_field(
            _l("Duty doctor"), _l("A duty doctor takes bookings in duty shifts.")
        ),
        "timezone": SelectField(
            _l("Time zone"),
            choices=_TIMEZONE_CHOICES,
            default="Europe/Moscow",
            widget=Select2Widget(),
        ),
    }
    add_form_extra_fields = {
        **_common_fields,
        "username": StringField(
            _l("Login name"),
            widget=BS3TextFieldWidget(),
            validators=[
                DataRequired(),
                Length(min=3, max=64),
                Regexp(r"^[A-Za-z0-9._-]+$", message=_l("Latin letters, digits, . _ - only.")),
                _login_free,
            ],
        ),
        "password": PasswordField(
            _l("Password"),
            widget=BS3PasswordFieldWidget(),
            validators=[DataRequired(), _password_policy],
        ),
        "email": StringField(
            _l("E-mail"),
            widget=BS3TextFieldWidget(),
            validators=[
                Optional(),
                Length(max=254),
                _email_free,
            ],
        ),
    }
    edit_form_extra_fields = {
        **_common_fields,
        "active": checkbox_field(
            _l("Active"), _l("A deactivated doctor cannot sign in; open sessions end at once.")
        ),
    }

    def pre_add(self, item: Doctor) -> None:
        # The account fields are not Doctor columns: FAB's populate_obj left them on the item.
        extra = vars(item)
        username = extra.pop("username", "")
        password = extra.pop("password", "")
        email = extra.pop("email", None)
        try:
            create_staff_account(item, username=username, password=password, email=email)
        except DomainError:
            db.session.rollback()
            raise

    def pre_update(self, item: Doctor) -> None:
        sync_staff_account(item)


# ---------------------------------------------------------------------------------------------
# Patients and consultations (read-only, scoped)
# ---------------------------------------------------------------------------------------------


class PatientStaffView(StaffModelView):
    route_base = "/staff/patients"
    datamodel = StaffInterface(Patient)
    base_permissions = READ_ONLY
    base_filters = [["id", RowScope, staff_patient_condition]]
    base_order = ("surname", "asc")
    list_title = _l("Patients")
    show_title = _l("Patient")

    list_columns = ["surname", "name", "patronymic", "birth_date", "phone", "region"]
    show_columns = [
        "surname",
        "name",
        "patronymic",
        "birth_date",
        "sex",
        "phone",
        "email",
        "region",
        "timezone",
        "source",
        "identity_status",
        "created_at",
    ]
    # Read-only; naming the form columns keeps FAB from building forms over public_id (Uuid).
    add_columns = edit_columns = ["surname"]
    search_columns = ["surname", "name", "phone", "region"]
    order_columns = ["surname", "name", "birth_date", "region"]
    label_columns = {
        "surname": _l("Surname"),
        "name": _l("First name"),
        "patronymic": _l("Patronymic"),
        "birth_date": _l("Date of birth"),
        "sex": _l("Sex"),
        "phone": _l("Phone"),
        "email": _l("E-mail"),
        "region": _l("Region"),
        "timezone": _l("Time zone"),
        "source": _l("Source"),
        "identity_status": _l("Identity"),
        "created_at": _l("Registered"),
    }
    formatters_columns = {
        "birth_date": local_date,
        "created_at": local_datetime,
        "sex": _labelled(SEX_LABELS),
        "source": _labelled(SOURCE_LABELS),
        "identity_status": _labelled(IDENTITY_LABELS),
    }

    def _get_show_widget(self, pk, item, *args, **kwargs):
        # Opening a patient's card is an access to personal data: audited like a document view.
        # Reached only after FAB found the row inside the scope (out of scope is a 404 earlier).
        with unit_of_work():
            audit(
                "patient.view",
                actor=g.user,
                obj_type="patient",
                obj_id=item.public_id,
                patient_id=item.id,
            )
        return super()._get_show_widget(pk, item, *args, **kwargs)


class ConsultationStaffView(StaffModelView):
    """Who asked whom, when and where it stands. Medical content stays in the care screens."""

    route_base = "/staff/consultations"
    datamodel = StaffInterface(Consultation, eager=["patient", "center", "doctor", "disease"])
    base_permissions = READ_ONLY
    base_filters = [["id", RowScope, consultation_list_condition]]
    base_order = ("created_at", "desc")
    list_title = _l("Consultations")
    show_title = _l("Consultation")

    list_columns = [
        "number",
        "created_at",
        "kind",
        "status",
        "patient",
        "center",
        "doctor",
        "scheduled_at",
    ]
    show_columns = [
        "number",
        "kind",
        "mode",
        "topic",
        "status",
        "patient",
        "center",
        "doctor",
        "disease",
        "created_at",
        "submitted_at",
        "due_by",
        "scheduled_at",
        "duration_minutes",
        "completed_at",
        "cancelled_at",
        "rejected_at",
    ]
    add_columns = edit_columns = ["status"]  # read-only, see PatientStaffView
    search_columns = ["number", "status", "kind", "scheduled_at", "center"]
    order_columns = ["created_at", "status", "kind", "scheduled_at"]
    label_columns = {
        "number": _l("Number"),
        "kind": _l("Kind"),
        "status": _l("Status"),
        "patient": _l("Patient"),
        "center": _l("Medical centre"),
        "doctor": _l("Doctor"),
        "disease": _l("Disease"),
        "created_at": _l("Created"),
        "submitted_at": _l("Submitted at"),
        "due_by": _l("Due by"),
        "scheduled_at": _l("Scheduled for"),
        "duration_minutes": _l("Duration, minutes"),
        "completed_at": _l("Completed at"),
        "cancelled_at": _l("Cancelled at"),
        "rejected_at": _l("Rejected at"),
        "mode": _l("How to connect"),
        "topic": _l("Topic"),
    }
    formatters_columns = {
        "number": format_consultation_number,
        "mode": mode_label,
        "topic": topic_label,
        "kind": _labelled(STAFF_KIND_LABELS),
        "status": _labelled(STAFF_STATUS_LABELS),
        **{
            name: local_datetime
            for name in (
                "created_at",
                "submitted_at",
                "due_by",
                "scheduled_at",
                "completed_at",
                "cancelled_at",
                "rejected_at",
            )
        },
    }


# ---------------------------------------------------------------------------------------------
# Outbox
# ---------------------------------------------------------------------------------------------


class OutboxView(StaffModelView):
    route_base = "/outbox"
    datamodel = StaffInterface(OutboundMessage)
    base_permissions = READ_ONLY
    base_order = ("created_at", "desc")
    list_title = _l("Outbound messages")
    show_title = _l("Outbound message")

    list_columns = ["created_at", "channel", "recipient", "subject", "status", "attempts"]
    show_columns = [
        "created_at",
        "channel",
        "recipient",
        "subject",
        "body",
        "status",
        "attempts",
        "last_error",
        "sent_at",
        "delivered_via",
        "next_attempt_at",
    ]
    add_columns = edit_columns = ["status"]  # read-only, see PatientStaffView
    search_columns = ["channel", "recipient", "status"]
    order_columns = ["created_at", "channel", "status", "attempts"]
    label_columns = {
        "created_at": _l("Created"),
        "channel": _l("Channel"),
        "recipient": _l("Recipient"),
        "subject": _l("Subject"),
        "body": _l("Text"),
        "status": _l("Status"),
        "attempts": _l("Attempts"),
        "last_error": _l("Last error"),
        "sent_at": _l("Sent at"),
        "delivered_via": _l("Delivered via"),
        "next_attempt_at": _l("Next attempt"),
    }
    formatters_columns = {
        "created_at": local_datetime,
        "sent_at": local_datetime,
        "channel": _labelled(CHANNEL_LABELS),
        "status": _labelled(OUTBOUND_STATUS_LABELS),
        "delivered_via": _labelled(DELIVERED_VIA_LABELS),
        "next_attempt_at": local_datetime,
    }
