"""Public patient self-registration: the form, one service call, sign-in, the cabinet."""

from __future__ import annotations

from datetime import datetime

from flask import flash, g, redirect, request, url_for
from flask_appbuilder import AppBuilder, BaseView, expose
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import login_user
from flask_wtf import FlaskForm
from wtforms import BooleanField, DateField, PasswordField, SelectField, StringField
from wtforms.validators import InputRequired

from app.db import unit_of_work
from app.registration import (
    RegistrationData,
    RegistrationError,
    register_patient,
    sex_choices,
    timezone_choices,
)
from app.security import client_ip

REQUIRED = _l("This field is required.")


class LenientDateField(DateField):
    """An HTML date input whose parse error is our translated message, not WTForms' own."""

    def process_formdata(self, valuelist: list[str]) -> None:
        raw = (valuelist[0] if valuelist else "").strip()
        if not raw:
            self.data = None
            return
        for fmt in ("%Y-%m-%d", "%d.%m.%Y"):  # the date picker, or typed the Russian way
            try:
                self.data = datetime.strptime(raw, fmt).date()
                return
            except ValueError:
                continue
        self.data = None
        raise ValueError(_l("Enter a real date of birth."))


def required(**render_kw: str) -> dict:
    return {"validators": [InputRequired(message=REQUIRED)], "render_kw": render_kw}


class RegistrationForm(FlaskForm):
    # Choices are checked by the service (with our message), not by WTForms' generic one.
    surname = StringField(_l("Surname"), **required(autocomplete="family-name", maxlength="100"))
    name = StringField(_l("First name"), **required(autocomplete="given-name", maxlength="100"))
    patronymic = StringField(
        _l("Patronymic"), render_kw={"autocomplete": "additional-name", "maxlength": "100"}
    )
    birth_date = LenientDateField(
        _l("Date of birth"), **required(autocomplete="bday", min="1900-01-01")
    )
    # An empty first option: nobody should be registered with a sex they never picked.
    sex = SelectField(
        _l("Sex"),
        choices=lambda: [("", "—"), *sex_choices()],
        validate_choice=False,
        **required(),
    )
    phone = StringField(
        _l("Mobile phone"),
        description=_l("It will be your login."),
        **required(type="tel", autocomplete="tel", inputmode="tel", placeholder="+7 912 345-67-89"),
    )
    email = StringField(
        _l("E-mail (optional)"),
        render_kw={"type": "email", "autocomplete": "email", "inputmode": "email"},
    )
    region = StringField(_l("Region"), **required(autocomplete="address-level1", maxlength="128"))
    timezone = SelectField(
        _l("Time zone"),
        choices=timezone_choices,
        default="Europe/Moscow",
        validate_choice=False,
        **required(),
    )
    password = PasswordField(
        _l("Password"),
        description=_l("At least 8 characters, letters and digits."),
        **required(autocomplete="new-password"),
    )
    password_confirm = PasswordField(
        _l("Repeat the password"), **required(autocomplete="new-password")
    )
    consent = BooleanField(
        _l("I consent to the processing of my personal data for the online consultations.")
    )

    def to_data(self) -> RegistrationData:
        return RegistrationData(
            surname=self.surname.data or "",
            name=self.name.data or "",
            patronymic=self.patronymic.data or "",
            birth_date=self.birth_date.data,
            sex=self.sex.data or "",
            phone=self.phone.data or "",
            email=self.email.data or "",
            region=self.region.data or "",
            timezone=self.timezone.data or "",
            password=self.password.data or "",
            password_confirm=self.password_confirm.data or "",
            consent_personal_data=bool(self.consent.data),
        )


def attach_error(form: FlaskForm, exc: RegistrationError) -> None:
    """Show the service's message next to its field, or above the form when it has none."""
    field = getattr(form, exc.field, None) if exc.field else None
    if field is not None:
        field.errors = [*field.errors, str(exc)]
    else:
        flash(str(exc), "danger")


class RegistrationView(BaseView):
    """Public: no has_access, anyone may register (no reCAPTCHA: it needs a Google account)."""

    route_base = "/register"
    default_view = "register"

    @expose("/", methods=["GET", "POST"])
    def register(self):
        if g.user is not None and g.user.is_authenticated:
            return redirect(self.appbuilder.get_url_for_index)
        form = RegistrationForm()
        if request.method == "POST" and form.validate():
            try:
                with unit_of_work():
                    patient = register_patient(form.to_data(), ip=client_ip())
            except RegistrationError as exc:
                attach_error(form, exc)
            else:
                login_user(patient.user, remember=False)
                flash(
                    _("Registration is complete. Upload your medical documents in your account."),
                    "success",
                )
                return redirect(url_for("CabinetView.index"))
        # Passwords are never sent back to the browser.
        form.password.data = form.password_confirm.data = None
        return self.render_template(
            "oblako/register.html", form=form, title=_("Registration"), appbuilder=self.appbuilder
        )


def register(appbuilder: AppBuilder) -> None:
    appbuilder.add_view_no_menu(RegistrationView())
