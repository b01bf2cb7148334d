"""Room state shared by every media process: who is in a room, and who is waiting or admitted.

python-socketio's rooms live in each process's memory (the Redis manager only fans out emits),
so the decisions that span processes — may this sid signal that one, is that patient waiting,
was this user admitted a minute ago — read this state instead. One process: `MemoryRooms`.
Several (MEDIA_REDIS_URL): `RedisRooms`, a hash per room (field = sid) with a TTL, and a
heartbeat key per process so the entries of a crashed process stop counting.

A participant is a plain dict: the contract's `{sid, user_id, role, name, state}` plus `sub`
(the token subject, used for re-admission) and `proc` (the owning process); `public()` drops
the two internal fields before anything goes to a client.

`snapshot()` numbers what it reads: python-socketio delivers a process's own emits at once and
other processes' emits later, through Redis, so two `room.state`s can reach a page in the other
order than they were read. The number (higher = read later) lets the page drop the older one.
"""

from __future__ import annotations

import itertools
import json
import time
import uuid
from typing import Any, Protocol
from urllib.parse import urlparse

PRESENT, WAITING, ADMITTED = "present", "waiting", "admitted"
READMIT_SECONDS = 600  # "admitted in this room in the last 10 minutes" (contract)
ROOM_TTL_SECONDS = 12 * 3600  # a forgotten room's keys expire; every write renews them
PROC_TTL_SECONDS = 30
PROC_HEARTBEAT_SECONDS = 10

Participant = dict[str, Any]


def public(p: Participant) -> Participant:
    return {k: p[k] for k in ("sid", "user_id", "role", "name", "state")}


def redis_channel(url: str) -> str:
    """Pub/sub channels ignore Redis database numbers: name the channel after the database so
    deployments (and test runs) on different databases of one Redis never hear each other."""
    path = urlparse(url).path.strip("/") or "0"
    return f"oblako-media-{path}"


class Rooms(Protocol):
    proc: str

    async def add(self, room: str, p: Participant) -> None: ...
    async def get(self, room: str, sid: str) -> Participant | None: ...
    async def list(self, room: str) -> list[Participant]: ...
    async def snapshot(self, room: str) -> tuple[int, list[Participant]]: ...
    async def set_state(
        self, room: str, sid: str, state: str, *, expect: str | None = None
    ) -> Participant | None: ...
    async def remove(self, room: str, sid: str) -> Participant | None: ...
    async def mark_admitted(self, room: str, sub: str) -> None: ...
    async def forget_admitted(self, room: str, sub: str) -> None: ...
    async def recently_admitted(self, room: str, sub: str) -> bool: ...
    async def end(self, room: str) -> None: ...
    async def heartbeat(self) -> None: ...
    async def close(self) -> None: ...


class Marks(Protocol):
    """Where a single process keeps re-admission marks so that they outlive it
    (media_server/admissions.DbAdmissions)."""

    async def mark(self, room: str, sub: str) -> None: ...
    async def forget(self, room: str, sub: str | None = None) -> None: ...
    async def recent(self, room: str, sub: str) -> bool: ...
    async def sweep(self) -> None: ...


class MemoryRooms:
    """One process: plain dicts (the event loop is the only writer, so no locks). Who is in a
    room dies with the process (the sockets do too); the re-admission marks go to `marks`
    (the database) when given, so that a restart does not send an admitted patient back to
    the waiting room."""

    def __init__(self, marks: Marks | None = None) -> None:
        self.proc = uuid.uuid4().hex
        self._rooms: dict[str, dict[str, Participant]] = {}
        self._admitted: dict[str, dict[str, float]] = {}
        self._marks = marks
        # From the clock, so that a restarted process numbers above what its pages last heard.
        self._versions = itertools.count(time.time_ns() // 1_000_000)

    async def add(self, room: str, p: Participant) -> None:
        self._rooms.setdefault(room, {})[p["sid"]] = dict(p, proc=self.proc)

    async def get(self, room: str, sid: str) -> Participant | None:
        p = self._rooms.get(room, {}).get(sid)
        return dict(p) if p else None

    async def list(self, room: str) -> list[Participant]:
        return [dict(p) for p in self._rooms.get(room, {}).values()]

    async def snapshot(self, room: str) -> tuple[int, list[Participant]]:
        return next(self._versions), await self.list(room)

    async def set_state(
        self, room: str, sid: str, state: str, *, expect: str | None = None
    ) -> Participant | None:
        p = self._rooms.get(room, {}).get(sid)
        if p is None or (expect is not None and p["state"] != expect):
            return None
        p["state"] = state
        return dict(p)

    async def remove(self, room: str, sid: str) -> Participant | None:
        members = self._rooms.get(room, {})
        p = members.pop(sid, None)
        if not members:
            self._rooms.pop(room, None)
        return p

    async def mark_admitted(self, room: str, sub: str) -> None:
        if self._marks is not None:
            await self._marks.mark(room, sub)
            return
        self._admitted.setdefault(room, {})[sub] = time.time()

    async def forget_admitted(self, room: str, sub: str) -> None:
        if self._marks is not None:
            await self._marks.forget(room, sub)
            return
        self._admitted.get(room, {}).pop(sub, None)

    async def recently_admitted(self, room: str, sub: str) -> bool:
        if self._marks is not None:
            return await self._marks.recent(room, sub)
        at = self._admitted.get(room, {}).get(sub)
        return at is not None and time.time() - at < READMIT_SECONDS

    async def end(self, room: str) -> None:
        for p in self._rooms.get(room, {}).values():
            p["state"] = PRESENT
        self._admitted.pop(room, None)
        if self._marks is not None:
            await self._marks.forget(room)

    async def heartbeat(self) -> None:
        if self._marks is not None:
            await self._marks.sweep()
        # Drop re-admission marks nobody can use any more (long-running process hygiene).
        cutoff = time.time() - READMIT_SECONDS
        for room in list(self._admitted):
            marks = {s: t for s, t in self._admitted[room].items() if t >= cutoff}
            if marks:
                self._admitted[room] = marks
            else:
                del self._admitted[room]

    async def close(self) -> None:
        return None


# Compare-and-set of one participant's state, atomic across processes (admit vs. leave).
_SET_STATE = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return false end
local p = cjson.decode(raw)
if ARGV[3] ~= '' and p['state'] ~= ARGV[3] then return false end
p['state'] = ARGV[2]
local out = cjson.encode(p)
redis.call('HSET', KEYS[1], ARGV[1], out)
redis.call('EXPIRE', KEYS[1], ARGV[4])
return out
"""

# room.end: every participant back to `present`, re-admission marks dropped, in one step.
_END = """
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local p = cjson.decode(all[i + 1])
  p['state'] = 'present'
  redis.call('HSET', KEYS[1], all[i], cjson.encode(p))
end
redis.call('DEL', KEYS[2])
return #all / 2
"""


# The members and the next version number, read in one step. A new counter starts from the
# clock in milliseconds, so that one that expired with an idle room numbers above its old value.
_SNAPSHOT = """
local members = redis.call('HGETALL', KEYS[1])
local v = redis.call('INCR', KEYS[2])
if v == 1 then
  local t = redis.call('TIME')
  v = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('SET', KEYS[2], string.format('%d', v))
end
redis.call('EXPIRE', KEYS[2], ARGV[1])
return {v, members}
"""


class RedisRooms:
    def __init__(self, url: str, *, prefix: str = "oblako:media:") -> None:
        import redis.asyncio as aioredis

        self.proc = uuid.uuid4().hex
        self.prefix = prefix
        self.redis = aioredis.Redis.from_url(url, decode_responses=True)
        self._set_state = self.redis.register_script(_SET_STATE)
        self._end = self.redis.register_script(_END)
        self._snapshot = self.redis.register_script(_SNAPSHOT)

    def _room(self, room: str) -> str:
        return f"{self.prefix}room:{room}"

    def _marks(self, room: str) -> str:
        return f"{self.prefix}admitted:{room}"

    def _proc(self, proc: str) -> str:
        return f"{self.prefix}proc:{proc}"

    async def heartbeat(self) -> None:
        await self.redis.set(self._proc(self.proc), "1", ex=PROC_TTL_SECONDS)

    async def add(self, room: str, p: Participant) -> None:
        key = self._room(room)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, p["sid"], json.dumps(dict(p, proc=self.proc)))
            pipe.expire(key, ROOM_TTL_SECONDS)
            await pipe.execute()

    async def get(self, room: str, sid: str) -> Participant | None:
        raw = await self.redis.hget(self._room(room), sid)
        if raw is None:
            return None
        p = json.loads(raw)
        if p.get("proc") != self.proc and not await self.redis.exists(self._proc(p["proc"])):
            await self.redis.hdel(self._room(room), sid)  # its process died without cleaning up
            return None
        return p

    async def list(self, room: str) -> list[Participant]:
        raw = await self.redis.hgetall(self._room(room))
        return await self._alive(room, [json.loads(v) for v in raw.values()])

    async def snapshot(self, room: str) -> tuple[int, list[Participant]]:
        version, flat = await self._snapshot(
            keys=[self._room(room), f"{self._room(room)}:version"], args=[ROOM_TTL_SECONDS]
        )
        members = [json.loads(v) for v in flat[1::2]]  # HGETALL's field, value, field, value…
        return int(version), await self._alive(room, members)

    async def _alive(self, room: str, members: list[Participant]) -> list[Participant]:
        """The members whose process still beats; the others' entries are removed."""
        procs = sorted({p["proc"] for p in members if p.get("proc") != self.proc})
        alive = {self.proc}
        if procs:
            flags = await self.redis.mget([self._proc(x) for x in procs])
            alive.update(x for x, flag in zip(procs, flags, strict=True) if flag)
        dead = [p["sid"] for p in members if p.get("proc") not in alive]
        if dead:
            await self.redis.hdel(self._room(room), *dead)
        return [p for p in members if p.get("proc") in alive]

    async def set_state(
        self, room: str, sid: str, state: str, *, expect: str | None = None
    ) -> Participant | None:
        raw = await self._set_state(
            keys=[self._room(room)], args=[sid, state, expect or "", ROOM_TTL_SECONDS]
        )
        return json.loads(raw) if raw else None

    async def remove(self, room: str, sid: str) -> Participant | None:
        key = self._room(room)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hget(key, sid)
            pipe.hdel(key, sid)
            raw, _ = await pipe.execute()
        return json.loads(raw) if raw else None

    async def mark_admitted(self, room: str, sub: str) -> None:
        key = self._marks(room)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, sub, str(time.time()))
            pipe.expire(key, READMIT_SECONDS)
            await pipe.execute()

    async def forget_admitted(self, room: str, sub: str) -> None:
        await self.redis.hdel(self._marks(room), sub)

    async def recently_admitted(self, room: str, sub: str) -> bool:
        raw = await self.redis.hget(self._marks(room), sub)
        return raw is not None and time.time() - float(raw) < READMIT_SECONDS

    async def end(self, room: str) -> None:
        await self._end(keys=[self._room(room), self._marks(room)])

    async def close(self) -> None:
        try:
            await self.redis.delete(self._proc(self.proc))
        finally:
            await self.redis.aclose()
