"""«Запись к дежурному врачу»: the patient picks a free slot of a duty doctor and books it."""

from __future__ import annotations

import uuid

from flask import abort, flash, redirect, request, url_for
from flask_appbuilder import BaseView, expose, has_access
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from sqlalchemy.exc import IntegrityError
from wtforms import HiddenField, RadioField, SelectMultipleField, TextAreaField, widgets
from wtforms.validators import Length

from app.booking import (
    MODE_LABELS,
    QUESTION_MAX,
    SLOT_TAKEN,
    TOPIC_LABELS,
    BookingError,
    SlotNotFound,
    book_slot,
    bookable_slot,
    clean_topic,
    free_counts_by_topic,
    free_times_by_day,
    is_slot_conflict,
    max_upcoming_bookings,
    own_documents_for_booking,
    slot_choice,
)
from app.dates import zone_label
from models import ConsultationMode
from views.common import current_patient, unit_of_work


class MultiCheckboxField(SelectMultipleField):
    widget = widgets.ListWidget(prefix_label=False)
    option_widget = widgets.CheckboxInput()


class BookingForm(FlaskForm):
    mode = RadioField(
        _l("How to connect"),
        choices=[(m.value, label) for m, label in MODE_LABELS.items()],
        default=ConsultationMode.VIDEO.value,
        validate_choice=False,  # book_slot() refuses an unknown mode with its own message
    )
    # The topic picked on the first step; book_slot() checks the slot's shift takes it.
    topic = HiddenField()
    # Ownership is checked by book_slot() (only the patient's own documents), not by choices.
    documents = MultiCheckboxField(_l("Attach documents (optional)"), validate_choice=False)
    question = TextAreaField(
        _l("Your question to the doctor (optional)"),
        validators=[Length(max=QUESTION_MAX)],
        render_kw={"rows": 4, "maxlength": str(QUESTION_MAX)},
    )


class BookingView(BaseView):
    route_base = "/cabinet/booking"
    default_view = "index"

    @expose("/")
    @has_access
    def index(self):
        """A topic first; with ?topic=…, that topic's free times grouped by day."""
        patient = current_patient()
        topic = clean_topic(request.args.get("topic"))
        common = {
            "timezone_label": zone_label(patient.timezone),
            "limit": max_upcoming_bookings(),
            "topic_labels": TOPIC_LABELS,
            "title": _("Book a duty doctor"),
            "appbuilder": self.appbuilder,
        }
        if topic is None:
            if request.args.get("topic"):
                flash(_("Choose a topic from the list."), "warning")
            return self.render_template(
                "oblako/booking.html", topic=None, counts=free_counts_by_topic(), **common
            )
        days = free_times_by_day(patient.timezone, topic)
        return self.render_template(
            "oblako/booking.html",
            topic=topic,
            days=days,
            # Who is on duty for the topic, once each, with what they say about it.
            doctors=list({t.doctor.id: t for d in days for t in d.times}.values()),
            **common,
        )

    @expose("/<uuid:slot_id>", methods=["GET", "POST"])
    @has_access
    def book(self, slot_id: uuid.UUID):
        patient = current_patient()
        try:
            slot = bookable_slot(slot_id)
        except SlotNotFound:
            abort(404)
        except BookingError as exc:
            flash(str(exc), "warning")
            return redirect(url_for(".index"))
        documents = own_documents_for_booking(patient)
        form = BookingForm()
        if request.method == "GET":
            form.topic.data = request.args.get("topic", "")
        topic = clean_topic(form.topic.data)
        form.documents.choices = [(str(d.public_id), d.original_name) for d in documents]
        if request.method == "POST" and form.validate_on_submit():
            try:
                with unit_of_work():
                    book_slot(
                        patient,
                        slot_id,
                        question=form.question.data or "",
                        document_ids=form.documents.data or [],
                        mode=form.mode.data or "",
                        topic=form.topic.data or None,
                    )
            except SlotNotFound:
                abort(404)
            except BookingError as exc:
                flash(str(exc), "danger")
                if exc.slot_gone:
                    return redirect(url_for(".index", topic=topic.value if topic else None))
            except IntegrityError as exc:
                # The index also bites at commit if a flush was deferred: same answer.
                if not is_slot_conflict(exc):
                    raise
                flash(str(SLOT_TAKEN), "danger")
                return redirect(url_for(".index", topic=topic.value if topic else None))
            else:
                flash(
                    _(
                        "You are booked with the duty doctor. The consultation is in "
                        "«Consultations»; the doctor has been notified."
                    ),
                    "success",
                )
                return redirect(url_for("MyConsultationView.list"))
        return self.render_template(
            "oblako/booking_form.html",
            form=form,
            slot=slot,
            choice=slot_choice(slot, patient.timezone),
            topic=topic,
            topic_labels=TOPIC_LABELS,
            documents=documents,
            timezone_label=zone_label(patient.timezone),
            patient_timezone=patient.timezone,
            title=_("Book a duty doctor"),
            appbuilder=self.appbuilder,
        )
