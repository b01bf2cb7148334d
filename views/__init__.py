"""Views: thin FAB views, one module per menu area. register_views() owns the menu.

Each module exposes register(appbuilder); the order below is the order of the menu.
"""

from __future__ import annotations

from importlib import import_module

from flask_appbuilder import AppBuilder

MENU_MODULES = (
    "views.home",
    "views.registration",
    "views.cabinet",
    "views.documents",
    "views.booking",
    "views.staff",
    "views.consultations",
    "views.conclusions",
    "views.media",
    "views.recordings",
    "views.referrals",
    "views.scheduling",
    "views.reference",
    "views.reports",
    "views.account",
)


def register_views(appbuilder: AppBuilder) -> None:
    for name in MENU_MODULES:
        import_module(name).register(appbuilder)
