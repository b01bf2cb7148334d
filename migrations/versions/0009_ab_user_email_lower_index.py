"""index lower(ab_user.email): case-insensitive e-mail look-ups (referral import)

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-26 02:00:00.000000

consultation.referral_row_id, the import's other look-up, is indexed since 0005.
"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade():
    # An expression index: SQLite (3.9+) and PostgreSQL alike; not unique, so an existing
    # database holding two spellings of one address still upgrades.
    op.create_index("ix_ab_user_email_lower", "ab_user", [sa.text("lower(email)")], unique=False)


def downgrade():
    op.drop_index("ix_ab_user_email_lower", table_name="ab_user")
