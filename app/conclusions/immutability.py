"""Issued conclusions are never changed or deleted: a correction is a new version.

The mapper events refuse an UPDATE or DELETE of a Conclusion row at flush time; bulk UPDATE /
DELETE statements on the table are refused before they reach the database. Armed by importing
app.conclusions.
"""

from __future__ import annotations

from sqlalchemy import event, inspect
from sqlalchemy.orm import Session

from app.conclusions import ConclusionImmutableError
from models import Conclusion


@event.listens_for(Conclusion, "before_update")
def _refuse_update(mapper, connection, target: Conclusion) -> None:

    state = inspect(target)
    changed = [a.key for a in state.attrs if a.history.has_changes()]
    # Relationship attributes (consultation, author) count as changes only if their foreign
    # key column changes too, and those are columns of this table: check columns only.
    changed = [k for k in changed if k in mapper.columns]
    if changed:
        raise ConclusionImmutableError(
            f"an issued conclusion is never changed (tried: {', '.join(sorted(changed))}); "
            "issue a new version instead"
        )


@event.listens_for(Conclusion, "before_delete")
def _refuse_delete(mapper, connection, target: Conclusion) -> None:
    raise ConclusionImmutableError("an issued conclusion is never deleted")


@event.listens_for(Session, "do_orm_execute")
def _refuse_bulk_changes(state) -> None:
    if (state.is_update or state.is_delete) and state.bind_mapper is not None:
        if state.bind_mapper.class_ is Conclusion:
            raise ConclusionImmutableError("issued conclusions are never updated or deleted")
