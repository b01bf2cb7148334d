"""media_admission: re-admission to a call survives a media server restart

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06 03:40:00

Issue 18, item 5. Without Redis (the embedded default) the media server kept "admitted in the
last ten minutes" in its memory: a restarted media server sent the patient back to the waiting
room. The marks now live in this table (models.MediaAdmission, media_server/admissions.py).
"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "media_admission",
        sa.Column("room", sa.String(length=64), nullable=False),
        sa.Column("subject", sa.String(length=64), nullable=False),
        sa.Column("admitted_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("room", "subject"),
    )


def downgrade():
    op.drop_table("media_admission")
