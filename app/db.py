"""Unit of work and small query helpers shared by the services."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.orm.exc import StaleDataError

from app.audit import client_address
from app.errors import ChangedMeanwhile
from app.extensions import db


@contextmanager
def unit_of_work(*, client_ip: str = "") -> Iterator[None]:
    """One transaction per request action: commit on success, roll back on any error.

    `client_ip`: the address of whoever asked (views pass the request's, views/common.py), which
    the audit events of this transaction record; the services below never read the request.

    A versioned row (Consultation) changed by someone else since it was read updates nothing
    at the flush: that is the user's answer, not a server error — nothing of the action is
    saved and they look again."""
    try:
        with client_address(client_ip):
            yield
        db.session.commit()
    except StaleDataError:
        db.session.rollback()
        raise ChangedMeanwhile() from None
    except BaseException:
        db.session.rollback()
        raise
