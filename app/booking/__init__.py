"""Pathway 2: booking a duty doctor by schedule («у дежурного врача (по расписанию)»).

A patient picks a free slot of an active duty doctor in the next BOOKING_WINDOW_DAYS days; the
booking is a `duty` consultation created directly in status `scheduled`. The package is the
area's public face; its modules:

- slots.py  the free slots the page lists, and the rule of a bookable slot
- book.py   book_slot(): locks, the limit of upcoming bookings, the insert the partial unique
            index arbitrates, the doctor's notification and the audit event

Cancelling a booking is a transition of the consultation (app.consultations.transitions).
"""

from app.booking.book import (
    DEFAULT_MAX_UPCOMING_DUTY_BOOKINGS,
    MAX_DOCUMENTS,
    MODE_LABELS,
    QUESTION_MAX,
    book_slot,
    is_slot_conflict,
    max_upcoming_bookings,
    mode_label,
    own_documents_for_booking,
    topic_label,
    upcoming_duty_bookings,
)
from app.booking.slots import (
    BOOKING_WINDOW_DAYS,
    SLOT_TAKEN,
    TOPIC_LABELS,
    BookingError,
    DayChoices,
    DaySlots,
    DoctorCard,
    DoctorSlots,
    FreeSlot,
    SlotChoice,
    SlotNotFound,
    TimeChoice,
    bookable_slot,
    clean_topic,
    free_counts_by_topic,
    free_slots,
    free_slots_by_doctor,
    free_times_by_day,
    serves_topic,
    shift_topics,
    slot_choice,
    topic_codes,
)

__all__ = [
    "BOOKING_WINDOW_DAYS",
    "DEFAULT_MAX_UPCOMING_DUTY_BOOKINGS",
    "MAX_DOCUMENTS",
    "MODE_LABELS",
    "QUESTION_MAX",
    "SLOT_TAKEN",
    "TOPIC_LABELS",
    "BookingError",
    "DayChoices",
    "DaySlots",
    "DoctorCard",
    "DoctorSlots",
    "FreeSlot",
    "SlotChoice",
    "SlotNotFound",
    "TimeChoice",
    "book_slot",
    "bookable_slot",
    "clean_topic",
    "free_counts_by_topic",
    "free_slots",
    "free_slots_by_doctor",
    "free_times_by_day",
    "is_slot_conflict",
    "max_upcoming_bookings",
    "mode_label",
    "own_documents_for_booking",
    "serves_topic",
    "shift_topics",
    "slot_choice",
    "topic_codes",
    "topic_label",
    "upcoming_duty_bookings",
]
