"""The media server's chat store: who a consultation's chat belongs to, its history, its read
marks, and the insert of the messages (group-committed by ChatWriter).

Reads use a sync SQLAlchemy engine from a thread pool (ChatStore.run), sized to the
connection pool, so threads never queue on the pool and the event loop never waits on the
database. The chat insert stays on the loop, with no thread hop and no thread taking the GIL
from the loop between its steps: on PostgreSQL one statement awaited on an asyncpg connection
(postgres.py); on SQLite one statement called on the loop (sqlite.py) — it appends to the
write-ahead log in the page cache (no fsync: WAL with synchronous=NORMAL) and never waits for
the file's lock: when another connection holds it (the web app, a guest's insert), that batch
goes to a thread that waits; the log's checkpoints run beside it (checkpoints.py).
Whether a chat is open is decided in the insert statement itself, by models.Consultation.
chat_open's SQL form. Only models.py tables are used, through SQLAlchemy Core: the web app's
ORM session, Flask and `app/` stay out of this process (DESIGN §1). SQLAlchemy's asyncio
engine for the same insert was measured and not kept: its greenlet layer cost the loop more
CPU than the hop to a thread (bench/README.md).

Modules: messages (values and the contract's Message), rounds (a batch in rounds),
postgres / sqlite (each database's insert), checkpoints (SQLite's log), chat_store
(ChatStore), writer (ChatWriter's group commit). This package's names are its public face.
"""

from media_server.store.chat_store import ChatStore
from media_server.store.messages import (
    HISTORY_LIMIT,
    ConsultationInfo,
    SendItem,
    SendResult,
    message_dict,
)
from media_server.store.sqlite import begin_immediate
from media_server.store.writer import ChatWriter

__all__ = [
    "HISTORY_LIMIT",
    "ChatStore",
    "ChatWriter",
    "ConsultationInfo",
    "SendItem",
    "SendResult",
    "begin_immediate",
    "message_dict",
]
