"""The chat store (one SQLAlchemy asyncio engine): the group commit keeps every rule, a send
waits for a status change, the loop never waits for SQLite's lock, a lost connection costs one
batch, and closing the store leaves no thread behind."""

from __future__ import annotations

import asyncio
import re
import threading
import time
import uuid

import pytest
from sqlalchemy import text

from media_server.store import ChatStore, ChatWriter, SendItem, SendResult
from tests.media.conftest import chat_rows, make_invite
from tests.media_fixtures import run


def test_batch_keeps_idempotency_and_the_status_rule(app, make_room):
    open_room = make_room(kind="duty", status="in_progress")
    closed_room = make_room(kind="centre_request", status="scheduled")

    def item(info, author, cmid, body="text"):
        return SendItem(info, author, "Name", cmid, body)

    async def scenario():
        store = ChatStore(app.config["SQLALCHEMY_DATABASE_URI"])
        try:
            a = await store.consultation(open_room.consultation_id)
            b = await store.consultation(closed_room.consultation_id)
            first = await store.send(item(a, open_room.patient_user_id, "old"))
            batch = [
                item(a, open_room.patient_user_id, "n1", "one"),
                item(a, open_room.doctor_user_id, "n1", "same id, other author"),
                item(a, open_room.patient_user_id, "n1", "one"),  # the same message twice
                item(b, closed_room.patient_user_id, "c1"),  # chat not open there
                item(a, open_room.patient_user_id, "old"),  # a resend of a stored one
                item(b, open_room.patient_user_id, "n1"),  # reused id in another consultation
                item(b, open_room.patient_user_id, "k1"),  # closed there, the same id ...
                item(a, open_room.patient_user_id, "k1", "two"),  # ... goes in where open
            ]
            return first, await store.send_batch(batch)
        finally:
            await store.aclose()

    first, results = run(scenario())
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


def test_read_marks_move_forward_only_and_stop_at_the_newest_message(app, make_room):
    room = make_room(kind="duty", status="in_progress")

    async def scenario() -> list[int]:
        store = ChatStore(app.config["SQLALCHEMY_DATABASE_URI"])
        try:
            info = await store.consultation(room.consultation_id)
            sent = [
                await store.send(SendItem(info, room.doctor_user_id, "Name", f"r{n}", "t"))
                for n in range(3)
            ]
            newest = sent[-1].message["id"]

            async def mark(up_to: int) -> int:
                return await store.mark_read(
                    user_id=room.patient_user_id, consultation_id=info.id, up_to=up_to
                )

            marks = [await mark(sent[1].message["id"]), await mark(sent[0].message["id"])]
            return [*marks, await mark(newest + 1000), newest]
        finally:
            await store.aclose()

    second, back, beyond, newest = run(scenario())
    assert back == second  # never back
    assert beyond == newest  # never beyond the newest message


class _InstantStore:
    """A store whose transaction finishes without suspending, and that wakes `on_commit`'s
    waiter from inside it: that waiter then runs before the writer's task is reaped."""

    dialect = "sqlite"

    def __init__(self) -> None:
        self.on_commit: asyncio.Future[None] | None = None
        self.batches: list[list[str]] = []

    async def send_batch(self, items: list[str]) -> list[SendResult]:
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


@pytest.mark.parametrize("author", ["patient", "guest"])
def test_a_send_during_a_status_change_waits_for_it_and_sees_it(app, make_room, author):
    """The doctor completes the consultation (a web-app transaction, not yet committed) while a
    message is being stored: the insert waits for that transaction and then finds chat closed
    — on SQLite the insert takes the write lock before it reads the status; on PostgreSQL the
    consultation row is locked FOR SHARE. Nothing is stored after the consultation ended."""
    from sqlalchemy import create_engine, update

    from config import sqlite_connect_args
    from media_server.guest_chat import send_guest
    from models import Consultation

    room = make_room(kind="centre_request", status="in_progress")
    invite_id = make_invite(app, room.consultation_id, room.doctor_user_id)
    url = app.config["SQLALCHEMY_DATABASE_URI"]
    other = create_engine(
        url, connect_args=sqlite_connect_args() if url.startswith("sqlite") else {}
    )
    outcome: list[str] = []

    async def send() -> None:
        store = ChatStore(url)
        try:
            info = await store.consultation(room.consultation_id)
            if author == "guest":
                result = await store.run(
                    send_guest,
                    info,
                    invite_id=invite_id,
                    client_msg_id="during-complete",
                    body="text",
                )
            else:
                item = SendItem(info, room.patient_user_id, "Name", "during-complete", "text")
                result = await ChatWriter(store).send(item)
            outcome.append(result.outcome)
        finally:
            await store.aclose()

    try:
        with other.connect() as conn:
            conn.execute(
                update(Consultation)
                .where(Consultation.id == room.consultation_id)
                .values(status="completed")
            )
            sender = threading.Thread(target=run, args=(send(),))
            sender.start()
            time.sleep(0.5)
            assert sender.is_alive()  # waiting for the completing transaction
            conn.commit()
        sender.join(30)
    finally:
        other.dispose()
    assert outcome == ["closed"]
    assert chat_rows(app, room.consultation_id) == []


def test_sqlite_lock_held_elsewhere_never_stops_the_loop(app, make_room):
    """SQLite: while another connection (the web app, a guest's insert) holds the file's write
    lock, the batch waits for it off the loop (aiosqlite's thread, the busy timeout of the
    connect event) and the loop keeps serving; then it is stored."""
    import sqlite3

    url = app.config["SQLALCHEMY_DATABASE_URI"]
    if not url.startswith("sqlite"):
        pytest.skip("SQLite only: the file's write lock")
    room = make_room(kind="duty", status="in_progress")

    async def scenario() -> dict[str, object]:
        store = ChatStore(url)
        seen: dict[str, object] = {}
        try:
            info = await store.consultation(room.consultation_id)

            def item(cmid: str) -> SendItem:
                return SendItem(info, room.patient_user_id, "Name", cmid, "text")

            seen["first"] = [r.outcome for r in await store.send_batch([item("a")])]
            seen["settings"] = await store.run(
                lambda conn: tuple(
                    str(conn.exec_driver_sql(f"PRAGMA {name}").scalar()).lower()
                    for name in ("journal_mode", "synchronous", "busy_timeout")
                )
            )
            holder = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
            holder.execute("BEGIN IMMEDIATE")  # the web app in the middle of a write
            waiting = asyncio.ensure_future(store.send_batch([item("b")]))
            ticks = 0
            for _ in range(10):  # the loop keeps serving while the batch waits
                await asyncio.sleep(0.01)
                ticks += 1
            seen["while locked"] = (waiting.done(), ticks)
            holder.execute("COMMIT")
            holder.close()
            seen["after the lock"] = [r.outcome for r in await waiting]
        finally:
            await store.aclose()
        return seen

    seen = run(scenario())
    assert seen == {
        "first": ["stored"],
        "settings": ("wal", "1", "30000"),
        "while locked": (False, 10),
        "after the lock": ["stored"],
    }
    assert [r[1] for r in chat_rows(app, room.consultation_id)] == ["a", "b"]


def test_a_closed_store_leaves_no_thread_behind(app, make_room):
    """Closing the store ends every thread it started (aiosqlite's, one per connection): no
    checkpointer nor pool thread outlives it, in tests or at a server's shutdown."""
    room = make_room(kind="duty", status="in_progress")
    before = set(threading.enumerate())

    async def scenario() -> None:
        store = ChatStore(app.config["SQLALCHEMY_DATABASE_URI"])
        info = await store.consultation(room.consultation_id)
        writer = ChatWriter(store)
        await asyncio.gather(
            *(
                writer.send(SendItem(info, room.patient_user_id, "N", f"x{n}", "t"))
                for n in range(5)
            )
        )
        await store.aclose()

    run(scenario())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        left = [t for t in set(threading.enumerate()) - before if t.is_alive()]
        if not left:
            break
        time.sleep(0.05)
    assert left == []
    assert len(chat_rows(app, room.consultation_id)) == 5


def test_a_lost_database_connection_fails_one_batch_and_the_next_reconnects(app, make_room):
    """PostgreSQL restarted or the network dropped: the chat insert's connection is dead. That
    batch fails (the page resends it), the next one opens a new connection and is stored."""
    from sqlalchemy import create_engine
    from sqlalchemy.exc import DBAPIError

    url = app.config["SQLALCHEMY_DATABASE_URI"]
    if not url.startswith("postgresql"):
        pytest.skip("PostgreSQL only: a SQLite file has no server connection to lose")
    room = make_room(kind="duty", status="in_progress")
    admin = create_engine(url, isolation_level="AUTOCOMMIT")

    async def scenario() -> list[str]:
        store = ChatStore(url, pool_size=1)
        try:
            info = await store.consultation(room.consultation_id)

            def item(cmid: str) -> SendItem:
                return SendItem(info, room.patient_user_id, "Name", cmid, "text")

            outcomes = [(await store.send_batch([item("before")]))[0].outcome]
            pid = await store.run(lambda c: c.exec_driver_sql("SELECT pg_backend_pid()").scalar())
            with admin.connect() as conn:
                conn.exec_driver_sql(f"SELECT pg_terminate_backend({pid})")
            try:
                outcomes.append((await store.send_batch([item("lost")]))[0].outcome)
            except DBAPIError:  # the session was terminated
                outcomes.append("failed")
            outcomes.append((await store.send_batch([item("lost")]))[0].outcome)  # resent
            return outcomes
        finally:
            await store.aclose()

    try:
        outcomes = run(scenario())
    finally:
        admin.dispose()
    assert outcomes == ["stored", "failed", "stored"]
    assert [r[1] for r in chat_rows(app, room.consultation_id)] == ["before", "lost"]


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

    async def scenario() -> list[uuid.UUID]:
        store = ChatStore(app.config["SQLALCHEMY_DATABASE_URI"])
        try:
            info = await store.consultation(room.consultation_id)
            for n in range(3):
                await store.send(SendItem(info, room.patient_user_id, "Name", f"t{n}", "text"))
                await asyncio.sleep(0.002)
            stored = await store.run(
                lambda c: c.execute(
                    text(
                        "SELECT public_id FROM chat_message WHERE consultation_id = :c ORDER BY id"
                    ),
                    {"c": room.consultation_id},
                ).scalars()
            )
            return [uuid.UUID(str(p)) for p in stored]
        finally:
            await store.aclose()

    public = run(scenario())
    assert len(public) == 3 and all(u.version == 7 for u in public)
    assert public == sorted(public)
