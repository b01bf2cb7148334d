"""The embedded SQLite file runs in WAL mode with synchronous=NORMAL for every process, and its
log file shrinks back to a limit after a burst."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text

import config
from media_server.store import ChatStore
from tests.media_fixtures import run


def _mode(engine) -> tuple[str, int]:
    with engine.connect() as conn:
        journal = conn.execute(text("PRAGMA journal_mode")).scalar()
        synchronous = conn.execute(text("PRAGMA synchronous")).scalar()
    return str(journal).lower(), int(synchronous)


@pytest.fixture
def sqlite_only(app):
    if not app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        pytest.skip("SQLite's journal mode; PostgreSQL has its own WAL")


def test_web_app_and_media_server_share_the_file_in_wal_mode(app, sqlite_only):
    from app.extensions import db

    with app.app_context():
        assert _mode(db.engine) == ("wal", 1)  # 1 = NORMAL

    async def media_mode() -> tuple[str, int]:
        store = ChatStore(app.config["SQLALCHEMY_DATABASE_URI"])
        try:
            return await store.run(
                lambda conn: (
                    str(conn.exec_driver_sql("PRAGMA journal_mode").scalar()).lower(),
                    int(conn.exec_driver_sql("PRAGMA synchronous").scalar()),
                )
            )
        finally:
            await store.aclose()

    assert run(media_mode()) == ("wal", 1)


def test_a_reader_does_not_block_a_writer(tmp_path):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    options = config._engine_options(url)
    # No waiting for a lock: in rollback-journal mode the commit below would fail at once.
    options["connect_args"] = {**options["connect_args"], "timeout": 0}
    engine = create_engine(url, **options)
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE note (id INTEGER PRIMARY KEY, body TEXT)"))
            conn.execute(text("INSERT INTO note (body) VALUES ('first')"))
        with engine.connect() as reader:
            reader.exec_driver_sql("BEGIN")
            assert reader.execute(text("SELECT count(*) FROM note")).scalar() == 1
            with engine.begin() as writer:
                writer.execute(text("INSERT INTO note (body) VALUES ('second')"))
            # The reader keeps its snapshot until its transaction ends.
            assert reader.execute(text("SELECT count(*) FROM note")).scalar() == 1
            reader.exec_driver_sql("COMMIT")
            assert reader.execute(text("SELECT count(*) FROM note")).scalar() == 2
    finally:
        engine.dispose()


def test_an_in_memory_database_is_left_as_it_is():
    engine = create_engine("sqlite://", **config._engine_options("sqlite://"))
    try:
        assert _mode(engine)[0] == "memory"
    finally:
        engine.dispose()


def test_the_log_shrinks_back_to_its_limit_after_a_burst(tmp_path):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    engine = create_engine(url, **config._engine_options(url))
    wal = tmp_path / "shared.db-wal"
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_size_limit").scalar() == (
                config.WAL_SIZE_LIMIT
            )
            conn.exec_driver_sql("PRAGMA wal_autocheckpoint=0")  # the burst outruns checkpoints
            conn.exec_driver_sql("CREATE TABLE note (id INTEGER PRIMARY KEY, body BLOB)")
            conn.commit()
            for _ in range(6):
                conn.execute(
                    text("INSERT INTO note (body) VALUES (randomblob(8192))"),
                    [{}] * 500,
                )
                conn.commit()
            grown = wal.stat().st_size
            assert grown > config.WAL_SIZE_LIMIT
            busy, frames, done = conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").one()
            assert (busy, done) == (0, frames)
            # The next writer restarts the log from its start and truncates the file.
            conn.execute(text("INSERT INTO note (body) VALUES ('after')"))
            conn.commit()
        assert wal.stat().st_size <= config.WAL_SIZE_LIMIT < grown
    finally:
        engine.dispose()
