"""The media server's chat store: who a consultation's chat belongs to, its history, its read
marks, and the insert of the messages (group-committed by ChatWriter).

One database path: SQLAlchemy's asyncio engine (asyncpg on PostgreSQL, aiosqlite on SQLite),
awaited on the event loop; sync code gets a connection through ChatStore.run (run_sync). A
message is acked after its transaction committed. Whether a chat is open is decided in the
insert statement itself, by models.Consultation.chat_open's SQL form. Only models.py tables
are used, through SQLAlchemy Core: the web app's ORM session, Flask and `app/` stay out of
this process (DESIGN §1).

Modules: messages (values and the contract's Message), rounds (a batch in rounds),
statements (each database's insert), chat_store (ChatStore and its reads), writer
(ChatWriter's group commit). This package's names are its public face.
"""

from media_server.store.chat_store import ChatStore, async_url, join_state
from media_server.store.messages import (
    HISTORY_LIMIT,
    ConsultationInfo,
    SendItem,
    SendResult,
    message_dict,
)
from media_server.store.writer import ChatWriter

__all__ = [
    "HISTORY_LIMIT",
    "ChatStore",
    "ChatWriter",
    "ConsultationInfo",
    "SendItem",
    "SendResult",
    "async_url",
    "join_state",
    "message_dict",
]
