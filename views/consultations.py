"""Pathway 1: the patient's application to a centre, and the doctors' care screens.

Thin views (DESIGN §3): FAB permission check, row scope through app.consultations (404 for what
is not yours), the form, one service call in one unit of work, a message and a redirect.
"""

from __future__ import annotations

import uuid
from datetime import date

from flask import abort, current_app, flash, g, redirect, request, url_for
from flask_appbuilder import AppBuilder, BaseView, expose, has_access
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from flask_wtf.file import FileField
from wtforms import (
    DateField,
    IntegerField,
    SelectField,
    TextAreaField,
    TimeField,
)
from wtforms.validators import InputRequired, Length, NumberRange, Optional

from app import consultations as svc
from app.booking import mode_label, topic_label
from app.cabinet import patient_consultations
from app.conclusions.access import latest_conclusion
from app.dates import format_in_zone, zone_label
from app.documents.checks import ACCEPT
from app.documents.upload import today_for
from app.errors import DomainError, NotFound
from app.labels import PATIENT_KIND_LABELS, PATIENT_STATUS_LABELS
from app.media import media_open
from app.roles import role_names
from models import ConsultationStatus, utcnow
from views.common import (
    REQUIRED,
    current_patient,
    document_types,
    endpoint_url,
    own_document_choices,
    parse_uuids,
    template_helpers,
    type_label,
    unit_of_work,
    upload_from_request,
)

# The statuses in which the list offers «Добавить документы» as the next action.
NEEDS_DOCUMENTS = frozenset(
    {ConsultationStatus.AWAITING_DOCUMENTS, ConsultationStatus.NEEDS_DOCUMENTS}
)
# ---------------------------------------------------------------------------------------------
# Patient: «Консультации» — the list, one consultation, cancelling it, adding documents.
# ---------------------------------------------------------------------------------------------


class CancelForm(FlaskForm):
    reason = TextAreaField(
        _l("Reason for cancelling"),
        validators=[InputRequired(message=REQUIRED), Length(max=svc.REASON_MAX)],
    )


class AttachForm(FlaskForm):
    file = FileField(_l("File"))
    file_type = SelectField(_l("Document type"), coerce=int, validate_choice=False)


def patient_consultation(public_id: uuid.UUID):
    try:
        return svc.consultation_for_patient(g.user, public_id)
    except NotFound:
        abort(404)


def conclusion_url(c) -> str | None:
    """The conclusion's PDF, once the conclusions area serves it and one has been issued."""
    if "ConclusionView.pdf" not in current_app.view_functions:
        return None
    conclusion = latest_conclusion(c)
    if conclusion is None:
        return None
    return url_for("ConclusionView.pdf", public_id=conclusion.public_id)


def patient_show(view: BaseView, public_id: uuid.UUID):
    c = patient_consultation(public_id)
    types = document_types()
    attach_form = AttachForm()
    attach_form.file_type.choices = [(t.id, type_label(t)) for t in types]
    attached = {d.id for d in c.documents}
    return view.render_template(
        "oblako/consultation_show.html",
        c=c,
        patient=c.patient,
        cancellable=c.status in svc.CANCELLABLE,
        documents_open=c.status in svc.DOCUMENTS_OPEN,
        attachable=[d for d in own_document_choices(g.user) if d.id not in attached],
        cancel_form=CancelForm(),
        attach_form=attach_form,
        conclusion_url=conclusion_url(c),
        accept=ACCEPT,
        statuses=ConsultationStatus,
        title=_("Consultation %(number)s", number=str(c)),
        **template_helpers(),
    )


def patient_cancel(public_id: uuid.UUID):
    c = patient_consultation(public_id)
    form = CancelForm()
    if not form.validate_on_submit():
        flash(form_errors(form) or _("Check the form."), "danger")
    else:
        try:
            with unit_of_work():
                svc.cancel_consultation(c, by=g.user, reason=form.reason.data)
        except DomainError as exc:
            flash(str(exc), "danger")
        else:
            flash(_("The consultation has been cancelled."), "success")
    return redirect(url_for("MyConsultationView.show", public_id=public_id))


def patient_attach(public_id: uuid.UUID):
    c = patient_consultation(public_id)
    form = AttachForm()
    patient = c.patient
    if not form.validate_on_submit():
        flash(form_errors(form) or _("Check the form."), "danger")
    else:
        try:
            with unit_of_work():
                ids = parse_uuids(request.form.getlist("documents"))
                types_by_id = {t.id: t for t in document_types()}
                new_docs = upload_from_request(patient, types_by_id)
                svc.attach_documents(c, by=g.user, document_ids=ids, new_documents=new_docs)
        except DomainError as exc:
            flash(str(exc), "danger")
        else:
            flash(_("The documents have been added to the consultation."), "success")
    return redirect(url_for("MyConsultationView.show", public_id=public_id))


class MyConsultationView(BaseView):
    """The patient's own consultations: the list, one consultation, cancelling, adding documents."""

    route_base = "/cabinet/consultations"
    default_view = "list"

    @expose("/")
    @has_access
    def list(self):
        patient = current_patient()
        return self.render_template(
            "oblako/my_consultations.html",
            consultations=patient_consultations(patient),
            status_labels=PATIENT_STATUS_LABELS,
            kind_labels=PATIENT_KIND_LABELS,
            # Each card's next action: the room when it is open, documents, cancelling.
            room_url="MediaView.room" if "MediaView.room" in current_app.view_functions else None,
            room_open=media_open,
            needs_documents=NEEDS_DOCUMENTS,
            cancellable=svc.CANCELLABLE,
            patient=patient,
            new_application_url=endpoint_url("ApplicationView.new"),
            title=_("Consultations"),
            appbuilder=self.appbuilder,
        )

    @expose("/<uuid:public_id>")
    @has_access
    def show(self, public_id: uuid.UUID):
        return patient_show(self, public_id)

    @expose("/<uuid:public_id>/cancel", methods=["POST"])
    @has_access
    def cancel(self, public_id: uuid.UUID):
        return patient_cancel(public_id)

    @expose("/<uuid:public_id>/documents", methods=["POST"])
    @has_access
    def attach(self, public_id: uuid.UUID):
        return patient_attach(public_id)


# ---------------------------------------------------------------------------------------------
# Staff: the centre's queue, a consultation, a day
# ---------------------------------------------------------------------------------------------


class ScheduleForm(FlaskForm):
    day = DateField(_l("Date"), validators=[InputRequired(message=REQUIRED)])
    at = TimeField(_l("Time"), validators=[InputRequired(message=REQUIRED)])
    duration = IntegerField(
        _l("Duration, minutes"),
        default=30,
        validators=[
            InputRequired(message=REQUIRED),
            NumberRange(
                min=svc.MIN_DURATION,
                max=svc.MAX_DURATION,
                message=_l(
                    "The duration must be from %(min)d to %(max)d minutes.",
                    min=svc.MIN_DURATION,
                    max=svc.MAX_DURATION,
                ),
            ),
        ],
    )


class MessageForm(FlaskForm):
    message = TextAreaField(
        _l("Which documents are needed"),
        validators=[InputRequired(message=REQUIRED), Length(max=svc.REASON_MAX)],
    )


class ReasonForm(FlaskForm):
    reason = TextAreaField(
        _l("Reason"), validators=[InputRequired(message=REQUIRED), Length(max=svc.REASON_MAX)]
    )


class DayForm(FlaskForm):
    class Meta:
        csrf = False  # a GET filter

    date = DateField(_l("Date"), validators=[Optional()])


def form_errors(form: FlaskForm) -> str:
    return " ".join(str(e) for errors in form.errors.values() for e in errors)


def staff_consultation(public_id: uuid.UUID):
    try:
        return svc.consultation_for_staff(g.user, public_id)
    except NotFound:
        abort(404)


class CareView(BaseView):
    route_base = "/care"
    default_view = "queue"

    @expose("/queue")
    @has_access
    def queue(self):
        doctor = svc.active_doctor(g.user)
        page = (
            svc.doctor_queue(doctor, request.args.get("page", 1, type=int))
            if doctor is not None
            else svc.QueuePage([], 1, svc.QUEUE_PAGE_SIZE, 0, False)
        )
        return self.render_template(
            "oblako/care_queue.html",
            doctor=doctor,
            page=page,
            now=utcnow(),
            title=_("Applications"),
            **template_helpers(),
        )

    @expose("/day")
    @has_access
    def schedule_day(self):
        doctor = svc.active_doctor(g.user)
        form = DayForm(request.args)
        day = form.date.data if form.validate() and form.date.data else None
        if doctor is not None:
            day = day or svc.doctor_today(doctor)
            items = svc.doctor_day(doctor, day)
        else:
            day, items = day or date.today(), []
        form.date.data = day
        return self.render_template(
            "oblako/care_day.html",
            doctor=doctor,
            day=day,
            form=form,
            items=items,
            title=_("My day"),
            **template_helpers(),
        )

    @expose("/consultations/<uuid:public_id>")
    @has_access
    def show(self, public_id: uuid.UUID):
        c = staff_consultation(public_id)
        doctor = svc.active_doctor(g.user)
        schedule_form = ScheduleForm()
        if doctor is not None and not schedule_form.day.data:
            schedule_form.day.data = svc.doctor_today(doctor)
        patient = c.patient
        return self.render_template(
            "oblako/care_show.html",
            c=c,
            patient=patient,
            age=patient.age_on(today_for(patient)),
            doctor=doctor,
            roles=role_names(g.user),
            can_decide=(
                doctor is not None
                and doctor.center_id is not None
                and doctor.center_id == c.center_id
                and "Doctor" in role_names(g.user)
            ),
            cancellable=c.status in svc.CANCELLABLE,
            schedule_form=schedule_form,
            message_form=MessageForm(),
            reason_form=ReasonForm(),
            statuses=ConsultationStatus,
            now=utcnow(),
            # The conclusions area's screens, linked once it is there (it is built in parallel).
            start_url=endpoint_url("ConclusionView.start", public_id=c.public_id),
            conclusion_form_url=endpoint_url("ConclusionView.new", public_id=c.public_id),
            title=_("Consultation %(number)s", number=str(c)),
            **template_helpers(),
        )

    def _act(self, public_id: uuid.UUID, form: FlaskForm, action, success: str):
        c = staff_consultation(public_id)
        if not form.validate_on_submit():
            flash(form_errors(form) or _("Check the form."), "danger")
        else:
            try:
                with unit_of_work():
                    action(c, form)
            except DomainError as exc:
                flash(str(exc), "danger")
            else:
                flash(success, "success")
        return redirect(url_for(".show", public_id=public_id))

    @expose("/consultations/<uuid:public_id>/schedule", methods=["POST"])
    @has_access
    def schedule(self, public_id: uuid.UUID):
        return self._act(
            public_id,
            ScheduleForm(),
            lambda c, f: svc.schedule_consultation(
                c, by=g.user, day=f.day.data, at=f.at.data, duration_minutes=f.duration.data
            ),
            _("The consultation has been scheduled, the patient has been notified."),
        )

    @expose("/consultations/<uuid:public_id>/request-documents", methods=["POST"])
    @has_access
    def request_documents(self, public_id: uuid.UUID):
        return self._act(
            public_id,
            MessageForm(),
            lambda c, f: svc.request_documents(c, by=g.user, message=f.message.data),
            _("The patient has been asked for documents."),
        )

    @expose("/consultations/<uuid:public_id>/reject", methods=["POST"])
    @has_access
    def reject(self, public_id: uuid.UUID):
        return self._act(
            public_id,
            ReasonForm(),
            lambda c, f: svc.reject_consultation(c, by=g.user, reason=f.reason.data),
            _("The application has been declined, the patient has been notified."),
        )

    @expose("/consultations/<uuid:public_id>/cancel", methods=["POST"])
    @has_access
    def cancel(self, public_id: uuid.UUID):
        return self._act(
            public_id,
            ReasonForm(),
            lambda c, f: svc.cancel_consultation(c, by=g.user, reason=f.reason.data),
            _("The consultation has been cancelled, the patient has been notified."),
        )


def setup(appbuilder: AppBuilder) -> None:
    # Times of a consultation are shown in a named person's zone (the doctor's, the patient's),
    # not only the viewer's: a global, so that the cabinet's list can use it too.
    current_app.jinja_env.globals.setdefault("in_zone", format_in_zone)
    current_app.jinja_env.globals.setdefault("zone_label", zone_label)
    # A consultation's mode (video / sound only) and a duty booking's topic, on every page.
    current_app.jinja_env.globals.setdefault("mode_label", mode_label)
    current_app.jinja_env.globals.setdefault("topic_label", topic_label)
