"""Views: thin FAB views, one module per area. register_views() owns the menu, declared here once.

MENU is the menu as data, in the order a user sees it: each entry's `name` is stable English and
the permission key (menu_access, app/permissions.py), `label` what the user reads, `category` a
key of CATEGORIES, and either `view` (the class registered with the entry) or `href` (a link to a
view registered elsewhere). PAGES are the views reached without a menu entry; SETUP the modules
whose setup(appbuilder) adds what is not a view (template globals, request hooks, the reports
admin, the REST API).

Views are named "module:Class" and imported by register_views(): importing this package (as
create_app and security_config() do) does not import every area.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from typing import Any

from flask_appbuilder import AppBuilder
from flask_babel import lazy_gettext as _l
from werkzeug.utils import import_string


@dataclass(frozen=True)
class Category:
    label: Any
    icon: str = ""


@dataclass(frozen=True)
class MenuEntry:
    name: str  # stable English: the permission key; never translated
    label: Any
    category: str = ""  # a key of CATEGORIES; "" for the top level
    view: str = ""  # "module:Class" registered with this entry
    href: str = ""  # or a link: an endpoint ("View.method") or a path
    icon: str = ""


CATEGORIES: dict[str, Category] = {
    "Cabinet": Category(_l("Cabinet")),
    "Patients": Category(_l("Patients")),
    "Consultations": Category(_l("Consultations"), "fa-stethoscope"),
    "Staff": Category(_l("Staff"), "fa-user-md"),
    "Referrals": Category(_l("Referrals"), "fa-share"),
    "Schedule": Category(_l("Schedule"), "fa-calendar"),
    "Reference": Category(_l("Reference"), "fa-book"),
    # FAB's own menu of users and roles (app/security.py): the administrator's tools.
    "Security": Category(_l("Security"), "fa-cogs"),
}

# fmt: off
MENU: tuple[MenuEntry, ...] = (
    # The patient's cabinet. Staff reach notifications through the bell in the navbar.
    MenuEntry("MyDocuments", _l("My documents"), "Cabinet",
              view="views.documents:MyDocumentView", icon="fa-folder-open"),
    MenuEntry("DutyBooking", _l("Book a duty doctor"), "Cabinet",
              view="views.booking:BookingView", icon="fa-calendar-plus-o"),
    MenuEntry("NewApplication", _l("New application"), "Cabinet",
              view="views.applications:ApplicationView", icon="fa-paper-plane"),
    MenuEntry("MyConsultations", _l("Consultations"), "Cabinet",
              href="MyConsultationView.list", icon="fa-video-camera"),
    MenuEntry("Notifications", _l("Notifications"), "Cabinet",
              href="NotificationView.list", icon="fa-bell"),
    MenuEntry("Profile", _l("Profile"), "Cabinet",
              href="ProfileView.show", icon="fa-user"),
    # Staff
    MenuEntry("PatientDocuments", _l("Patient documents"), "Patients",
              view="views.documents:StaffDocumentView", icon="fa-folder-open"),
    MenuEntry("PatientList", _l("Patients"), "Patients",
              view="views.staff:PatientStaffView", icon="fa-users"),
    MenuEntry("ConsultationList", _l("Consultations"), "Consultations",
              view="views.staff:ConsultationStaffView", icon="fa-stethoscope"),
    MenuEntry("Queue", _l("Applications"), "Consultations",
              view="views.consultations:CareView", icon="fa-inbox"),
    MenuEntry("Day", _l("My day"), "Consultations",
              href="/care/day", icon="fa-calendar"),
    MenuEntry("Doctors", _l("Doctors"), "Staff",
              view="views.staff:DoctorView", icon="fa-user-md"),
    MenuEntry("Outbox", _l("Outbound messages"), "",
              view="views.staff:OutboxView", icon="fa-envelope"),
    MenuEntry("ReferralImports", _l("Referral import"), "Referrals",
              view="views.referrals:ReferralImportView", icon="fa-upload"),
    MenuEntry("DutyShifts", _l("Duty shifts"), "Schedule",
              view="views.scheduling:DutyShiftView"),
    MenuEntry("Slots", _l("Booking slots"), "Schedule",
              view="views.scheduling:SlotView"),
    MenuEntry("Centres", _l("Medical centres"), "Reference",
              view="views.reference:MedicalCenterView"),
    MenuEntry("Diseases", _l("Diseases list"), "Reference",
              view="views.reference:DiseaseView"),
    MenuEntry("DocumentTypes", _l("Document types"), "Reference",
              view="views.reference:DocumentTypeView"),
    MenuEntry("Reports", _l("Reports"), "",
              href="/reports/", icon="fa-bar-chart"),
    MenuEntry("ConnectionCheck", _l("Connection check"), "Security",
              view="views.connection_check:ConnectionCheckView", icon="fa-signal"),
)
# fmt: on

# Reached from links on other pages (the brand link, a consultation, the navbar), not the menu.
PAGES: tuple[str, ...] = (
    "views.registration:RegistrationView",
    "views.cabinet:CabinetView",
    "views.consultations:MyConsultationView",
    "views.cabinet:ProfileView",
    "views.conclusions:ConclusionView",
    "views.media:MediaView",
    "views.media:MediaGuestView",
    "views.recordings:RecordingView",
    "views.account:NotificationView",
    "views.account:ChangePasswordView",
    "views.auth:SignInLinkView",
)

SETUP: tuple[str, ...] = (
    "views.documents",
    "views.consultations",
    "views.media",
    "views.reports",
    "views.account",
    "views.ops",
)


def security_config() -> dict[str, Any]:
    """The configuration app/security.py's manager reads: FAB's screens as fixed here."""
    from views.auth import SECURITY_VIEWS, OblakoAuthDBView
    from views.common import StaffInterface

    return {
        "OBLAKO_SECURITY_VIEWS": {"authdbview": OblakoAuthDBView, **SECURITY_VIEWS},
        # FAB's plain interfaces 500 on /show/<huge id> (PostgreSQL)
        "OBLAKO_SECURITY_INTERFACE": StaffInterface,
    }


def register_views(appbuilder: AppBuilder) -> None:
    for page in PAGES:
        appbuilder.add_view_no_menu(import_string(page))
    for entry in MENU:
        category = CATEGORIES.get(entry.category)
        where: dict[str, Any] = {}
        if category is not None:
            where = {
                "category": entry.category,
                "category_label": category.label,
                "category_icon": category.icon,
            }
        if entry.view:
            appbuilder.add_view(
                import_string(entry.view), entry.name, label=entry.label, icon=entry.icon, **where
            )
        else:
            appbuilder.add_link(
                entry.name, href=entry.href, label=entry.label, icon=entry.icon, **where
            )
    for module in SETUP:
        import_module(module).setup(appbuilder)
