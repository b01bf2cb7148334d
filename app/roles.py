"""Who is who: role membership and the person records behind a user."""

from __future__ import annotations

from app.permissions import ADMIN, DOCTOR, DUTY_DOCTOR, MANAGER, PATIENT


def role_names(user) -> set[str]:
    if user is None or not getattr(user, "is_authenticated", False):
        return set()
    return {role.name for role in user.roles}


def is_patient(user) -> bool:
    return PATIENT in role_names(user)


def is_manager(user) -> bool:
    return bool({MANAGER, ADMIN} & role_names(user))


def is_admin(user) -> bool:
    return ADMIN in role_names(user)


def is_doctor(user) -> bool:
    return bool({DOCTOR, DUTY_DOCTOR} & role_names(user))
