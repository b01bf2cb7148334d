"""The patient cabinet: the start page, own consultations (read-only for now), own profile."""

from __future__ import annotations

from flask import flash, g, redirect, url_for
from flask_appbuilder import BaseView, expose, has_access
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms import BooleanField, SelectField, StringField
from wtforms.validators import InputRequired

from app.accounts import patient_for_user
from app.cabinet import (
    unread_count,
)
from app.extensions import db
from app.labels import SEX_LABELS
from app.registration import (
    TIMEZONE_LABELS,
    ProfileData,
    RegistrationError,
    timezone_choices,
    update_profile,
)
from models import Consent, ConsentKind
from views.common import REQUIRED, attach_error, current_patient, endpoint_url, unit_of_work


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
            # Beside the tiles, not one of them: a tile's name would contain «Мои документы».
            readers_url=endpoint_url("MyDocumentView.readers"),
            title=_("My account"),
            appbuilder=self.appbuilder,
        )


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
