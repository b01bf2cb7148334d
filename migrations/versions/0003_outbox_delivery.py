"""outbox delivery: retry back-off and the adapter that delivered

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 10:00:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('outbound_message', schema=None) as batch_op:
        batch_op.add_column(sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(
            sa.Column('delivered_via', sa.String(length=16), nullable=False, server_default='')
        )


def downgrade():
    with op.batch_alter_table('outbound_message', schema=None) as batch_op:
        batch_op.drop_column('delivered_via')
        batch_op.drop_column('next_attempt_at')
