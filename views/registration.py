"""Public patient self-registration in two steps: the form, then the code sent by SMS.

Step 1 answers the same way whether the number is new or already an account's (its owner gets
an SMS instead of a code: app/phone_confirmation.py); only step 2, with the right code, creates
the account, signs the patient in and opens the cabinet. The session holds only the id of the
pending registration.
"""

from __future__ import annotations

import logging
from datetime import datetime

import phonenumbers
from flask import current_app, flash, g, redirect, request, session, url_for
from flask_appbuilder import BaseView, expose
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import login_user
from flask_wtf import FlaskForm
from wtforms import BooleanField, DateField, PasswordField, SelectField, StringField
from wtforms.validators import InputRequired

from app.phone_confirmation import (
    PendingGone,
    confirm_registration,
    find_pending,
    resend_code,
    start_registration,
)
from app.registration import (
    RegistrationData,
    RegistrationError,
    RegistrationThrottled,
    check_registration,
    sex_choices,
    timezone_choices,
)
from app.security import client_ip
from views.common import REQUIRED, attach_error, sign_in_url, unit_of_work

log = logging.getLogger(__name__)

# The id of the registration waiting for its code (never the code, never the data).
PENDING_KEY = "oblako_pending_registration"


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


class CodeForm(FlaskForm):
    code = StringField(
        _l("Code from the SMS"),
        **required(
            inputmode="numeric",
            autocomplete="one-time-code",
            pattern="[0-9]*",
            maxlength="6",
            autofocus="autofocus",
        ),
    )


def display_phone(phone: str) -> str:
    """+7 912 345-67-89: the number the way people read it, to spot a typo."""
    try:
        number = phonenumbers.parse(phone, None)
    except phonenumbers.NumberParseException:
        return phone
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)


def deliver_soon() -> None:
    """Hand the outbox to the worker now rather than at its next minute: the person waits."""
    from app.tasks import deliver_outbox

    try:
        deliver_outbox()
    except Exception:  # the periodic delivery still sends it within a minute
        log.exception("outbox: could not queue an immediate delivery")


def start_again(message: str):
    session.pop(PENDING_KEY, None)
    flash(message, "warning")
    return redirect(url_for("RegistrationView.register"), 303)


class RegistrationView(BaseView):
    """Public: no has_access, anyone may register (no reCAPTCHA: it needs a Google account)."""

    route_base = "/register"
    default_view = "register"

    @expose("/", methods=["GET", "POST"])
    def register(self):
        if g.user is not None and g.user.is_authenticated:
            return redirect(self.appbuilder.get_url_for_index)
        form = RegistrationForm()
        status = 200
        if request.method == "POST" and form.validate():
            try:
                checked = check_registration(form.to_data())
                with unit_of_work():
                    pending_id = start_registration(
                        checked, form.password.data, ip=client_ip(), sign_in_url=sign_in_url()
                    )
            except RegistrationError as exc:
                attach_error(form, exc)
                if isinstance(exc, RegistrationThrottled):
                    status = 429
            else:
                # The same answer for a new and a taken number: only the cookie's value differs.
                session[PENDING_KEY] = str(pending_id)
                deliver_soon()
                return redirect(url_for(".code"), 303)
        # Passwords are never sent back to the browser.
        form.password.data = form.password_confirm.data = None
        return (
            self.render_template(
                "oblako/register.html",
                form=form,
                title=_("Registration"),
                appbuilder=self.appbuilder,
            ),
            status,
        )

    @expose("/code", methods=["GET", "POST"])
    def code(self):
        if g.user is not None and g.user.is_authenticated:
            return redirect(self.appbuilder.get_url_for_index)
        pending_id = session.get(PENDING_KEY)
        try:
            phone = find_pending(pending_id).phone
        except PendingGone as exc:
            return start_again(str(exc))
        form = CodeForm()
        if request.method == "POST" and form.validate():
            try:
                with unit_of_work():
                    outcome = confirm_registration(
                        pending_id, form.code.data, ip=client_ip(), sign_in_url=sign_in_url()
                    )
            except PendingGone as exc:
                return start_again(str(exc))
            if outcome.patient is not None:
                session.pop(PENDING_KEY, None)
                login_user(outcome.patient.user, remember=False)
                flash(
                    _("Registration is complete. Upload your medical documents in your account."),
                    "success",
                )
                return redirect(url_for("CabinetView.index"))
            if outcome.final:
                session.pop(PENDING_KEY, None)
                flash(outcome.error, "warning")
                return redirect(self.appbuilder.get_url_for_login, 303)
            form.code.errors = [*form.code.errors, outcome.error]
        form.code.data = ""
        return self.render_template(
            "oblako/register_code.html",
            form=form,
            resend_form=FlaskForm(),
            phone=display_phone(phone),
            minutes=current_app.config["REGISTRATION_CODE_MINUTES"],
            title=_("Phone confirmation"),
            appbuilder=self.appbuilder,
        )

    @expose("/code/resend", methods=["POST"])
    def resend(self):
        if g.user is not None and g.user.is_authenticated:
            return redirect(self.appbuilder.get_url_for_index)
        if not FlaskForm().validate():
            flash(_("The form has expired. Please try again."), "danger")
            return redirect(url_for(".code"), 303)
        try:
            with unit_of_work():
                resend_code(session.get(PENDING_KEY), ip=client_ip(), sign_in_url=sign_in_url())
        except PendingGone as exc:
            return start_again(str(exc))
        except RegistrationError as exc:
            flash(str(exc), "danger")
        else:
            deliver_soon()
            flash(_("The SMS has been sent again."), "success")
        return redirect(url_for(".code"), 303)
