"""Sign-in view, and FAB's own security screens with their crashing routes fixed.

OblakoAuthDBView: FAB's DB login, with the throttle applied before it (app/hardening.py), our
form (labelled as the invitation SMS) and the landing page of the person's role (app/landing.py).
SignInLinkView: the invitation SMS's one-time sign-in link (app/sign_in_links.py).

FAB's user, role and permission screens (Admin only) are FAB's classes under the same names, so
endpoints and permission keys do not change. Two of FAB's routes there answer 500:
- `action` / `action_post` look the action up by name before any permission check, so an
  unknown name is an AttributeError for anyone, anonymous included. Here the caller must hold the
  view's list permission first (a visitor is sent to sign in), and an unknown name is a 404.
- `download` serves files from UPLOAD_FOLDER, which is not configured (KeyError): none of these
  screens has a file column, so the route is removed, as in views/common.StaffModelView.
The user statistics chart indexes its definitions with the URL segment: a bad one is a 404.
"""

from __future__ import annotations

from flask import abort, flash, g, redirect, request, url_for
from flask_appbuilder import BaseView, expose
from flask_appbuilder.security import views as fab
from flask_appbuilder.security.decorators import has_access, no_cache, permission_name
from flask_appbuilder.utils.base import is_safe_redirect_url
from flask_babel import gettext as _
from flask_login import login_user
from flask_wtf import FlaskForm
from wtforms import PasswordField, StringField
from wtforms.validators import InputRequired

from app import sign_in_links as links
from app.accounts import LOGIN_LABEL, PASSWORD_LABEL
from app.landing import landing_url
from app.security import client_ip
from views.common import REQUIRED, unit_of_work


class SignInForm(FlaskForm):
    """FAB's sign-in fields (same names), labelled as the invitation SMS labels them."""

    username = StringField(
        LOGIN_LABEL,
        validators=[InputRequired(message=REQUIRED)],
        render_kw={"autocomplete": "username", "autocapitalize": "none", "spellcheck": "false"},
    )
    password = PasswordField(
        PASSWORD_LABEL,
        validators=[InputRequired(message=REQUIRED)],
        render_kw={"autocomplete": "current-password"},
    )


def after_sign_in_url(user) -> str:
    """Where a person goes once signed in: the password form while the password is a one-time
    one, else the page asked for (?next=, if ours), else the page of their role."""
    if getattr(user, "must_change_password", False):
        return url_for("ChangePasswordView.this_form_get")
    next_url = request.args.get("next", "")
    if next_url and is_safe_redirect_url(next_url):
        return next_url
    return landing_url(user)


class OblakoAuthDBView(fab.AuthDBView):
    """FAB's DB sign-in with our form and page; a named class so the throttle can recognise
    the endpoint. Signed in, a person lands on the page of their role (app.landing).

    A refusal the person should understand (an expired one-time password) replaces FAB's
    generic «invalid login» message.
    """

    login_template = "oblako/login.html"

    @property
    def invalid_login_message(self):
        from app.security import login_error

        return login_error() or fab.AuthView.invalid_login_message

    @expose("/login/", methods=["GET", "POST"])
    @no_cache
    def login(self):
        if g.user is not None and g.user.is_authenticated:
            return redirect(after_sign_in_url(g.user))
        form = SignInForm()
        if form.validate_on_submit():
            user = self.appbuilder.sm.auth_user_db(form.username.data, form.password.data)
            if not user:
                flash(str(self.invalid_login_message), "warning")
                next_url = request.args.get("next", "")
                if next_url and is_safe_redirect_url(next_url):
                    return redirect(self.appbuilder.get_url_for_login_with(next_url))
                return redirect(self.appbuilder.get_url_for_login)
            login_user(user, remember=False)
            return redirect(after_sign_in_url(user))
        return self.render_template(
            self.login_template, title=_("Sign in"), form=form, appbuilder=self.appbuilder
        )


class SignInLinkView(BaseView):
    """The one-time sign-in link of the invitation SMS (app/sign_in_links.py). Open to visitors
    on purpose: the link's secret is the key. Opening it shows one button (an SMS app that
    fetches the address does not spend it); the button signs in and leads on to the password
    form, where she sets her own password without typing the one-time one."""

    route_base = "/s"

    def _refused(self, exc: links.SignInLinkError):
        page = self.render_template(
            "oblako/sign_in_link.html",
            message=str(exc),
            token=None,
            form=None,
            title=_("Sign-in link"),
            appbuilder=self.appbuilder,
        )
        return page, exc.status

    @expose("/<string:token>", methods=["GET"])
    @no_cache
    def open(self, token: str):
        signed_in = g.user if g.user is not None and g.user.is_authenticated else None
        try:
            links.check_link(token, ip=client_ip(), signed_in=signed_in)
        except links.SignInLinkError as exc:
            return self._refused(exc)
        if signed_in is not None:
            return redirect(after_sign_in_url(signed_in))
        return self.render_template(
            "oblako/sign_in_link.html",
            message=None,
            token=token,
            form=FlaskForm(),
            title=_("Sign-in link"),
            appbuilder=self.appbuilder,
        )

    @expose("/<string:token>", methods=["POST"])
    @no_cache
    def use(self, token: str):
        signed_in = g.user if g.user is not None and g.user.is_authenticated else None
        try:
            with unit_of_work():
                user = links.redeem_link(token, ip=client_ip(), signed_in=signed_in)
        except links.SignInLinkError as exc:
            return self._refused(exc)
        if signed_in is None:
            # As a sign-in with the password: last_login (the referral tracking's «signed in»)
            self.appbuilder.sm.update_user_auth_stat(user, True)
            login_user(user, remember=False)
        return redirect(after_sign_in_url(user))


class _KnownActionsOnly:
    actions: dict

    @expose("/action/<string:name>/<pk>", methods=["GET", "POST"])
    @has_access
    @permission_name("list")
    def action(self, name: str, pk: str):
        if name not in self.actions:
            abort(404)
        return super().action(name, pk)

    @expose("/action_post", methods=["POST"])
    @has_access
    @permission_name("list")
    def action_post(self):
        if request.form.get("action") not in self.actions:
            abort(404)
        return super().action_post()

    # A plain method without @expose: FAB registers no route for it (the URL answers 404).
    def download(self, filename: str):
        abort(404)


class UserDBModelView(_KnownActionsOnly, fab.UserDBModelView):
    pass


class RoleModelView(_KnownActionsOnly, fab.RoleModelView):
    pass


class UserGroupModelView(_KnownActionsOnly, fab.UserGroupModelView):
    pass


class PermissionModelView(_KnownActionsOnly, fab.PermissionModelView):
    pass


class ViewMenuModelView(_KnownActionsOnly, fab.ViewMenuModelView):
    pass


class PermissionViewModelView(_KnownActionsOnly, fab.PermissionViewModelView):
    pass


SECURITY_VIEWS = {
    "userdbmodelview": UserDBModelView,
    "rolemodelview": RoleModelView,
    "groupmodelview": UserGroupModelView,
    "permissionmodelview": PermissionModelView,
    "viewmenumodelview": ViewMenuModelView,
    "permissionviewmodelview": PermissionViewModelView,
    # FAB's «User's Statistics» draws with Google Charts from a foreign CDN: personal data stays
    # on the region's servers (152-ФЗ) and the CSP allows no outside script, so it never drew.
    "userstatschartview": None,
}
