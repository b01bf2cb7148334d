"""Reference data screens: medical centres, diseases (with required documents), document types.

Plain reference-data editing through FAB's generated CRUD (DESIGN §3). Rows that consultations
or documents still point to cannot be deleted: managers deactivate them instead.
"""

from __future__ import annotations

from flask_babel import lazy_gettext as _l

from app.staff import ensure_unreferenced
from models import Consultation, Disease, DocumentType, MedicalCenter, MedicalDocument
from views.common import (
    StaffInterface,
    StaffModelView,
    checkbox_field,
    joined,
    optional_text_field,
    yes_no,
)


class MedicalCenterView(StaffModelView):
    route_base = "/centres"
    datamodel = StaffInterface(MedicalCenter)
    list_title = _l("Medical centres")
    show_title = _l("Medical centre")
    add_title = _l("New medical centre")
    edit_title = _l("Edit medical centre")

    list_columns = ["name", "profile", "region", "active"]
    show_columns = ["name", "profile", "region", "description", "active"]
    add_columns = edit_columns = ["name", "profile", "region", "description", "active"]
    search_columns = ["name", "profile", "region", "active"]
    order_columns = ["name", "profile", "region"]
    base_order = ("name", "asc")
    label_columns = {
        "name": _l("Centre name"),
        "profile": _l("Profile"),
        "region": _l("Region"),
        "description": _l("Description"),
        "active": _l("Working"),
    }
    formatters_columns = {"active": yes_no}
    add_form_extra_fields = edit_form_extra_fields = {
        "region": optional_text_field(_l("Region"), 128),
        "description": optional_text_field(_l("Description"), 5000, textarea=True),
        "active": checkbox_field(_l("Working"), default=True),
    }

    def pre_delete(self, item: MedicalCenter) -> None:
        ensure_unreferenced(
            Consultation.center_id,
            item.id,
            _l("The centre has consultations: deactivate it instead of deleting."),
        )


class DiseaseView(StaffModelView):
    route_base = "/diseases"
    datamodel = StaffInterface(Disease)
    list_title = _l("Diseases")
    show_title = _l("Disease")
    add_title = _l("New disease")
    edit_title = _l("Edit disease")

    # Relations stay out of the list: many-to-many columns would cost a query per row.
    list_columns = ["icd10_code", "name", "profile", "active"]
    show_columns = ["icd10_code", "name", "profile", "active", "required_document_types", "centers"]
    add_columns = edit_columns = [
        "icd10_code",
        "name",
        "profile",
        "active",
        "required_document_types",
        "centers",
    ]
    search_columns = ["icd10_code", "name", "profile", "active"]
    order_columns = ["icd10_code", "name", "profile"]
    base_order = ("icd10_code", "asc")
    label_columns = {
        "icd10_code": _l("ICD-10 code"),
        "name": _l("Disease name"),
        "profile": _l("Profile"),
        "active": _l("In use"),
        "required_document_types": _l("Required documents"),
        "centers": _l("Medical centres"),
    }
    formatters_columns = {
        "active": yes_no,
        "required_document_types": joined,
        "centers": joined,
    }
    add_form_extra_fields = edit_form_extra_fields = {
        "active": checkbox_field(_l("In use"), default=True),
    }

    def pre_delete(self, item: Disease) -> None:
        ensure_unreferenced(
            Consultation.disease_id,
            item.id,
            _l("The disease has consultations: deactivate it instead of deleting."),
        )


class DocumentTypeView(StaffModelView):
    route_base = "/document-types"
    datamodel = StaffInterface(DocumentType)
    list_title = _l("Document types")
    show_title = _l("Document type")
    add_title = _l("New document type")
    edit_title = _l("Edit document type")

    list_columns = ["code", "name", "name_en", "sort_order"]
    show_columns = add_columns = edit_columns = ["code", "name", "name_en", "sort_order"]
    search_columns = ["code", "name", "name_en"]
    base_order = ("sort_order", "asc")
    label_columns = {
        "code": _l("Code"),
        "name": _l("Type name"),
        "name_en": _l("Type name in English"),
        "sort_order": _l("Order"),
    }
    add_form_extra_fields = edit_form_extra_fields = {
        "name_en": optional_text_field(_l("Type name in English"), 128),
    }

    def pre_delete(self, item: DocumentType) -> None:
        ensure_unreferenced(
            MedicalDocument.document_type_id,
            item.id,
            _l("Documents of this type exist: it cannot be deleted."),
        )
