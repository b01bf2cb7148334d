"""consultation.version: optimistic concurrency for status transitions

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-26 12:25:00

A transition reads the consultation, checks its status in Python and writes the new one. Two
of them decided on the same state (the patient cancels while the doctor schedules) both
landed, the later one silently over the earlier. The ORM now updates `WHERE version = <the
version it read>` and bumps it: the second one updates no row and is refused.
"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("consultation", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("version", sa.Integer(), nullable=False, server_default=sa.text("1"))
        )


def downgrade():
    with op.batch_alter_table("consultation", schema=None) as batch_op:
        batch_op.drop_column("version")
