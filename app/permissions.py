"""The permission vocabulary and the role matrix, as data.

Roles are Flask-AppBuilder "builtin roles" (FAB_ROLES): their permissions are matched in memory
against this table, so a menu or a permission check costs no SQL. View names are the view classes'
names and stay stable: they are permission keys. Every row here is (view regex, permission regex),
anchored, so nothing is granted by accident of a prefix.
"""

from __future__ import annotations

ADMIN = "Admin"
MANAGER = "Manager"
DOCTOR = "Doctor"
DUTY_DOCTOR = "DutyDoctor"
PATIENT = "Patient"
PUBLIC = "Public"

STAFF_ROLES = (ADMIN, MANAGER, DOCTOR, DUTY_DOCTOR)
ALL_ROLES = (ADMIN, MANAGER, DOCTOR, DUTY_DOCTOR, PATIENT)

READ = "^(can_list|can_show)$"
CRUD = "^(can_list|can_show|can_add|can_edit|can_delete)$"
MENU = "^menu_access$"


def _view(name: str, perms: str) -> tuple[str, str]:
    return (f"^{name}$", perms)


# What every signed-in person may do: their notifications, their password, the language switch.
_COMMON = [
    _view("NotificationView", "^(can_list|can_read|can_mark_read|can_mark_all_read)$"),
    _view("ChangePasswordView", "^(can_this_form_get|can_this_form_post)$"),
    _view("Notifications", MENU),
]

ROLE_MATRIX: dict[str, list[tuple[str, str]]] = {
    ADMIN: [(".*", ".*")],
    MANAGER: [
        *_COMMON,
        _view("MedicalCenterView", CRUD),
        _view("DiseaseView", CRUD),
        _view("DocumentTypeView", CRUD),
        _view("DutyShiftView", CRUD),
        _view("SlotView", "^(can_list|can_show|can_edit)$"),
        _view("DoctorView", CRUD),
        _view("PatientStaffView", READ),
        _view("ConsultationStaffView", READ),
        _view("OutboxView", READ),
        _view(
            "ReferralImportView",
            "^can_(list|show|upload|template|progress|confirm|export|resend)$",
        ),
        _view("(Referrals|ReferralImports)", MENU),
        _view("(Reference|Patients|Consultations|Staff|Centres|Diseases|DocumentTypes)", MENU),
        _view("(Schedule|DutyShifts|Slots|Doctors|PatientList|ConsultationList|Outbox)", MENU),
        # The reports workspace (Flask-Admin, views/reports.py) checks the role itself; this
        # only shows its link in the main menu.
        _view("Reports", MENU),
    ],
    DOCTOR: [
        *_COMMON,
        _view("PatientStaffView", READ),
        _view("StaffDocumentView", "^(can_list|can_show|can_download|can_preview)$"),
        _view("ConsultationStaffView", READ),
        _view("DiseaseView", READ),
        _view("(Patients|Consultations|PatientList|PatientDocuments|ConsultationList)", MENU),
        _view("(Reference|Diseases)", MENU),
        _view(
            "CareView",
            "^can_(queue|show|schedule|request_documents|reject|cancel|schedule_day)$",
        ),
        _view("(Queue|Day)", MENU),
        _view("ConclusionView", "^can_(start|new|pdf)$"),
        _view("MediaView", "^can_(token|room|invite|revoke_invite)$"),
        _view("RecordingView", "^can_(list|consent|play|download)$"),
    ],
    DUTY_DOCTOR: [
        *_COMMON,
        _view("PatientStaffView", READ),
        _view("StaffDocumentView", "^(can_list|can_show|can_download|can_preview)$"),
        _view("ConsultationStaffView", READ),
        _view("DutyShiftView", READ),
        _view("SlotView", READ),
        _view("(Patients|Consultations|PatientList|PatientDocuments|ConsultationList)", MENU),
        _view("(DutyShifts|Slots|Schedule)", MENU),
        _view("CareView", "^can_(show|cancel|schedule_day)$"),
        _view("Day", MENU),
        _view("ConclusionView", "^can_(start|new|pdf)$"),
        _view("MediaView", "^can_(token|room|invite|revoke_invite)$"),
        _view("RecordingView", "^can_(list|consent|play|download)$"),
    ],
    PATIENT: [
        *_COMMON,
        _view("CabinetView", "^can_(index)$"),
        _view(
            "MyDocumentView",
            "^can_(list|upload|download|preview|delete|readers)$",
        ),
        _view("ProfileView", "^can_(show|edit)$"),
        _view("ConclusionView", "^can_pdf$"),
        _view("MyConsultationView", "^can_(list|show|cancel|attach)$"),
        _view("ApplicationView", "^can_new$"),
        _view("BookingView", "^can_(index|book)$"),
        _view("MediaView", "^can_(token|room)$"),
        _view("RecordingView", "^can_(list|consent|play|download)$"),
        _view("(Cabinet|MyDocuments|MyConsultations|Profile)", MENU),
        _view("NewApplication", MENU),
        _view("DutyBooking", MENU),
    ],
    PUBLIC: [],
}
