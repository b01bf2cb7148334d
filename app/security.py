"""Oblako's security manager: throttled sign-in, revocable sessions and API tokens."""

from __future__ import annotations

import logging
import re

from flask import abort, current_app, g, request, session
from flask_appbuilder.security.api import SecurityApi as FabSecurityApi
from flask_appbuilder.security.sqla.manager import SecurityManager
from flask_jwt_extended import JWTManager
from flask_login import user_logged_in, user_logged_out
from sqlalchemy import select
from sqlalchemy.orm import selectinload
from werkzeug.security import check_password_hash

from app.accounts import sign_in_name
from app.boundary import INT32
from app.otp import EXPIRED_MESSAGE, one_time_password_expired
from app.throttle import get_throttle
from models import OblakoUser

log = logging.getLogger(__name__)

SESSION_GENERATION_KEY = "_oblako_gen"
JWT_GENERATION_CLAIM = "gen"
# g attribute: why the sign-in just refused was refused, when the person should know (the
# one-time password expired); the login form and the API login show it instead of FAB's own.
LOGIN_ERROR_KEY = "oblako_login_error"


def login_error() -> str | None:
    return g.get(LOGIN_ERROR_KEY)


def client_ip() -> str:
    return request.remote_addr or "" if request else ""


class SecurityApi(FabSecurityApi):
    """FAB's /api/v1/security/login, with the reason of a refusal when the person should know.

    Same class name as FAB's: endpoint and permission names (SecurityApi.login) do not change.
    """

    def response_401(self):
        message = login_error()
        if message:
            return self.response(401, message=message)
        return super().response_401()


class OblakoSecurityManager(SecurityManager):
    user_model = OblakoUser
    security_api = SecurityApi

    def __init__(self, appbuilder) -> None:
        # The screens come from views/ by configuration (create_app sets them from
        # views.security_views()): app/ never imports views/.
        config = current_app.config
        screens = config.get("OBLAKO_SECURITY_VIEWS", {})
        for name, view in screens.items():
            setattr(self, name, view)
        super().__init__(appbuilder)
        interface = config.get("OBLAKO_SECURITY_INTERFACE")
        for name in screens:
            view = getattr(self, name)
            if interface is not None and hasattr(view, "datamodel"):
                view.datamodel = interface(view.datamodel.obj)
        user_logged_in.connect(_remember_generation)
        user_logged_out.connect(_revoke_on_logout)

    # --- sign-in ---------------------------------------------------------------------------
    def auth_user_db(self, username, password):
        username = sign_in_name(username)  # a phone as people write it: the E.164 login
        throttle = get_throttle()
        ip = client_ip()
        if not throttle.allowed(username or "", ip):
            log.info("sign-in refused by throttle for %r from %s", username, ip)
            return None
        if self._one_time_password_expired(username, password):
            # Right password, but its time is over: a failure for the throttle, and the person
            # is told to contact the manager (only someone who knows the password learns this).
            throttle.failed(username or "", ip)
            g.setdefault(LOGIN_ERROR_KEY, str(EXPIRED_MESSAGE))
            log.info("sign-in refused: one-time password of %r expired", username)
            return None
        user = super().auth_user_db(username, password)
        if user is None:
            throttle.failed(username or "", ip)
        return user

    def _one_time_password_expired(self, username, password) -> bool:
        if not username or not password:
            return False
        user = self.find_user(username=username) or self.find_user(email=username)
        return bool(
            user is not None
            and user.is_active
            and one_time_password_expired(user)
            and user.password
            and check_password_hash(user.password, password)
        )

    # --- permission checks without SQL -----------------------------------------------------
    # Roles are the in-memory matrix (app/permissions.py); FAB would otherwise query the Public
    # role for every menu item an anonymous visitor sees, and the user's groups on every check.
    def is_item_public(self, permission_name, view_name):
        return any(
            re.match(view, view_name) and re.match(perm, permission_name)
            for view, perm in self.builtin_roles.get(self.auth_role_public, [])
        )

    def has_access(self, permission_name: str, view_name: str) -> bool:
        # A page asks the same questions many times (every menu item, every link): answer each
        # once per request and user. The key holds the user id, so a sign-in mid-request asks anew.
        user_id = getattr(getattr(g, "user", None), "id", None)
        key = (user_id, permission_name, view_name)
        answers = g.setdefault("_oblako_access", {})
        if key not in answers:
            answers[key] = super().has_access(permission_name, view_name)
        return answers[key]

    def get_user_roles(self, user):
        if not user.is_authenticated:
            return [self.get_public_role()]
        return list(user.roles)

    # --- sessions --------------------------------------------------------------------------
    def load_user(self, pk):
        # The user and its roles up front (every page checks permissions against them); selectin
        # rather than a join, which SQLite plans as a scan of ab_user_role.
        user = (
            self.session.execute(
                select(OblakoUser)
                .options(selectinload(OblakoUser.roles))
                .where(OblakoUser.id == int(pk))
            )
            .unique()
            .scalar_one_or_none()
        )
        if user is None or not user.is_active:
            return None
        if session.get(SESSION_GENERATION_KEY) != user.session_generation:
            return None  # revoked by logout, password change or deactivation elsewhere
        return user

    def load_user_jwt(self, _jwt_header, jwt_data):
        user = self.get_user_by_id(int(jwt_data["sub"]))
        if user is None or not user.is_active:
            return None
        if jwt_data.get(JWT_GENERATION_CLAIM) != user.session_generation:
            return None
        g.user = user
        return user

    def create_jwt_manager(self, app) -> JWTManager:
        jwt_manager = super().create_jwt_manager(app)

        @jwt_manager.additional_claims_loader
        def _generation_claim(identity):
            user = self.get_user_by_id(int(identity))
            return {JWT_GENERATION_CLAIM: user.session_generation if user else -1}

        return jwt_manager

    def reset_password(self, userid, password):
        """Every password change revokes the user's other sessions and tokens."""
        # FAB's reset form takes the user from ?pk= as it comes: missing, not a number (a
        # database error on PostgreSQL) or nobody is 404, as any unknown record.
        raw = str(userid or "")
        user = None
        if raw.isascii() and raw.isdigit() and int(raw) < INT32:
            user = self.get_user_by_id(int(raw))
        if user is None:
            abort(404)
        revoke_sessions(user)
        super().reset_password(user.id, password)
        if session.get("_user_id") == str(user.id):
            session[SESSION_GENERATION_KEY] = user.session_generation

    def update_user(self, user):
        if not user.active:
            user.session_generation = (user.session_generation or 0) + 1
        return super().update_user(user)


def revoke_sessions(user: OblakoUser | None) -> None:
    """Invalidate every session cookie and API token issued to the user so far."""
    if user is not None:
        user.session_generation = (user.session_generation or 0) + 1


def _remember_generation(sender, user, **extra) -> None:
    session[SESSION_GENERATION_KEY] = user.session_generation


def _revoke_on_logout(sender, user, **extra) -> None:
    if user is None or not getattr(user, "id", None):
        return
    sm = current_app.appbuilder.sm
    fresh = sm.get_user_by_id(user.id)
    if fresh is not None:
        revoke_sessions(fresh)
        sm.session.commit()
    session.pop(SESSION_GENERATION_KEY, None)
