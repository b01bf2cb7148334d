"""Unit of work and small query helpers shared by the services."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.orm.exc import StaleDataError

from app.errors import ChangedMeanwhile
from app.extensions import db


@contextmanager
def unit_of_work() -> Iterator[None]:
    """One transaction per request action: commit on success, roll back on any error.

    A versioned row (Consultation) changed by someone else since it was read updates nothing
    at the flush: that is the user's answer, not a server error — nothing of the action is
    saved and they look again."""
    try:
        yield
        db.session.commit()
    except StaleDataError:
        db.session.rollback()
        raise ChangedMeanwhile() from None
    except BaseException:
        db.session.rollback()
        raise
