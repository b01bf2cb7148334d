"""Sign-in view, and FAB's own security screens with their crashing routes fixed.

OblakoAuthDBView: FAB's DB login, with the throttle applied before it (app/hardening.py).

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

from flask import abort, request
from flask_appbuilder import expose
from flask_appbuilder.security import views as fab
from flask_appbuilder.security.decorators import has_access, permission_name


class OblakoAuthDBView(fab.AuthDBView):
    """Same form and flow as FAB's; a named class so the throttle can recognise the endpoint.

    A refusal the person should understand (an expired one-time password) replaces FAB's
    generic «invalid login» message.
    """

    @property
    def invalid_login_message(self):
        from app.security import login_error

        return login_error() or fab.AuthView.invalid_login_message


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
