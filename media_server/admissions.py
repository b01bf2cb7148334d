"""Re-admission marks ("admitted in this room in the last ten minutes") in the database.

A participant whose socket drops comes straight back into the call instead of the waiting room
(docs/media-contract.md, `room.enter`). Several media processes share these marks in Redis
(rooms.RedisRooms); a single process without Redis (the embedded default) kept them in its
memory, so a media server restart sent the patient back to the waiting room. `DbAdmissions`
keeps them in models.MediaAdmission instead, through the process's ChatStore threads: an
admission is a rare event, one small write.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite

from models import MediaAdmission

_adm = MediaAdmission.__table__


class DbAdmissions:
    def __init__(self, store: Any, window_seconds: float) -> None:
        self.store = store  # media_server.store.ChatStore: .engine and .run(fn, *args)
        self.window = timedelta(seconds=window_seconds)

    def _mark(self, room: str, sub: str) -> None:
        engine = self.store.engine
        dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
        now = datetime.now(UTC)
        stmt = dialect.insert(_adm).values(room=room, subject=sub, admitted_at=now)
        stmt = stmt.on_conflict_do_update(
            index_elements=["room", "subject"], set_={"admitted_at": now}
        )
        with engine.begin() as conn:
            conn.execute(stmt)

    def _forget(self, room: str, sub: str | None) -> None:
        stmt = delete(_adm).where(_adm.c.room == room)
        if sub is not None:
            stmt = stmt.where(_adm.c.subject == sub)
        with self.store.engine.begin() as conn:
            conn.execute(stmt)

    def _recent(self, room: str, sub: str) -> bool:
        since = datetime.now(UTC) - self.window
        stmt = select(_adm.c.admitted_at).where(
            _adm.c.room == room, _adm.c.subject == sub, _adm.c.admitted_at >= since
        )
        with self.store.engine.connect() as conn:
            return conn.execute(stmt).first() is not None

    def _sweep(self) -> None:
        since = datetime.now(UTC) - self.window
        with self.store.engine.begin() as conn:
            conn.execute(delete(_adm).where(_adm.c.admitted_at < since))

    async def mark(self, room: str, sub: str) -> None:
        await self.store.run(self._mark, room, sub)

    async def forget(self, room: str, sub: str | None = None) -> None:
        await self.store.run(self._forget, room, sub)

    async def recent(self, room: str, sub: str) -> bool:
        return await self.store.run(self._recent, room, sub)

    async def sweep(self) -> None:
        await self.store.run(self._sweep)
