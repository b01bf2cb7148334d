"""A join token lives only as long as the session it was minted under (issue 15, item 4).

The web app bumps a user's `session_generation` on logout, password change and deactivation
(app/security.py, app/otp.py) and writes the generation into every join token it mints
(app/media_tokens.py). Here the media server holds the token to it:

- at connect, the user must exist, be active and still be on the token's generation, or the
  socket is refused with `session_ended`;
- every SESSION_CHECK_SECONDS, each process reads in one query (per 500 users) the
  generations of the users it has sockets for, and closes the sockets whose session has
  ended (an `error` event with `session_ended` first, so the page can say why).

Polling the database rather than a message from the web app: every process checks only its own
sockets, so it works the same with one process and no Redis (the embedded default) as with
several over Redis; nothing is lost when a process was down or a message went astray; and
every path that bumps the generation (including ones added later) is covered without telling
the media server about it. The chat's hot path stays free of it: a send never queries.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from sqlalchemy import Connection, select

from models import OblakoUser

log = logging.getLogger("media_server")

SESSION_CHECK_SECONDS = 2.0
SESSION_ENDED = "session_ended"  # the code the page shows (views/media.py error_texts)
_CHUNK = 500  # ids per query: well under SQLite's limit on bound parameters

_user = OblakoUser.__table__


def live_generations(conn: Connection, user_ids: Iterable[int]) -> dict[int, int]:
    """{user id: session generation} of those of the users who exist and are active."""
    ids = sorted(set(user_ids))
    live: dict[int, int] = {}
    for start in range(0, len(ids), _CHUNK):
        stmt = select(_user.c.id, _user.c.session_generation).where(
            _user.c.id.in_(ids[start : start + _CHUNK]), _user.c.active.is_(True)
        )
        live.update((row.id, row.session_generation) for row in conn.execute(stmt))
    return live


def session_live(conn: Connection, user_id: int, generation: int | None) -> bool:
    return generation is not None and live_generations(conn, [user_id]).get(user_id) == generation


# conns: server.Conn by sid (.sid, .claims, .kicked); kick(conn, code) tells it why and closes it.
Kick = Callable[[Any, str], Awaitable[None]]


async def sweep(store: Any, conns: Mapping[str, Any], kick: Kick) -> list[str]:
    """Close this process's sockets whose session has ended; returns their sids. `store` is
    the process's ChatStore."""
    held = [c for c in conns.values() if c.claims.user_id is not None and not c.kicked]
    if not held:
        return []
    live = await store.run(live_generations, {c.claims.user_id for c in held})
    ended = [
        c
        for c in held
        if c.claims.generation is None or live.get(c.claims.user_id) != c.claims.generation
    ]
    # Closed in the meantime (or kicked for flooding) sockets are left alone.
    await asyncio.gather(*(kick(c, SESSION_ENDED) for c in ended if not c.kicked))
    return [c.sid for c in ended]


async def watch_sessions(
    store: Any, conns: Mapping[str, Any], kick: Kick, *, every: float = SESSION_CHECK_SECONDS
) -> None:
    """Sweep every `every` seconds until cancelled (the process's lifetime)."""
    while True:
        await asyncio.sleep(every)
        try:
            await sweep(store, conns, kick)
        except Exception:  # the database is away for a moment: the next pass checks again
            log.exception("session check failed")
