"""Starting a consultation and the doctor's conclusion (form, versions, PDF download).

Thin views (DESIGN §3, §7): FAB permission check, row scope through app.consultations
(404 for what is not yours), one service call in one unit of work, a message. The PDF is served
only from here, through views.common.download (an attachment, nosniff, no-store), and every
download is audited.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import asdict

from flask import abort, current_app, flash, g, redirect, request, url_for
from flask_appbuilder import BaseView, expose
from flask_appbuilder.security.decorators import has_access
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from sqlalchemy.exc import IntegrityError
from wtforms import BooleanField, StringField, TextAreaField
from wtforms.validators import InputRequired

from app.accounts import doctor_for_user
from app.conclusions import ConclusionFontMissing
from app.conclusions import start as start_svc
from app.conclusions.access import conclusions_of, find_conclusion
from app.conclusions.form import REQUIRED_FIELDS, ConclusionData, clean_data, prefill, validate_data
from app.conclusions.issue import check_can_issue, issue_conclusion, may_issue
from app.conclusions.pdf import conclusion_bytes, pdf_filename
from app.consultations import ConsultationError, consultation_for_staff
from app.documents.upload import today_for
from app.errors import NotFound
from app.labels import PATIENT_KIND_LABELS, PATIENT_STATUS_LABELS
from models import Consultation, ConsultationStatus
from views.common import download, unit_of_work

log = logging.getLogger(__name__)


class ConclusionForm(FlaskForm):
    complaints_history = TextAreaField(
        _l("Complaints and history"),
        validators=[InputRequired(message=REQUIRED_FIELDS["complaints_history"])],
        render_kw={"rows": 5},
    )
    findings = TextAreaField(
        _l("Findings on the documents"),
        description=_l("What the discharge summaries, scans and tests show."),
        render_kw={"rows": 5},
    )
    diagnosis = TextAreaField(
        _l("Diagnosis"),
        validators=[InputRequired(message=REQUIRED_FIELDS["diagnosis"])],
        render_kw={"rows": 2},
    )
    icd10_code = StringField(
        _l("ICD-10 code"),
        validators=[InputRequired(message=REQUIRED_FIELDS["icd10_code"])],
        description=_l("A Latin letter and two digits, optionally a dot and more digits: I21.0"),
        render_kw={"maxlength": "16", "autocomplete": "off", "spellcheck": "false"},
    )
    recommendations = TextAreaField(
        _l("Recommendations"),
        validators=[InputRequired(message=REQUIRED_FIELDS["recommendations"])],
        render_kw={"rows": 5},
    )
    in_person_visit_needed = BooleanField(_l("An in-person visit to a doctor is needed"))
    next_steps = TextAreaField(_l("Next steps"), render_kw={"rows": 3})

    def to_data(self) -> ConclusionData:
        return ConclusionData(
            complaints_history=self.complaints_history.data or "",
            findings=self.findings.data or "",
            diagnosis=self.diagnosis.data or "",
            icd10_code=self.icd10_code.data or "",
            recommendations=self.recommendations.data or "",
            in_person_visit_needed=bool(self.in_person_visit_needed.data),
            next_steps=self.next_steps.data or "",
        )


def _consultation(public_id: uuid.UUID) -> Consultation:
    try:
        return consultation_for_staff(g.user, public_id)
    except NotFound:
        abort(404)


def _back_to(consultation: Consultation) -> str:
    """The consultation's page in the care area when it exists, else the conclusion page."""
    if "CareView.show" in current_app.view_functions:
        return url_for("CareView.show", public_id=consultation.public_id)
    return url_for("ConclusionView.new", public_id=consultation.public_id)


def _endpoint(name: str) -> bool:
    return name in current_app.view_functions


class ConclusionView(BaseView):
    route_base = ""
    default_view = "new"

    @expose("/care/consultations/<uuid:public_id>/start", methods=["POST"])
    @has_access
    def start(self, public_id: uuid.UUID):
        consultation = _consultation(public_id)
        try:
            with unit_of_work():
                start_svc.start_consultation(consultation, by=doctor_for_user(g.user))
        except ConsultationError as exc:
            flash(str(exc), "danger")
        else:
            flash(_("The consultation has started; the patient has been notified."), "success")
        return redirect(_back_to(consultation))

    @expose("/care/consultations/<uuid:public_id>/conclusion", methods=["GET", "POST"])
    @has_access
    def new(self, public_id: uuid.UUID):
        consultation = _consultation(public_id)
        doctor = doctor_for_user(g.user)
        status_code = 200
        if request.method == "POST":
            form = ConclusionForm()
            try:
                # Who and when first: a refused actor hears why, not about empty fields.
                check_can_issue(consultation, doctor)
            except ConsultationError as exc:
                flash(str(exc), "danger")
                status_code = 400
            else:
                if form.validate_on_submit() and self._check(form):
                    try:
                        with unit_of_work():
                            conclusion = issue_conclusion(
                                consultation, by=doctor, data=form.to_data()
                            )
                    except ConsultationError as exc:
                        flash(str(exc), "danger")
                        status_code = 400
                    except IntegrityError:
                        # Two submissions at once: the unique (consultation, version) refused
                        # the second; the doctor's text is still in the form below.
                        log.info("concurrent conclusion for %s", consultation.public_id)
                        flash(
                            _(
                                "Another version of this conclusion was issued at the same "
                                "moment. Check the versions below and submit again."
                            ),
                            "danger",
                        )
                        status_code = 409
                    else:
                        if conclusion.version == 1:
                            message = _(
                                "The conclusion has been issued and the consultation is "
                                "completed; the patient has been notified."
                            )
                        else:
                            message = _(
                                "Version %(version)d of the conclusion has been issued; the "
                                "patient has been notified.",
                                version=conclusion.version,
                            )
                        flash(message, "success")
                        return redirect(url_for(".new", public_id=consultation.public_id))
                else:
                    if form.csrf_token.errors:
                        flash(_("The form has expired: please submit it again."), "danger")
                    status_code = 400
        else:
            form = ConclusionForm(formdata=None, data=asdict(prefill(consultation)))
        return (
            self.render_template(
                "oblako/conclusion_form.html",
                consultation=consultation,
                versions=conclusions_of(consultation),
                form=form,
                may_issue=may_issue(consultation, doctor),
                can_start=start_svc.can_start(consultation, doctor),
                correcting=consultation.status == ConsultationStatus.COMPLETED,
                status_labels=PATIENT_STATUS_LABELS,
                kind_labels=PATIENT_KIND_LABELS,
                today=today_for(consultation.patient),
                back_url=_back_to(consultation),
                has_endpoint=_endpoint,
                title=_("Conclusion"),
            ),
            status_code,
        )

    @staticmethod
    def _check(form: ConclusionForm) -> bool:
        """The service's own field rules (ICD-10, lengths), shown under the fields."""
        problems = validate_data(clean_data(form.to_data()))
        for name, message in problems.items():
            getattr(form, name).errors = [*getattr(form, name).errors, str(message)]
        return not problems

    @expose("/conclusions/<uuid:public_id>.pdf")
    @has_access
    def pdf(self, public_id: uuid.UUID):
        # The audit event (allowed or denied) is committed before we answer, even with a 404.
        with unit_of_work():
            conclusion = find_conclusion(g.user, public_id)
        if conclusion is None:
            abort(404)
        try:
            data = conclusion_bytes(conclusion)
        except ConclusionFontMissing:
            log.exception("conclusion %s cannot be rebuilt", conclusion.public_id)
            abort(503)
        return download(data, filename=pdf_filename(conclusion), mimetype="application/pdf")
