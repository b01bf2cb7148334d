"""duty_shift.topic_codes and consultation.topic: booking a duty doctor by topic

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06 03:40:00

Issue 17, item 3. The patient picks a topic (cardiovascular, gynaecological, healthy
lifestyle: models.DutyTopic) before a day and a time. A shift names the topics it takes
bookings for (space-separated codes; empty, as for every existing shift, means all of them),
and the booking keeps the topic picked. The audio-only mode needs no schema change
(consultation.mode is a string).
"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("duty_shift", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("topic_codes", sa.String(length=128), nullable=False, server_default="")
        )
    with op.batch_alter_table("consultation", schema=None) as batch_op:
        batch_op.add_column(sa.Column("topic", sa.String(length=32), nullable=True))


def downgrade():
    with op.batch_alter_table("consultation", schema=None) as batch_op:
        batch_op.drop_column("topic")
    with op.batch_alter_table("duty_shift", schema=None) as batch_op:
        batch_op.drop_column("topic_codes")
