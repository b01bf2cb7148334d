"""Re-admission marks ("admitted in this room in the last ten minutes") in the database.

A participant whose socket drops comes straight back into the call instead of the waiting room
(docs/media-contract.md, `room.enter`). Several media processes share these marks in Redis
(rooms.RedisRooms); a single process without Redis (the embedded default) kept them in its
memory, so a media server restart sent the patient back to the waiting room. `DbAdmissions`
keeps them in models.MediaAdmission instead, through the process's ChatStore (`run`): an
admission is a rare event, one small write.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, delete, select
from sqlalchemy.dialects import postgresql, sqlite

from models import MediaAdmission

_adm = MediaAdmission.__table__


class DbAdmissions:
    def __init__(self, store: Any, window_seconds: float) -> None:
        self.store = store  # media_server.store.ChatStore: .run(fn, *args) gives fn a Connection
        self.window = timedelta(seconds=window_seconds)

    @staticmethod
    def _mark(conn: Connection, room: str, sub: str) -> None:
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        now = datetime.now(UTC)
        stmt = dialect.insert(_adm).values(room=room, subject=sub, admitted_at=now)
        stmt = stmt.on_conflict_do_update(
            index_elements=["room", "subject"], set_={"admitted_at": now}
        )
        conn.execute(stmt)
        conn.commit()

    @staticmethod
    def _forget(conn: Connection, room: str, sub: str | None) -> None:
        stmt = delete(_adm).where(_adm.c.room == room)
        if sub is not None:
            stmt = stmt.where(_adm.c.subject == sub)
        conn.execute(stmt)
        conn.commit()

    @staticmethod
    def _recent(conn: Connection, room: str, sub: str, window: timedelta) -> bool:
        since = datetime.now(UTC) - window
        stmt = select(_adm.c.admitted_at).where(
            _adm.c.room == room, _adm.c.subject == sub, _adm.c.admitted_at >= since
        )
        return conn.execute(stmt).first() is not None

    @staticmethod
    def _sweep(conn: Connection, window: timedelta) -> None:
        since = datetime.now(UTC) - window
        conn.execute(delete(_adm).where(_adm.c.admitted_at < since))
        conn.commit()

    async def mark(self, room: str, sub: str) -> None:
        await self.store.run(self._mark, room, sub)

    async def forget(self, room: str, sub: str | None = None) -> None:
        await self.store.run(self._forget, room, sub)

    async def recent(self, room: str, sub: str) -> bool:
        return await self.store.run(self._recent, room, sub, self.window)

    async def sweep(self) -> None:
        await self.store.run(self._sweep, self.window)
