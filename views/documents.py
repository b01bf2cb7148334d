"""Medical documents: the patient's «Мои документы», the staff's patient documents, a JSON list.

Thin views: FAB permission check, row scope through app.documents / app.access (404 for what is
not yours), one service call in one unit of work, message. Files are only ever served from here,
through views.common.download (nosniff, no-store), and every look at a document is audited by
the service.
"""

from __future__ import annotations

import uuid

from flask import (
    Response,
    abort,
    current_app,
    flash,
    g,
    jsonify,
    redirect,
    request,
    url_for,
)
from flask_appbuilder import AppBuilder, BaseView, expose
from flask_appbuilder.api import BaseApi
from flask_appbuilder.security.decorators import has_access, permission_name, protect
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from flask_wtf.file import FileField
from sqlalchemy import select
from wtforms import DateField, SelectField, TextAreaField
from wtforms.validators import DataRequired, Length, Optional

from app.access import staff_patient_condition
from app.accounts import patient_for_user
from app.dates import format_in_zone, zone_label
from app.documents import DocumentError
from app.documents import access as docs
from app.documents import readers as document_readers
from app.documents.upload import NOTE_MAX, store_document, today_for
from app.extensions import db
from models import DocumentType, MedicalDocument, Patient
from views.common import current_patient, download, human_size, type_label, unit_of_work

# The inline preview is a document of its own: no script, no plugin, no navigation; only the
# picture or the PDF itself. frame-ancestors keeps it embeddable by our pages alone.
INLINE_CSP = (
    "sandbox; default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; "
    "object-src 'self'; frame-ancestors 'self'"
)


# ---------------------------------------------------------------------------------------------
# Presentation helpers
# ---------------------------------------------------------------------------------------------


def _template_helpers() -> dict:
    return {"type_label": type_label, "human_size": human_size, "is_image": docs.is_image}


def _serve(doc: MedicalDocument, *, inline: bool) -> Response:
    path = docs.document_path(doc)
    if not path.is_file():
        abort(404)
    return download(
        path,
        filename=docs.download_name(doc),
        mimetype=doc.content_type,
        inline_csp=INLINE_CSP if inline else None,
    )


def _find(public_id: uuid.UUID, *, scope: str, action: str) -> MedicalDocument:
    # The audit event (allowed or denied) is committed before we answer, even with a 404.
    with unit_of_work():
        doc = docs.find_document(g.user, public_id, scope=scope, action=action)
    if doc is None:
        abort(404)
    return doc


# ---------------------------------------------------------------------------------------------
# Patient: «Мои документы»
# ---------------------------------------------------------------------------------------------


def _render_show(view, doc, *, staff: bool, inline_endpoint: str):
    """The document page, shared by the patient's and the staff's views (same template)."""
    return view.render_template(
        "oblako/documents_show.html",
        doc=doc,
        title=doc.original_name,
        staff=staff,
        inline_url=url_for(inline_endpoint, public_id=doc.public_id),
        download_url=url_for(".download", public_id=doc.public_id),
        dicom=docs.dicom_summary(doc),
        **_template_helpers(),
    )


class UploadForm(FlaskForm):
    file = FileField(_l("File"))
    document_type = SelectField(
        _l("Document type"), coerce=int, validators=[DataRequired(_l("Choose the document type."))]
    )
    document_date = DateField(_l("Document date"), validators=[Optional()])
    note = TextAreaField(_l("Note"), validators=[Length(max=NOTE_MAX)])


def _document_types() -> list[DocumentType]:
    stmt = select(DocumentType).order_by(DocumentType.sort_order, DocumentType.name)
    return list(db.session.execute(stmt).scalars())


class MyDocumentView(BaseView):
    route_base = "/cabinet/documents"
    default_view = "list"

    @expose("/")
    @has_access
    def list(self):
        page = docs.own_documents(g.user, page=request.args.get("page", 1, type=int))
        return self.render_template(
            "oblako/documents.html", page=page, title=_("My documents"), **_template_helpers()
        )

    @expose("/readers")
    @has_access
    def readers(self):
        """«Кто открывал мои документы»: the audit trail's readings of her documents."""
        patient = current_patient()
        page = document_readers.readings_page(patient, request.args.get("page", 1, type=int))
        return self.render_template(
            "oblako/document_readers.html",
            page=page,
            patient=patient,
            in_zone=format_in_zone,
            zone_label=zone_label,
            title=_("Who opened my documents"),
        )

    @expose("/upload", methods=["GET", "POST"])
    @has_access
    def upload(self):
        patient = patient_for_user(g.user) or abort(404)
        types = _document_types()
        form = UploadForm()
        form.document_type.choices = [(t.id, type_label(t)) for t in types]
        status = 200
        if request.method == "POST":
            if form.validate_on_submit():
                by_id = {t.id: t for t in types}
                upload = request.files.get("file")
                try:
                    with unit_of_work():
                        store_document(
                            patient,
                            by=g.user,
                            stream=upload.stream if upload else None,
                            filename=upload.filename if upload else None,
                            document_type=by_id.get(form.document_type.data),
                            document_date=form.document_date.data,
                            note=form.note.data or "",
                        )
                except DocumentError as exc:
                    flash(str(exc), "danger")
                else:
                    flash(_("The document has been uploaded."), "success")
                    return redirect(url_for(".list"))
            status = 400
        return (
            self.render_template(
                "oblako/documents_upload.html",
                form=form,
                title=_("Upload a document"),
                limit_mb=max(1, current_app.config["MAX_DOCUMENT_BYTES"] // 2**20),
                today_iso=today_for(patient).isoformat(),
                **_template_helpers(),
            ),
            status,
        )

    @expose("/<uuid:public_id>/")
    @has_access
    def preview(self, public_id: uuid.UUID):
        doc = _find(public_id, scope="own", action="document.view")
        return _render_show(self, doc, staff=False, inline_endpoint=".inline")

    @expose("/<uuid:public_id>/inline")
    @has_access
    @permission_name("preview")
    def inline(self, public_id: uuid.UUID):
        doc = _find(public_id, scope="own", action="document.preview")
        if not docs.kind_of(doc) or not docs.kind_of(doc).inline:
            abort(404)
        return _serve(doc, inline=True)

    @expose("/<uuid:public_id>/download")
    @has_access
    def download(self, public_id: uuid.UUID):
        doc = _find(public_id, scope="own", action="document.download")
        return _serve(doc, inline=False)

    @expose("/<uuid:public_id>/delete", methods=["POST"])
    @has_access
    def delete(self, public_id: uuid.UUID):
        with unit_of_work():
            doc = docs.find_document(
                g.user, public_id, scope="own", action="document.delete", audit_ok=False
            )
        if doc is None:
            abort(404)
        try:
            with unit_of_work():
                docs.delete_document(doc, by=g.user)
        except DocumentError as exc:
            flash(str(exc), "danger")
        else:
            flash(_("The document has been deleted."), "success")
        return redirect(url_for(".list"))


# ---------------------------------------------------------------------------------------------
# Staff: a patient's documents, for the doctors who care for them
# ---------------------------------------------------------------------------------------------


class StaffDocumentView(BaseView):
    route_base = "/staff/documents"
    default_view = "list"

    @expose("/")
    @has_access
    def list(self):
        patient = None
        if raw := request.args.get("patient"):
            try:
                patient_uuid = uuid.UUID(raw)
            except ValueError:
                abort(404)
            patient = db.session.execute(
                select(Patient).where(
                    Patient.public_id == patient_uuid, staff_patient_condition(g.user)
                )
            ).scalar_one_or_none() or abort(404)
        page = docs.staff_documents(
            g.user, patient=patient, page=request.args.get("page", 1, type=int)
        )
        return self.render_template(
            "oblako/documents_staff.html",
            page=page,
            patient=patient,
            title=_("Patient documents"),
            **_template_helpers(),
        )

    @expose("/<uuid:public_id>/")
    @has_access
    def show(self, public_id: uuid.UUID):
        doc = _find(public_id, scope="staff", action="document.view")
        return _render_show(self, doc, staff=True, inline_endpoint=".preview")

    @expose("/<uuid:public_id>/inline")
    @has_access
    def preview(self, public_id: uuid.UUID):
        doc = _find(public_id, scope="staff", action="document.preview")
        if not docs.kind_of(doc) or not docs.kind_of(doc).inline:
            abort(404)
        return _serve(doc, inline=True)

    @expose("/<uuid:public_id>/download")
    @has_access
    def download(self, public_id: uuid.UUID):
        doc = _find(public_id, scope="staff", action="document.download")
        return _serve(doc, inline=False)


# ---------------------------------------------------------------------------------------------
# JSON for the mobile flows: the caller's own documents
# ---------------------------------------------------------------------------------------------


class MyDocumentApi(BaseApi):
    """GET /api/v1/my/documents/ — session cookie or JWT; the permission is MyDocumentView's
    can_list, so the role matrix has one row for both ways of listing one's documents."""

    route_base = "/api/v1/my/documents"
    class_permission_name = "MyDocumentView"
    method_permission_name = {"get_list": "list"}
    allow_browser_login = True
    openapi_spec_tag = "Documents"

    @expose("/", methods=["GET"])
    @protect()
    def get_list(self):
        page_size = min(max(request.args.get("page_size", 20, type=int), 1), 100)
        page = docs.own_documents(
            g.user, page=request.args.get("page", 1, type=int), page_size=page_size
        )
        response = jsonify(
            count=page.total,
            page=page.page,
            page_size=page.page_size,
            result=[docs.document_as_json(d) for d in page.items],
        )
        response.headers["Cache-Control"] = "no-store"
        return response


def setup(appbuilder: AppBuilder) -> None:
    appbuilder.add_api(MyDocumentApi)
