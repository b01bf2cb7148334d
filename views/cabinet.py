"""The patient cabinet: the start page, own consultations (read-only for now), own profile."""

from __future__ import annotations

import uuid

from flask import abort, current_app, flash, g, redirect, url_for
from flask_appbuilder import AppBuilder, BaseView, expose, has_access
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms import BooleanField, SelectField, StringField
from wtforms.validators import InputRequired

from app.accounts import patient_for_user
from app.cabinet import (
    CONSULTATION_KIND_LABELS,
    CONSULTATION_STATUS_LABELS,
    patient_consultations,
    unread_count,
)
from app.db import unit_of_work
from app.extensions import db
from app.registration import (
    SEX_LABELS,
    TIMEZONE_LABELS,
    ProfileData,
    RegistrationError,
    timezone_choices,
    update_profile,
)
from models import Consent, ConsentKind, Patient
from views.registration import REQUIRED, attach_error


def current_patient() -> Patient:
    """The signed-in user's patient record; staff (even Admin) have none and get 404."""
    patient = patient_for_user(g.user)
    if patient is None:
        abort(404)
    return patient


def endpoint_url(endpoint: str) -> str | None:
    """URL of a view that may not be registered yet (another area's), else None."""
    if endpoint not in current_app.view_functions:
        return None
    return url_for(endpoint)


class CabinetView(BaseView):
    route_base = "/cabinet"
    default_view = "index"

    @expose("/")
    @has_access
    def index(self):
        patient = patient_for_user(g.user)
        if patient is None:
            flash(_("The personal account is for patients."), "info")
            return redirect(self.appbuilder.get_url_for_index)
        tiles = [
            (endpoint_url("MyDocumentView.list"), _("My documents"), "fa-file-text-o"),
            (endpoint_url("ApplicationView.new"), _("New application"), "fa-paper-plane"),
            (endpoint_url("BookingView.index"), _("Book a duty doctor"), "fa-calendar"),
            (url_for("MyConsultationView.list"), _("Consultations"), "fa-video-camera"),
            (url_for("NotificationView.list"), _("Notifications"), "fa-bell"),
            (url_for("ProfileView.show"), _("Profile"), "fa-user"),
        ]
        return self.render_template(
            "oblako/cabinet.html",
            patient=patient,
            tiles=[t for t in tiles if t[0]],
            unread=unread_count(g.user.id),
            title=_("My account"),
            appbuilder=self.appbuilder,
        )


class MyConsultationView(BaseView):
    """The patient's own consultations: the list, one consultation, cancelling, adding documents."""

    route_base = "/cabinet/consultations"
    default_view = "list"

    @expose("/")
    @has_access
    def list(self):
        patient = current_patient()
        return self.render_template(
            "oblako/my_consultations.html",
            consultations=patient_consultations(patient),
            status_labels=CONSULTATION_STATUS_LABELS,
            kind_labels=CONSULTATION_KIND_LABELS,
            patient=patient,
            new_application_url=endpoint_url("ApplicationView.new"),
            title=_("Consultations"),
            appbuilder=self.appbuilder,
        )

    # One consultation, cancelling it, adding documents: the work is in views.consultations.
    @expose("/<uuid:public_id>")
    @has_access
    def show(self, public_id: uuid.UUID):
        from views.consultations import patient_show

        return patient_show(self, public_id)

    @expose("/<uuid:public_id>/cancel", methods=["POST"])
    @has_access
    def cancel(self, public_id: uuid.UUID):
        from views.consultations import patient_cancel

        return patient_cancel(public_id)

    @expose("/<uuid:public_id>/documents", methods=["POST"])
    @has_access
    def attach(self, public_id: uuid.UUID):
        from views.consultations import patient_attach

        return patient_attach(public_id)


class ProfileForm(FlaskForm):
    phone = StringField(
        _l("Mobile phone"),
        description=_l("It is also your login."),
        validators=[InputRequired(message=REQUIRED)],
        render_kw={"type": "tel", "autocomplete": "tel", "inputmode": "tel"},
    )
    email = StringField(
        _l("E-mail (optional)"), render_kw={"type": "email", "autocomplete": "email"}
    )
    region = StringField(
        _l("Region"), validators=[InputRequired(message=REQUIRED)], render_kw={"maxlength": "128"}
    )
    timezone = SelectField(
        _l("Time zone"),
        choices=timezone_choices,
        validate_choice=False,
        validators=[InputRequired(message=REQUIRED)],
    )
    notify_sms = BooleanField(_l("Send me SMS notifications"))
    notify_email = BooleanField(_l("Send me e-mail notifications"))

    def to_data(self) -> ProfileData:
        return ProfileData(
            phone=self.phone.data or "",
            email=self.email.data or "",
            region=self.region.data or "",
            timezone=self.timezone.data or "",
            notify_sms=bool(self.notify_sms.data),
            notify_email=bool(self.notify_email.data),
        )


class ProfileView(BaseView):
    route_base = "/profile"
    default_view = "show"

    @expose("/")
    @has_access
    def show(self):
        patient = current_patient()
        consent = db.session.execute(
            select(Consent)
            .where(
                Consent.user_id == patient.user_id,
                Consent.kind == ConsentKind.PERSONAL_DATA,
                Consent.withdrawn_at.is_(None),
            )
            .order_by(Consent.accepted_at.desc())
            .limit(1)
        ).scalar_one_or_none()
        return self.render_template(
            "oblako/profile.html",
            patient=patient,
            consent=consent,
            sex_label=SEX_LABELS.get(patient.sex, patient.sex),
            timezone_label=TIMEZONE_LABELS.get(patient.timezone, patient.timezone),
            title=_("Profile"),
            appbuilder=self.appbuilder,
        )

    @expose("/edit", methods=["GET", "POST"])
    @has_access
    def edit(self):
        patient = current_patient()
        form = ProfileForm(obj=patient)
        if form.validate_on_submit():
            try:
                with unit_of_work():
                    changed = update_profile(patient, form.to_data(), actor=g.user)
            except RegistrationError as exc:
                attach_error(form, exc)
            else:
                flash(_("Profile saved.") if changed else _("Nothing has changed."), "success")
                return redirect(url_for("ProfileView.show"))
        return self.render_template(
            "oblako/profile_edit.html",
            form=form,
            title=_("Edit profile"),
            appbuilder=self.appbuilder,
        )


def register(appbuilder: AppBuilder) -> None:
    # The brand link leads a patient here (HomeView); the «Cabinet» menu category is filled by
    # the documents area and views.account, in the module order of views/__init__.py.
    appbuilder.add_view_no_menu(CabinetView)
    appbuilder.add_view_no_menu(MyConsultationView)
    appbuilder.add_view_no_menu(ProfileView)
