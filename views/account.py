"""Any signed-in person's own things: notifications and password, plus the patient menu tail.

Also the must-change-password gate: a user whose password was issued by someone else (import,
admin reset) may do nothing but change it or sign out.
"""

from __future__ import annotations

import uuid

from flask import Flask, abort, current_app, flash, g, jsonify, redirect, request, url_for
from flask_appbuilder import AppBuilder, BaseView, expose, has_access
from flask_babel import get_locale
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_jwt_extended import get_current_user, verify_jwt_in_request
from flask_jwt_extended.exceptions import JWTExtendedException
from flask_login import current_user
from flask_wtf import FlaskForm
from jwt import PyJWTError
from markupsafe import Markup
from wtforms import BooleanField, PasswordField
from wtforms.validators import InputRequired

from app import cabinet as notifications
from app.errors import NotFound
from app.landing import after_first_password_url
from app.registration import (
    RegistrationError,
    check_password_change,
    needs_personal_data_consent,
)
from app.security import client_ip
from views.common import REQUIRED, attach_error, unit_of_work

# FAB's token endpoints (login, refresh): open to everyone, the gate applies to what they give.
API_SECURITY_PREFIX = "/api/v1/security/"

# Pages a user with must_change_password may still open.
ALLOWED_WHILE_PASSWORD_MUST_CHANGE = frozenset(
    {
        "ChangePasswordView.this_form_get",
        "ChangePasswordView.this_form_post",
        "OblakoAuthDBView.logout",
        "OblakoAuthDBView.login",
        "LocaleView.index",
        "static",
        "appbuilder.static",
    }
)


class NotificationView(BaseView):
    route_base = "/notifications"
    default_view = "list"

    @expose("/")
    @has_access
    def list(self):
        page = notifications.notifications_page(g.user.id, request.args.get("page", 1, type=int))
        return self.render_template(
            "oblako/notifications.html",
            page=page,
            safe_link=notifications.safe_link,
            title=_("Notifications"),
            appbuilder=self.appbuilder,
        )

    @expose("/<uuid:public_id>")
    @has_access
    def read(self, public_id: uuid.UUID):
        """Open a notification: it counts as read and leads to what it is about."""
        try:
            with unit_of_work():
                notification = notifications.mark_read(g.user.id, public_id)
                target = notifications.safe_link(notification.link)
        except NotFound:
            abort(404)
        return redirect(target or url_for("NotificationView.list"))

    @expose("/<uuid:public_id>/read", methods=["POST"])
    @has_access
    def mark_read(self, public_id: uuid.UUID):
        try:
            with unit_of_work():
                notifications.mark_read(g.user.id, public_id)
        except NotFound:
            abort(404)
        return redirect(
            url_for("NotificationView.list", page=request.args.get("page", 1, type=int))
        )

    @expose("/read-all", methods=["POST"])
    @has_access
    def mark_all_read(self):
        with unit_of_work():
            count = notifications.mark_all_read(g.user.id)
        if count:
            flash(_("All notifications are marked as read."), "success")
        return redirect(url_for("NotificationView.list"))


class ChangePasswordForm(FlaskForm):
    # Removed from the form on the first sign-in (one-time password or link): see _form.
    current_password = PasswordField(
        _l("Current password"),
        validators=[InputRequired(message=REQUIRED)],
        render_kw={"autocomplete": "current-password"},
    )
    new_password = PasswordField(
        _l("New password"),
        description=_l("At least 8 characters, letters and digits."),
        validators=[InputRequired(message=REQUIRED)],
        render_kw={"autocomplete": "new-password"},
    )
    confirm_password = PasswordField(
        _l("Repeat the new password"),
        validators=[InputRequired(message=REQUIRED)],
        render_kw={"autocomplete": "new-password"},
    )
    # Shown (and required) only on an imported patient's first sign-in: see _render.
    consent = BooleanField(
        _l("I consent to the processing of my personal data for the online consultations.")
    )


class ChangePasswordView(BaseView):
    """Own password. Method names match FAB's SimpleFormView, so are the permission names."""

    route_base = "/account/password"
    default_view = "this_form_get"

    @staticmethod
    def _form() -> ChangePasswordForm:
        """The form; on the first sign-in without «Current password»: she has just signed in
        with the one-time password or link, and is not asked to type it again."""
        form = ChangePasswordForm()
        if getattr(g.user, "must_change_password", False):
            del form.current_password
        return form

    def _render(self, form: ChangePasswordForm):
        user = g.user
        first_sign_in = bool(getattr(user, "must_change_password", False))
        return self.render_template(
            "oblako/change_password.html",
            form=form,
            first_sign_in=first_sign_in,
            ask_consent=first_sign_in and needs_personal_data_consent(user),
            title=_("Change password"),
            appbuilder=self.appbuilder,
        )

    @expose("/", methods=["GET"])
    @has_access
    def this_form_get(self):
        return self._render(self._form())

    @expose("/", methods=["POST"])
    @has_access
    def this_form_post(self):
        form = self._form()
        if not form.validate_on_submit():
            return self._render(form)
        sm = self.appbuilder.sm
        user = sm.get_user_by_id(g.user.id)
        first_sign_in = bool(user.must_change_password)
        current = form.current_password.data if "current_password" in form else None
        try:
            with unit_of_work():
                check_password_change(
                    user,
                    current_password=current,
                    new_password=form.new_password.data,
                    confirm=form.confirm_password.data,
                    consent=bool(form.consent.data),
                    ip=client_ip(),
                )
                # Hashes, bumps the session generation (other sessions and API tokens stop
                # working) and re-stamps this session so the person stays signed in.
                sm.reset_password(user.id, form.new_password.data)
        except RegistrationError as exc:
            attach_error(form, exc)
            return self._render(form)
        flash(_("Your password has been changed. Other sessions have been signed out."), "success")
        if first_sign_in:
            return redirect(after_first_password_url(user))
        return redirect(self.appbuilder.get_url_for_index)


def _password_gate():
    """Before every request: a user who must change the password is sent to do so.

    That is the first sign-in with a one-time password (or after an admin reset); the page also
    asks an imported patient for the personal-data consent. An API token of such a user opens
    nothing but the sign-in endpoints (403), whether it comes as a cookie session or a JWT.
    """
    if request.endpoint in ALLOWED_WHILE_PASSWORD_MUST_CHANGE:
        return None
    api = request.path.startswith("/api/")
    if api and request.path.startswith(API_SECURITY_PREFIX):
        return None
    user = current_user if current_user.is_authenticated else None
    if user is None and api:
        user = _jwt_user()
    if user is None or not getattr(user, "must_change_password", False):
        return None
    message = _("Set a new password to continue.")
    if api:
        return jsonify(message=message), 403
    flash(message, "warning")
    return redirect(url_for("ChangePasswordView.this_form_get"))


def _jwt_user():
    """The user of a valid bearer token, else None (the endpoint itself answers bad tokens)."""
    if not request.headers.get("Authorization"):
        return None
    try:
        verify_jwt_in_request(optional=True)
        return get_current_user()
    except (JWTExtendedException, PyJWTError):  # expired, invalid, revoked: the endpoint's 401
        return None


def _menu_key() -> tuple | None:
    """What the main menu of this request depends on, or None when it must be rendered afresh.

    Builtin roles (app/permissions.py) grant in memory, so their menu is a function of the role
    names, the language and the mount point. A role an administrator made on the Roles screen
    keeps its permissions in the database, which may change at any time: never cached.
    """
    sm = current_app.appbuilder.sm
    if current_user.is_authenticated:
        roles = tuple(sorted(role.name for role in current_user.roles))
    else:
        roles = (sm.auth_role_public,)
    if not all(name in sm.builtin_roles for name in roles):
        return None
    return roles, str(get_locale()), request.script_root


def main_menu() -> Markup:
    """The navbar's menu (FAB's navbar_menu.html), rendered once per role set and language.

    Rendering it asks has_access for every entry: about half of a page's time, spent on the same
    answer for everyone with the same roles.
    """
    env = current_app.jinja_env
    key = _menu_key()
    cache: dict = current_app.extensions.setdefault("oblako_menu", {})
    if key is None or key not in cache:
        template = env.get_template("appbuilder/navbar_menu.html")
        # An autoescaped template's output: already safe HTML.
        html = Markup(template.render(menu=current_app.appbuilder.menu))  # noqa: S704
        if key is None:
            return html
        cache[key] = html
    return cache[key]


def _navbar_context() -> dict:
    def unread_notifications() -> int:
        """Called by the navbar; one COUNT per request at most, nothing for visitors."""
        if not current_user.is_authenticated:
            return 0
        if "_oblako_unread" not in g:
            g._oblako_unread = notifications.unread_count(current_user.id)
        return g._oblako_unread

    return {"unread_notifications": unread_notifications, "main_menu": main_menu}


def init_app(app: Flask) -> None:
    app.before_request(_password_gate)
    app.context_processor(_navbar_context)


def setup(appbuilder: AppBuilder) -> None:
    init_app(current_app._get_current_object())
