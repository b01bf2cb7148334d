"""The chat store's group commit: many messages in one transaction keep every rule."""

from __future__ import annotations

import asyncio
import re
import time
import uuid

import pytest
from sqlalchemy import text

from media_server.store import ChatStore, ChatWriter, SendItem, SendResult
from tests.media.conftest import chat_rows, make_invite
from tests.media_fixtures import run


async def _through_the_loop(store: ChatStore, items: list[SendItem]):
    try:
        return await store.send_batch_async(items)
    finally:
        await store.aclose()


# "thread": send_batch in the caller's thread; "loop": send_batch_async, what ChatWriter uses
# from the event loop (through a database thread).
@pytest.mark.parametrize("path", ["thread", "loop"])
def test_batch_keeps_idempotency_and_the_status_rule(app, make_room, path):
    open_room = make_room(kind="duty", status="in_progress")
    closed_room = make_room(kind="centre_request", status="scheduled")
    store = ChatStore(app.config["SQLALCHEMY_DATABASE_URI"], workers=1)
    try:
        a = store.consultation(open_room.consultation_id)
        b = store.consultation(closed_room.consultation_id)

        def item(info, author, cmid, body="text"):
            return SendItem(info, author, "Name", cmid, body)

        first = store.send(item(a, open_room.patient_user_id, "old"))
        batch = [
            item(a, open_room.patient_user_id, "n1", "one"),
            item(a, open_room.doctor_user_id, "n1", "same id, other author"),
            item(a, open_room.patient_user_id, "n1", "one"),  # the same message twice
            item(b, closed_room.patient_user_id, "c1"),  # chat not open there
            item(a, open_room.patient_user_id, "old"),  # a resend of a stored one
            item(b, open_room.patient_user_id, "n1"),  # reused id in another consultation
            item(b, open_room.patient_user_id, "k1"),  # closed there, the same id ...
            item(a, open_room.patient_user_id, "k1", "two"),  # ... goes in where chat is open
        ]
        if path == "loop":
            results = run(_through_the_loop(store, batch))
        else:
            results = store.send_batch(batch)
    finally:
        store.close()

    assert first.outcome == "stored"
    assert [r.outcome for r in results] == [
        "stored",
        "stored",
        "duplicate",
        "closed",
        "duplicate",
        "conflict",
        "conflict",  # (it names a message stored in another consultation now)
        "stored",
    ]
    assert results[2].message["id"] == results[0].message["id"]
    assert results[4].message["id"] == first.message["id"]
    assert results[0].message["author_role"] == "patient"
    assert results[1].message["author_role"] == "doctor"
    rows = chat_rows(app, open_room.consultation_id)
    assert [(r[1], r[2]) for r in rows] == [
        ("old", "text"),
        ("n1", "one"),
        ("n1", "same id, other author"),
        ("k1", "two"),
    ]
    assert chat_rows(app, closed_room.consultation_id) == []
    # Stored as SQLAlchemy stores them (SQLite keeps text: microseconds always written, the
    # UUID as 32 hex digits), so the web app reads and orders them like its own rows.
    from sqlalchemy import select

    from app.extensions import db
    from models import ChatMessage

    with app.app_context():
        stored = db.session.scalars(
            select(ChatMessage).where(ChatMessage.consultation_id == open_room.consultation_id)
        ).all()
        by_id = {m.id: m for m in stored}
        for r in (results[0], results[1], results[7]):
            m = by_id[r.message["id"]]
            assert m.created_at.isoformat().replace("+00:00", "Z") == r.message["created_at"]
            assert isinstance(m.public_id, uuid.UUID)
        if db.engine.dialect.name == "sqlite":
            raw = db.session.execute(text("SELECT created_at, public_id FROM chat_message")).all()
            assert raw and all(
                re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}", c)
                and re.fullmatch(r"[0-9a-f]{32}", p)
                for c, p in raw
            )


class _InstantStore:
    """A store whose transaction finishes without suspending, and that wakes `on_commit`'s
    waiter from inside it: that waiter then runs before the writer's task is reaped."""

    dialect = "sqlite"

    def __init__(self) -> None:
        self.on_commit: asyncio.Future[None] | None = None
        self.batches: list[list[str]] = []

    async def send_batch_async(self, items: list[str]) -> list[SendResult]:
        self.batches.append(list(items))
        if self.on_commit is not None and not self.on_commit.done():
            self.on_commit.set_result(None)
        return [SendResult("stored", {"id": i}) for i, _ in enumerate(items)]


@pytest.mark.no_db
def test_a_message_queued_as_the_writer_finishes_is_not_stranded():
    """A send that lands between the writer task's last look at its queue and the reaping of
    that task must start a new one: before, it waited for the next message of the process
    (in a quiet room, forever: the page showed «отправляется»)."""

    async def scenario() -> list[list[str]]:
        store = _InstantStore()
        writer = ChatWriter(store)  # type: ignore[arg-type]
        store.on_commit = asyncio.get_running_loop().create_future()

        async def second() -> SendResult:
            await store.on_commit
            return await writer.send("b")  # type: ignore[arg-type]

        follower = asyncio.ensure_future(second())
        await writer.send("a")  # type: ignore[arg-type]
        await asyncio.wait_for(follower, 2)
        return store.batches

    assert run(scenario()) == [["a"], ["b"]]


# "loop": ChatWriter's path (on PostgreSQL an asyncpg connection on the event loop)
@pytest.mark.parametrize("author", ["patient", "patient-loop", "guest"])
def test_a_send_during_a_status_change_waits_for_it_and_sees_it(app, make_room, author):
    """The doctor completes the consultation (a web-app transaction, not yet committed) while a
    message is being stored: the insert waits for that transaction and then finds chat closed
    — on SQLite the writer takes the write lock before it reads the status; on PostgreSQL the
    consultation row is locked FOR SHARE. Nothing is stored after the consultation ended."""
    import threading
    import time

    from sqlalchemy import create_engine, update

    from config import sqlite_connect_args
    from media_server.guest_chat import send_guest
    from models import Consultation

    room = make_room(kind="centre_request", status="in_progress")
    invite_id = make_invite(app, room.consultation_id, room.doctor_user_id)
    url = app.config["SQLALCHEMY_DATABASE_URI"]
    store = ChatStore(url, workers=1)
    other = create_engine(
        url, connect_args=sqlite_connect_args() if url.startswith("sqlite") else {}
    )
    outcome: list[str] = []
    try:
        info = store.consultation(room.consultation_id)

        def send() -> None:
            if author == "guest":
                result = send_guest(
                    store.engine,
                    info,
                    invite_id=invite_id,
                    client_msg_id="during-complete",
                    body="text",
                )
            else:
                item = SendItem(info, room.patient_user_id, "Name", "during-complete", "text")
                if author == "patient-loop":
                    result = run(store.send_batch_async([item]))[0]
                else:
                    result = store.send(item)
            outcome.append(result.outcome)

        with other.connect() as conn:
            conn.execute(
                update(Consultation)
                .where(Consultation.id == room.consultation_id)
                .values(status="completed")
            )
            sender = threading.Thread(target=send)
            sender.start()
            time.sleep(0.5)
            assert sender.is_alive()  # waiting for the completing transaction
            conn.commit()
        sender.join(30)
    finally:
        store.close()
        other.dispose()
    assert outcome == ["closed"]
    assert chat_rows(app, room.consultation_id) == []


def test_commits_leave_sqlite_checkpoints_to_the_checkpointer(app, make_room, monkeypatch):
    """SQLite: a chat commit never copies the write-ahead log back into the database (two
    fsyncs, the paced p99 in bench_chat); the checkpointer does it beside the writer. On
    PostgreSQL there is nothing to move: the store has no checkpointer."""
    from media_server.store.checkpoints import (
        CHECKPOINT_BACKSTOP_PAGES,
        CHECKPOINT_CATCH_UP_PASSES,
    )

    room = make_room(kind="duty", status="in_progress")
    store = ChatStore(app.config["SQLALCHEMY_DATABASE_URI"], workers=1)
    try:
        if store.dialect != "sqlite":
            assert not hasattr(store, "_checkpointer")
            return
        info = store.consultation(room.consultation_id)
        for n in range(400):  # ≈ 5 pages a commit: well past SQLite's default 1,000
            store.send(SendItem(info, room.patient_user_id, "Name", f"m{n}", "text"))
        with store.engine.connect() as conn:
            setting = conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar()
        busy, frames, done = store.checkpoint()
        assert setting == CHECKPOINT_BACKSTOP_PAGES
        assert frames > 1000  # no commit checkpointed (the default would have at 1,000)
        assert (busy, done) == (0, frames)  # the checkpointer copied all of it back

        # Past the reset size, the checkpoint is finished while the writer waits (batches
        # committed during the first one kept the log from starting again) — after passes
        # beside it while a pass still takes long; the next transaction then starts the log
        # again from its beginning.
        real_checkpoint, paused_during = store.checkpoint, []

        def checkpoint() -> tuple[int, int, int]:
            paused_during.append(writer._pauses > 0)
            return real_checkpoint()

        async def flow_then_checkpoint() -> tuple[int, int]:
            for n in range(300):
                await writer.send(SendItem(info, room.patient_user_id, "Name", f"f{n}", "t"))
            _, grown, _ = real_checkpoint()
            await store.checkpoint_once(writer)
            await writer.send(SendItem(info, room.patient_user_id, "Name", "after", "t"))
            _, restarted, _ = real_checkpoint()
            return grown, restarted

        writer = ChatWriter(store)
        monkeypatch.setattr(store, "checkpoint", checkpoint)
        monkeypatch.setattr("media_server.store.checkpoints.CHECKPOINT_RESET_PAGES", 100)
        grown, restarted = run(flow_then_checkpoint())
        assert paused_during[-1] is True and not any(paused_during[:-1])
        assert 2 <= len(paused_during) <= 2 + CHECKPOINT_CATCH_UP_PASSES
        assert grown > 1000 and restarted < 50
    finally:
        store.close()
    assert len(chat_rows(app, room.consultation_id)) == 701


@pytest.mark.no_db
@pytest.mark.parametrize(
    ("took", "expected"),
    [
        ([0.1, 0.0], [False, False, True]),  # the second pass was quick: the writer waits
        ([0.1] * 4, [False, False, False, False, True]),  # never quick: at most 3 more passes
        ([0.1], [False]),  # a short log: no pause at all
    ],
)
def test_the_checkpointer_catches_up_beside_the_writer_before_it_pauses_it(
    tmp_path, monkeypatch, took, expected
):
    """Past the reset size the writer waits only for the last pass: passes beside it first,
    each copying what came during the one before, while a pass still takes long."""
    store = ChatStore(f"sqlite:///{tmp_path / 'log.db'}", workers=1)
    writer = ChatWriter(store)
    monkeypatch.setattr("media_server.store.checkpoints.CHECKPOINT_CATCH_UP_SECONDS", 0.05)
    frames = 5_000 if len(expected) > 1 else 10
    passes: list[bool] = []

    def checkpoint() -> tuple[int, int, int]:
        passes.append(writer._pauses > 0)
        time.sleep(took[min(len(passes) - 1, len(took) - 1)] if not passes[-1] else 0)
        return 0, frames, frames

    monkeypatch.setattr(store, "checkpoint", checkpoint)
    try:
        run(store.checkpoint_once(writer))
    finally:
        store.close()
    assert passes == expected


@pytest.mark.no_db
def test_a_paused_writer_lets_its_batch_finish_and_holds_the_next():
    """ChatWriter.paused(): the checkpointer's moment between two batches."""

    class SlowStore:
        dialect = "sqlite"

        def __init__(self) -> None:
            self.release = asyncio.Event()
            self.log: list[str] = []

        async def send_batch_async(self, items: list[str]) -> list[SendResult]:
            self.log.append("begin " + "+".join(items))
            await self.release.wait()
            self.log.append("end " + "+".join(items))
            return [SendResult("stored", {"id": 1}) for _ in items]

    async def scenario() -> list[str]:
        store = SlowStore()
        writer = ChatWriter(store)  # type: ignore[arg-type]
        first = asyncio.ensure_future(writer.send("a"))  # type: ignore[arg-type]
        await asyncio.sleep(0)

        async def pause() -> None:
            async with writer.paused():
                store.log.append("paused")
                second = asyncio.ensure_future(writer.send("b"))  # type: ignore[arg-type]
                await asyncio.sleep(0.05)
                assert not second.done()
                store.log.append("resume")

        pausing = asyncio.ensure_future(pause())
        await asyncio.sleep(0.01)
        store.release.set()
        await asyncio.wait_for(asyncio.gather(first, pausing), 2)
        while "end b" not in store.log:
            await asyncio.sleep(0.01)
        return store.log

    assert run(scenario()) == ["begin a", "end a", "paused", "resume", "begin b", "end b"]


def test_a_lost_database_connection_fails_one_batch_and_the_next_reconnects(app, make_room):
    """PostgreSQL restarted or the network dropped: the chat insert's connection is dead. That
    batch fails (the page resends it), the next one opens a new connection and is stored."""
    import asyncpg
    from sqlalchemy import create_engine

    url = app.config["SQLALCHEMY_DATABASE_URI"]
    if not url.startswith("postgresql"):
        pytest.skip("PostgreSQL only: a SQLite file has no server connection to lose")
    room = make_room(kind="duty", status="in_progress")
    store = ChatStore(url, workers=1)
    admin = create_engine(url, isolation_level="AUTOCOMMIT")

    def item(cmid: str) -> SendItem:
        return SendItem(info, room.patient_user_id, "Name", cmid, "text")

    async def scenario() -> list[str]:
        outcomes = [(await store.send_batch_async([item("before")]))[0].outcome]
        (pid,) = {c.get_server_pid() for c in store._pg_send._free}  # the insert's session
        with admin.connect() as conn:
            conn.exec_driver_sql(f"SELECT pg_terminate_backend({pid})")
        try:
            outcomes.append((await store.send_batch_async([item("lost")]))[0].outcome)
        except (asyncpg.PostgresError, asyncpg.InterfaceError):  # the session was terminated
            outcomes.append("failed")
        outcomes.append((await store.send_batch_async([item("lost")]))[0].outcome)  # resent
        await store.aclose()
        return outcomes

    try:
        info = store.consultation(room.consultation_id)
        outcomes = run(scenario())
    finally:
        store.close()
        admin.dispose()
    assert outcomes == ["stored", "failed", "stored"]
    assert [r[1] for r in chat_rows(app, room.consultation_id)] == ["before", "lost"]


def test_sqlite_chat_insert_runs_on_the_loop_and_never_waits_there_for_the_lock(
    app, make_room, monkeypatch
):
    """SQLite: a batch is inserted on the event loop (no thread hop), on a connection of its
    own that never waits for the file's write lock: while another process holds it, the batch
    goes to a thread that waits, and the loop keeps serving. Past the log's backstop, and for
    a batch with a repeated client id, the threads too. A broken connection fails its batch;
    the resend opens a new one."""
    import sqlite3

    from media_server.store.checkpoints import CHECKPOINT_BACKSTOP_PAGES

    url = app.config["SQLALCHEMY_DATABASE_URI"]
    if not url.startswith("sqlite"):
        pytest.skip("SQLite only: PostgreSQL's insert is awaited on asyncpg's connection")
    room = make_room(kind="duty", status="in_progress")
    store = ChatStore(url, workers=1)
    in_threads: list[str] = []
    real_run = store.run

    async def recording_run(fn, *args):
        in_threads.append(fn.__name__)
        return await real_run(fn, *args)

    monkeypatch.setattr(store, "run", recording_run)

    def item(cmid: str) -> SendItem:
        return SendItem(info, room.patient_user_id, "Name", cmid, "text")

    async def scenario() -> dict[str, object]:
        seen: dict[str, object] = {}
        first = await store.send_batch_async([item("a"), item("b")])
        seen["on the loop"] = ([r.outcome for r in first], list(in_threads))
        driver = store._loop_writer.cursor().connection
        seen["settings"] = (
            driver.isolation_level,
            driver.execute("PRAGMA busy_timeout").fetchone()[0],
            driver.execute("PRAGMA wal_autocheckpoint").fetchone()[0],
        )

        holder = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # the web app in the middle of a write
        waiting = asyncio.ensure_future(store.send_batch_async([item("c")]))
        ticks = 0
        for _ in range(10):  # the loop keeps serving while the batch waits in a thread
            await asyncio.sleep(0.01)
            ticks += 1
        seen["while locked"] = (waiting.done(), ticks, list(in_threads))
        holder.execute("COMMIT")
        holder.close()
        seen["after the lock"] = [r.outcome for r in await waiting]

        in_threads.clear()
        store._log_frames = CHECKPOINT_BACKSTOP_PAGES  # the checkpointer fell behind
        past = await store.send_batch_async([item("d")])
        store._log_frames = 0
        twice = await store.send_batch_async([item("e"), item("e")])
        seen["to the threads"] = ([r.outcome for r in past + twice], list(in_threads))

        store._loop_writer.cursor().connection.close()  # the loop's connection is broken
        try:
            await store.send_batch_async([item("f")])
            seen["broken"] = "stored"
        except sqlite3.Error:
            seen["broken"] = "failed"
        in_threads.clear()
        resent = await store.send_batch_async([item("f")])  # the page resends: a new connection
        seen["resent"] = ([r.outcome for r in resent], list(in_threads))
        await store.aclose()
        return seen

    try:
        info = store.consultation(room.consultation_id)
        seen = run(scenario())
    finally:
        store.close()
    assert seen["on the loop"] == (["stored", "stored"], [])
    assert seen["settings"] == (None, 0, 0)
    assert seen["while locked"] == (False, 10, ["send_batch"])
    assert seen["after the lock"] == ["stored"]
    assert seen["to the threads"] == (
        ["stored", "stored", "duplicate"],
        ["send_batch", "send_batch"],
    )
    assert (seen["broken"], seen["resent"]) == ("failed", (["stored"], []))
    assert [r[1] for r in chat_rows(app, room.consultation_id)] == ["a", "b", "c", "d", "e", "f"]


def test_chat_messages_get_time_ordered_public_ids(app, make_room):
    """Chat messages take RFC 9562 version-7 public ids (time first, then 74 random bits):
    later messages sort after earlier ones, so their unique index grows at its right edge."""
    from models import uuid7

    ids = []
    for _ in range(3):
        ids.append(uuid7())
        time.sleep(0.002)  # a later millisecond
    assert all(u.version == 7 and u.variant == uuid.RFC_4122 for u in ids)
    assert ids == sorted(ids) and len({u.int & (2**62 - 1) for u in ids}) == 3

    room = make_room(kind="duty", status="in_progress")
    store = ChatStore(app.config["SQLALCHEMY_DATABASE_URI"], workers=1)
    try:
        info = store.consultation(room.consultation_id)
        for n in range(2):
            store.send(SendItem(info, room.patient_user_id, "Name", f"t{n}", "text"))
            time.sleep(0.002)
        run(_through_the_loop(store, [SendItem(info, room.doctor_user_id, "Name", "t2", "x")]))
        with store.engine.connect() as conn:
            stored = conn.execute(
                text("SELECT public_id FROM chat_message WHERE consultation_id = :c ORDER BY id"),
                {"c": room.consultation_id},
            ).scalars()
            public = [uuid.UUID(str(p)) for p in stored]
    finally:
        store.close()
    assert len(public) == 3 and all(u.version == 7 for u in public)
    assert public == sorted(public)
