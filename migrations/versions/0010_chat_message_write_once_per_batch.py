"""chat_message: guests' client-id uniqueness as a partial index (members' rows stay out of it)

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-26 12:10:00

uq_chat_message_invite_client_id was a table constraint over (invite_id, client_msg_id): every
member's message (invite_id NULL) was written into it too — one more index page per message in
the write-ahead log and its checkpoint, for a rule that only concerns guests. It becomes a
unique index WHERE invite_id IS NOT NULL (the guest insert names that predicate in its ON
CONFLICT). New chat messages also take time-ordered public ids (models.uuid7): their unique
index is appended to at its right edge; the ids already stored stay as they are.
"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_GUESTS = sa.text("invite_id IS NOT NULL")


def upgrade():
    # Batch mode: SQLite rebuilds the table to drop a table constraint; PostgreSQL alters it.
    with op.batch_alter_table("chat_message", schema=None) as batch_op:
        batch_op.drop_constraint("uq_chat_message_invite_client_id", type_="unique")
    op.create_index(
        "uq_chat_message_invite_client_id",
        "chat_message",
        ["invite_id", "client_msg_id"],
        unique=True,
        sqlite_where=_GUESTS,
        postgresql_where=_GUESTS,
    )


def downgrade():
    op.drop_index("uq_chat_message_invite_client_id", table_name="chat_message")
    with op.batch_alter_table("chat_message", schema=None) as batch_op:
        batch_op.create_unique_constraint(
            "uq_chat_message_invite_client_id", ["invite_id", "client_msg_id"]
        )
