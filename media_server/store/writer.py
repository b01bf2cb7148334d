"""The chat's group commit (`ChatWriter`): the messages that arrive while a batch is being
stored go together in the next one."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from media_server.store.messages import SendItem, SendResult

if TYPE_CHECKING:
    from media_server.store.chat_store import ChatStore


class ChatWriter:
    """Group commit: while a transaction is in flight, new messages queue up and the next
    transaction stores all of them. A lone message goes at once (no added latency when quiet);
    under load the commit and the round trips are paid once per batch, not once per message.

    `inflight` transactions may run at once: 1 on SQLite (one writer at a time anyway), a few on
    PostgreSQL so a message never waits for a whole batch ahead of it. Order inside a room
    does not depend on this: the server sends a room's messages one at a time."""

    def __init__(self, store: ChatStore, *, max_batch: int = 256, inflight: int = 0) -> None:
        self.store = store
        self.max_batch = max_batch
        self.inflight = inflight or (4 if store.dialect == "postgresql" else 1)
        self._queue: list[tuple[SendItem, asyncio.Future[SendResult]]] = []
        self._tasks: set[asyncio.Task] = set()  # held: the loop keeps tasks weakly

    async def send(self, item: SendItem) -> SendResult:
        fut: asyncio.Future[SendResult] = asyncio.get_running_loop().create_future()
        self._queue.append((item, fut))
        self._kick()
        return await fut

    def _kick(self) -> None:
        if self._queue and len(self._tasks) < self.inflight:
            task = asyncio.get_running_loop().create_task(self._drain())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch = self._queue[: self.max_batch]
                del self._queue[: self.max_batch]
                try:
                    results = await self.store.send_batch([item for item, _ in batch])
                except Exception as exc:  # every waiter hears about it; the next batch retries
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc)
                    continue
                for (_, fut), result in zip(batch, results, strict=True):
                    if not fut.done():
                        fut.set_result(result)
        finally:
            # Leave the set in the same step as the last look at the queue: the done callback
            # runs a step later, and a send() in between saw a writer that would never drain
            # its message (it waited for the process's next message; in a quiet room, forever).
            self._tasks.discard(asyncio.current_task())  # type: ignore[arg-type]
