"""consultation queue index

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 18:50:00

"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

QUEUE = "status IN ('requested', 'needs_documents')"


def upgrade():
    with op.batch_alter_table('consultation', schema=None) as batch_op:
        batch_op.create_index(
            'ix_consultation_queue', ['center_id', 'submitted_at', 'id'], unique=False,
            sqlite_where=sa.text(QUEUE), postgresql_where=sa.text(QUEUE),
        )


def downgrade():
    with op.batch_alter_table('consultation', schema=None) as batch_op:
        batch_op.drop_index('ix_consultation_queue', sqlite_where=sa.text(QUEUE),
                            postgresql_where=sa.text(QUEUE))
