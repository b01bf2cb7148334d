"""conclusion.pdf_sha256: the issued PDF's SHA-256, checked by `flask oblako verify-storage`

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-06 03:40:00

Issue 18, item 4. Documents and recordings kept their file's SHA-256; the conclusion PDF did
not, so a backup could not prove it restored the very PDF that was issued. New conclusions
record it; older ones stay NULL (verify-storage checks that their file exists and counts them
as unhashed: reading every PDF in a migration would hold the upgrade for as long as that takes).
"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("conclusion") as batch:
        batch.add_column(sa.Column("pdf_sha256", sa.String(length=64), nullable=True))


def downgrade():
    with op.batch_alter_table("conclusion") as batch:
        batch.drop_column("pdf_sha256")
