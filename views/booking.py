"""«Запись к дежурному врачу»: the patient picks a free slot of a duty doctor and books it."""

from __future__ import annotations

import uuid

from flask import abort, flash, redirect, request, url_for
from flask_appbuilder import BaseView, expose, has_access
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from sqlalchemy.exc import IntegrityError
from wtforms import RadioField, SelectMultipleField, TextAreaField, widgets
from wtforms.validators import Length

from app.booking import (
    MODE_LABELS,
    QUESTION_MAX,
    SLOT_TAKEN,
    BookingError,
    SlotNotFound,
    book_slot,
    bookable_slot,
    free_slots_by_doctor,
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
    )
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
        patient = current_patient()
        return self.render_template(
            "oblako/booking.html",
            doctors=free_slots_by_doctor(patient.timezone),
            timezone_label=zone_label(patient.timezone),
            limit=max_upcoming_bookings(),
            title=_("Book a duty doctor"),
            appbuilder=self.appbuilder,
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
                    )
            except SlotNotFound:
                abort(404)
            except BookingError as exc:
                flash(str(exc), "danger")
                if exc.slot_gone:
                    return redirect(url_for(".index"))
            except IntegrityError as exc:
                # The index also bites at commit if a flush was deferred: same answer.
                if not is_slot_conflict(exc):
                    raise
                flash(str(SLOT_TAKEN), "danger")
                return redirect(url_for(".index"))
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
            documents=documents,
            timezone_label=zone_label(patient.timezone),
            patient_timezone=patient.timezone,
            title=_("Book a duty doctor"),
            appbuilder=self.appbuilder,
        )
