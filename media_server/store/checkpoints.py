"""SQLite: the write-ahead log's checkpoints (copying it back into the database file, two
fsyncs), done by a thread of their own once a second beside the chat's writer instead of by
the commits (`SQLiteCheckpoints`, a part of ChatStore)."""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from sqlalchemy import Engine

if TYPE_CHECKING:
    from media_server.store.writer import ChatWriter

log = logging.getLogger("media_server")

# SQLite: the media server's commits leave the write-ahead log's checkpoints (copying it back
# into the database file, two fsyncs) to a thread of their own, once a second; a commit does
# one itself only when the log has grown to the backstop (the checkpointer fell behind).
CHECKPOINT_SECONDS = 1.0
CHECKPOINT_RESET_PAGES = 4_000  # ≈ 16 MB of log: finish a checkpoint between two batches
CHECKPOINT_BACKSTOP_PAGES = 10_000
# Passes beside the writer before it waits for the last one, while a pass takes this long.
CHECKPOINT_CATCH_UP_PASSES = 3
CHECKPOINT_CATCH_UP_SECONDS = 0.002


class SQLiteCheckpoints:
    """ChatStore's checkpointer on SQLite (unused on PostgreSQL)."""

    engine: Engine
    _checkpointer: ThreadPoolExecutor
    _log_frames: int  # the log's length at the last checkpoint

    def checkpoint(self) -> tuple[int, int, int]:
        """SQLite: copy what the log holds back into the database file, beside the writers
        (PASSIVE: nobody waits for it). Returns SQLite's (busy, log frames, checkpointed)."""
        with self.engine.connect() as conn:
            busy, frames, done = conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").one()
        self._log_frames = frames
        return busy, frames, done

    async def checkpoints(self, writer: ChatWriter) -> None:
        """SQLite: checkpoint once a second until cancelled (the media server's lifetime)."""
        while True:
            await asyncio.sleep(CHECKPOINT_SECONDS)
            try:
                await self.checkpoint_once(writer)
            except Exception:  # a locked or busy file: the next second tries again
                log.exception("SQLite checkpoint failed")

    async def checkpoint_once(self, writer: ChatWriter) -> None:
        """A checkpoint beside the writer. The log restarts from its beginning only when a
        checkpoint has copied all of it and the next transaction begins: under a steady flow
        of batches, frames are added while it copies, that moment never comes, and the log
        grew to the backstop, where a commit paid the whole checkpoint (bench_chat, saturated:
        stalls of 80–90 ms). Past the reset size, the writer waits between two batches for
        the rest, which is small by then."""
        loop = asyncio.get_running_loop()

        async def timed_pass() -> tuple[int, float]:
            started = time.perf_counter()
            _, frames, _ = await loop.run_in_executor(self._checkpointer, self.checkpoint)
            return frames, time.perf_counter() - started

        frames, took = await timed_pass()
        # Even a checkpoint that copied all it saw leaves the batches committed meanwhile:
        # a second's worth after the first pass, as much to copy (and fsync) again. Passes
        # beside the writer first, each copying what came during the one before, so that the
        # writer waits only for the last few pages (bench_chat: 16–35 ms → ≈ 1 ms).
        if frames >= CHECKPOINT_RESET_PAGES:
            for _ in range(CHECKPOINT_CATCH_UP_PASSES):
                if took < CHECKPOINT_CATCH_UP_SECONDS:
                    break
                _, took = await timed_pass()
            async with writer.paused():
                await timed_pass()
