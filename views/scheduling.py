"""Schedule screens: duty shifts (which generate their slots) and the slots themselves.

Managers see and edit every shift; a duty doctor sees only their own shifts and slots (row
scope through RowScope, so show/edit of someone else's row is a 404). Times are typed and shown
in the viewer's time zone and stored in UTC.
"""

from __future__ import annotations

from flask_appbuilder.models.sqla.filters import FilterEqual
from flask_babel import lazy_gettext as _l
from wtforms import SelectMultipleField, widgets
from wtforms.validators import DataRequired, NumberRange

from app.access import staff_schedule_condition
from app.booking import TOPIC_LABELS, clean_topic, topic_codes
from app.errors import DomainError
from app.extensions import db
from app.i18n import local_datetime
from app.staff import create_shift, ensure_shift_deletable, update_shift
from models import DutyShift, Slot
from views.common import (
    LocalDateTimeField,
    RowScope,
    StaffInterface,
    StaffModelView,
    checkbox_field,
    optional_text_field,
    yes_no,
)


def _own_shifts(user):
    return staff_schedule_condition(user, DutyShift.doctor_id)


def _own_slots(user):
    return staff_schedule_condition(user, Slot.doctor_id)


_DATETIME_FORMATTERS = {"starts_at": local_datetime, "ends_at": local_datetime}


class TopicCodesField(SelectMultipleField):
    """The topics a shift takes bookings for, as checkboxes; stored as DutyShift.topic_codes
    (app.booking.topic_codes: none checked means every topic)."""

    widget = widgets.ListWidget(prefix_label=False)
    option_widget = widgets.CheckboxInput()

    def __init__(self, label, **kw) -> None:
        super().__init__(
            label,
            choices=[(t.value, label) for t, label in TOPIC_LABELS.items()],
            description=_l("Patients pick a topic first. None checked: every topic."),
            validate_choice=False,  # an unknown value is dropped (process_formdata)
            **kw,
        )

    def process_data(self, value) -> None:
        self.data = [c for c in (value or "").split() if clean_topic(c) is not None]

    def process_formdata(self, valuelist) -> None:
        self.data = [c for c in valuelist if clean_topic(c) is not None]

    def populate_obj(self, obj, name: str) -> None:
        setattr(obj, name, topic_codes(self.data or ()))


def topic_names(value: str | None) -> str:
    codes = {clean_topic(c) for c in (value or "").split()}
    names = [str(label) for t, label in TOPIC_LABELS.items() if t in codes]
    return ", ".join(names) or str(_l("All topics"))


class DutyShiftView(StaffModelView):
    route_base = "/duty-shifts"
    datamodel = StaffInterface(DutyShift, eager=["doctor"])
    base_filters = [["id", RowScope, _own_shifts]]
    base_order = ("starts_at", "desc")
    list_title = _l("Duty shifts")
    show_title = _l("Duty shift")
    add_title = _l("New duty shift")
    edit_title = _l("Edit duty shift")

    list_columns = ["doctor", "starts_at", "ends_at", "slot_minutes", "topic_codes", "topics"]
    show_columns = ["doctor", "starts_at", "ends_at", "slot_minutes", "topic_codes", "topics"]
    add_columns = edit_columns = [
        "doctor",
        "starts_at",
        "ends_at",
        "slot_minutes",
        "topic_codes",
        "topics",
    ]
    search_columns = ["starts_at", "topics"]
    order_columns = ["starts_at", "ends_at", "slot_minutes"]
    label_columns = {
        "doctor": _l("Duty doctor"),
        "starts_at": _l("Starts"),
        "ends_at": _l("Ends"),
        "slot_minutes": _l("Slot length, minutes"),
        "topics": _l("Topics"),
        "topic_codes": _l("Topics for booking"),
    }
    formatters_columns = {**_DATETIME_FORMATTERS, "topic_codes": topic_names}
    # Only active duty doctors can be put on duty.
    add_form_query_rel_fields = edit_form_query_rel_fields = {
        "doctor": [["is_duty", FilterEqual, True], ["active", FilterEqual, True]]
    }
    add_form_extra_fields = edit_form_extra_fields = {
        "starts_at": LocalDateTimeField(_l("Starts"), validators=[DataRequired()]),
        "ends_at": LocalDateTimeField(_l("Ends"), validators=[DataRequired()]),
        "topics": optional_text_field(_l("Topics"), 2000, textarea=True),
        "topic_codes": TopicCodesField(_l("Topics for booking")),
    }
    validators_columns = {"slot_minutes": [DataRequired(), NumberRange(min=5, max=240)]}

    # FAB calls these inside its own add/edit/delete transaction (datamodel.add/edit/delete
    # commit); a DomainError is flashed by FAB and nothing is written.
    def pre_add(self, item: DutyShift) -> None:
        _rollback_on_error(create_shift, item)

    def pre_update(self, item: DutyShift) -> None:
        _rollback_on_error(update_shift, item)

    def pre_delete(self, item: DutyShift) -> None:
        ensure_shift_deletable(item)


def _rollback_on_error(service, item) -> None:
    """FAB has already copied the form onto the row: undo that before the error is shown."""
    try:
        service(item)
    except DomainError:
        db.session.rollback()
        raise


class SlotView(StaffModelView):
    route_base = "/slots"
    datamodel = StaffInterface(Slot, eager=["doctor"])
    base_filters = [["id", RowScope, _own_slots]]
    base_order = ("starts_at", "desc")
    # A manager blocks or unblocks a slot through edit; slots are made only by shifts.
    base_permissions = ["can_list", "can_show", "can_edit"]
    list_title = _l("Booking slots")
    show_title = _l("Booking slot")
    edit_title = _l("Block or unblock a slot")

    list_columns = ["starts_at", "ends_at", "doctor", "blocked"]
    show_columns = ["starts_at", "ends_at", "doctor", "blocked"]
    # add is not allowed; naming its columns keeps FAB from building a form of every column.
    add_columns = edit_columns = ["blocked"]
    search_columns = ["starts_at", "blocked"]
    order_columns = ["starts_at", "blocked"]
    label_columns = {
        "starts_at": _l("Starts"),
        "ends_at": _l("Ends"),
        "doctor": _l("Duty doctor"),
        "blocked": _l("Blocked"),
    }
    formatters_columns = {**_DATETIME_FORMATTERS, "blocked": yes_no}
    edit_form_extra_fields = {
        "blocked": checkbox_field(
            _l("Blocked"), _l("A blocked slot cannot be booked; existing bookings stay.")
        ),
    }
