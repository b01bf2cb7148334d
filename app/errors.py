"""Domain errors: raised by services with a translatable, user-facing message."""

from __future__ import annotations

from flask_babel import lazy_gettext as _l


class DomainError(Exception):
    """A rule of the service refused the action; str(exc) is shown to the user."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return str(self.message)


class NotFound(DomainError):
    """The object does not exist or is not the actor's to see (both answer 404)."""


class ChangedMeanwhile(DomainError):
    """Someone else changed the record between reading it and writing it (optimistic lock)."""

    def __init__(self) -> None:
        super().__init__(
            _l("Someone else has just changed this record. Check its current state and try again.")
        )
