"""chat messages written by an invited guest: chat_message.invite_id, author_id nullable

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26 02:05:00

A guest has no account: the message's author is the invite the guest came by. Exactly one of
author_id / invite_id is set (check constraint), and a guest's client message id is unique per
invite as a member's is per account.
"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade():
    # Batch mode: SQLite rebuilds the table (it cannot alter a column or add a constraint in
    # place); PostgreSQL gets plain ALTER TABLE statements.
    with op.batch_alter_table("chat_message", schema=None) as batch_op:
        batch_op.add_column(sa.Column("invite_id", sa.Integer(), nullable=True))
        batch_op.alter_column("author_id", existing_type=sa.Integer(), nullable=True)
        batch_op.create_foreign_key(
            "fk_chat_message_invite_id", "media_invite", ["invite_id"], ["id"]
        )
        batch_op.create_unique_constraint(
            "uq_chat_message_invite_client_id", ["invite_id", "client_msg_id"]
        )
        batch_op.create_check_constraint(
            "ck_chat_message_one_author", "(author_id IS NULL) <> (invite_id IS NULL)"
        )


def downgrade():
    # Guests' messages have no account to fall back on: they go with the column.
    op.execute("DELETE FROM chat_message WHERE author_id IS NULL")
    with op.batch_alter_table("chat_message", schema=None) as batch_op:
        batch_op.drop_constraint("ck_chat_message_one_author", type_="check")
        batch_op.drop_constraint("uq_chat_message_invite_client_id", type_="unique")
        batch_op.drop_constraint("fk_chat_message_invite_id", type_="foreignkey")
        batch_op.alter_column("author_id", existing_type=sa.Integer(), nullable=False)
        batch_op.drop_column("invite_id")
