"""pending_registration: phone confirmation before a self-registered account exists

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 00:40:00

/register/ told anyone whether a phone number belonged to a patient. The form now sends an SMS
code and keeps the registration here (password hashed, code hashed) until the code is typed;
the answer is the same whether the number is new or taken.
"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "pending_registration",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("public_id", sa.Uuid(), nullable=False),
        sa.Column("phone", sa.String(length=20), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("code_hash", sa.String(length=64), nullable=True),
        sa.Column("code_expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("public_id"),
    )
    with op.batch_alter_table("pending_registration", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_pending_registration_phone"), ["phone"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_pending_registration_expires_at"), ["expires_at"], unique=False
        )


def downgrade():
    with op.batch_alter_table("pending_registration", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_pending_registration_expires_at"))
        batch_op.drop_index(batch_op.f("ix_pending_registration_phone"))
    op.drop_table("pending_registration")
