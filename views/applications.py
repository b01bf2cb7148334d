"""Pathway 1, the patient's side: «Новая заявка», the application to a medical centre.

The form leads instead of refusing (issue 17, item 2): the checklist of the chosen disease's
required documents lets her add each missing one right where it is named (several files at
once, or the phone's camera), says before sending what is still missing (application_new.js;
the server stays the authority), and nothing she typed or sent is lost on an error: the files
are kept in «Мои документы» first (each checked on its own), then the application is sent.

Thin view (DESIGN §3): permission, the patient's own rows, one service call per unit of work.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from flask import abort, current_app, flash, g, redirect, request, url_for
from flask_appbuilder import BaseView, expose, has_access
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_babel import ngettext
from flask_wtf import FlaskForm
from flask_wtf.file import FileField
from wtforms import HiddenField, SelectField, StringField, TextAreaField
from wtforms.validators import InputRequired, Length

from app import consultations as svc
from app.accounts import patient_for_user
from app.consultations.applications import (
    ApplicationExists,
    clean_form_token,
    new_form_token,
    refuse_if_resent,
)
from app.documents.checks import ACCEPT, CAMERA_ACCEPT
from app.documents.upload import store_documents, today_for
from app.errors import DomainError
from models import DocumentType, MedicalDocument
from views.common import (
    REQUIRED,
    document_types,
    own_document_choices,
    parse_uuids,
    template_helpers,
    type_label,
    unit_of_work,
    uploads_from_request,
)


def store_uploads(patient, types_by_id: dict[int, DocumentType], chosen: set[str]) -> bool:
    """The application form's files, kept whatever happens to the application: each good one
    is committed to «Мои документы» and ticked in `chosen`; each refused one is named in a
    message. False when a file was refused (the form is shown again, nothing sent)."""
    uploads = uploads_from_request(types_by_id)
    if not uploads:
        return True
    with unit_of_work():
        stored, refused = store_documents(patient, by=g.user, uploads=uploads)
    chosen.update(str(d.public_id) for d in stored)
    if stored:
        flash(
            ngettext(
                "%(num)d file has been added to «My documents» and to this application.",
                "%(num)d files have been added to «My documents» and to this application.",
                len(stored),
            ),
            "info",
        )
    for r in refused:
        message = _("«%(name)s» was not added: %(reason)s", name=r.filename, reason=r.message)
        flash(message, "danger")
    return not refused


@dataclass(frozen=True)
class ChecklistLine:
    """One document type a disease of the centre requires, as the form's checklist shows it."""

    document_type: DocumentType
    diseases: str  # the ids of the diseases that require it, space-separated
    chosen: list[MedicalDocument]  # the ticked documents of this type
    shown: bool  # required by the disease now selected


def checklist(diseases, own, chosen: set[str], selected: str | None) -> list[ChecklistLine]:
    """Every type any of the centre's diseases requires, once, in the catalogue's order."""
    by_type: dict[int, tuple[DocumentType, list[str]]] = {}
    for d in diseases:
        for t in d.required_document_types:
            by_type.setdefault(t.id, (t, []))[1].append(str(d.id))
    lines = [
        ChecklistLine(
            document_type=t,
            diseases=" ".join(ids),
            chosen=[
                doc for doc in own if doc.document_type_id == t.id and str(doc.public_id) in chosen
            ],
            shown=(selected or "") in ids,
        )
        for t, ids in by_type.values()
    ]
    return sorted(lines, key=lambda line: (line.document_type.sort_order, line.document_type.name))


class ApplicationForm(FlaskForm):
    centre = StringField(validators=[InputRequired(message=REQUIRED)])
    disease = SelectField(_l("Disease"), validate_choice=False)
    diagnosis_text = StringField(
        _l("Diagnosis"),
        description=_l("If your disease is not in the list, type the diagnosis yourself."),
        validators=[Length(max=svc.DIAGNOSIS_MAX)],
    )
    complaints = TextAreaField(
        _l("Complaints, briefly"),
        validators=[InputRequired(message=REQUIRED), Length(max=svc.COMPLAINTS_MAX)],
    )
    file = FileField(_l("File"))
    file_type = SelectField(_l("Document type"), coerce=int, validate_choice=False)
    # One id per form shown: the same form sent twice creates one application.
    form_token = HiddenField()


class ApplicationView(BaseView):
    route_base = "/cabinet/applications"
    default_view = "new"

    @expose("/new", methods=["GET", "POST"])
    @has_access
    def new(self):
        patient = patient_for_user(g.user) or abort(404)
        centre_id = request.values.get("centre") or ""
        try:
            centre = svc.active_centre(uuid.UUID(centre_id)) if centre_id else None
        except ValueError:
            centre = None
        if centre is None:
            if centre_id:
                flash(_("Choose a medical centre from the list."), "warning")
            return self.render_template(
                "oblako/application_centres.html",
                centres=svc.active_centres(),
                title=_("New application"),
                **template_helpers(),
            )

        diseases = svc.centre_diseases(centre)
        types = document_types()
        own = own_document_choices(g.user)
        form = ApplicationForm()
        form.centre.data = str(centre.public_id)
        form.disease.choices = [("", _("Not in the list"))] + [
            (str(d.id), f"{d.icd10_code} {d.name}") for d in diseases
        ]
        form.file_type.choices = [(t.id, type_label(t)) for t in types]
        form.form_token.data = clean_form_token(form.form_token.data) or new_form_token()
        chosen = set(request.form.getlist("documents"))
        status = 200
        open_one = None
        if request.method == "POST":
            status = 400
            try:  # sent twice: the first one went through, files and all
                refuse_if_resent(patient.id, clean_form_token(form.form_token.data))
            except ApplicationExists as exc:
                flash(str(exc), "info")
                return redirect(
                    url_for("MyConsultationView.show", public_id=exc.existing.public_id)
                )
            files_ok = store_uploads(patient, {t.id: t for t in types}, chosen)
            own = own_document_choices(g.user)
            if not files_ok:
                pass  # the refused files are named above; the rest is kept and shown again
            elif form.validate_on_submit():
                try:
                    disease_id = int(form.disease.data) if form.disease.data else None
                except ValueError:
                    disease_id = -1  # refused by the service as "not in the catalogue"
                try:
                    with unit_of_work():
                        data = svc.ApplicationData(
                            centre_public_id=centre.public_id,
                            disease_id=disease_id,
                            diagnosis_text=form.diagnosis_text.data or "",
                            complaints=form.complaints.data or "",
                            document_ids=tuple(parse_uuids(sorted(chosen))),
                            form_token=clean_form_token(request.form.get("form_token")),
                        )
                        consultation = svc.submit_application(g.user, data)
                except ApplicationExists as exc:
                    if exc.resent:
                        flash(str(exc), "info")
                        return redirect(
                            url_for("MyConsultationView.show", public_id=exc.existing.public_id)
                        )
                    open_one, status = exc.existing, 409
                except DomainError as exc:
                    flash(str(exc), "danger")
                else:
                    flash(
                        _(
                            "The application has been sent. The doctors of the centre will "
                            "review it and set the date and time of the consultation."
                        ),
                        "success",
                    )
                    return redirect(
                        url_for("MyConsultationView.show", public_id=consultation.public_id)
                    )
            else:
                flash(_("Check the form: some fields are not filled in correctly."), "danger")
        lines = checklist(diseases, own, chosen, form.disease.data)
        return (
            self.render_template(
                "oblako/application_new.html",
                form=form,
                centre=centre,
                patient=patient,
                age=patient.age_on(today_for(patient)),
                diseases=diseases,
                own_documents=own,
                chosen=chosen,
                checklist=lines,
                missing=[type_label(x.document_type) for x in lines if x.shown and not x.chosen],
                open_application=open_one,
                max_bytes=int(current_app.config["MAX_DOCUMENT_BYTES"]),
                max_total=int(current_app.config["MAX_CONTENT_LENGTH"]) - 2**20,
                accept=ACCEPT,
                camera_accept=CAMERA_ACCEPT,
                title=_("New application"),
                **template_helpers(),
            ),
            status,
        )
