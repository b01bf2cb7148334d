"""consultation.number: the short number a patient reads aloud and types

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06 01:30:00

Issue 16, item 1. Pages, messages and reports showed `№3f2a91c0` (a piece of the public UUID),
the conclusion PDF `3F2A91C0`. A consultation now has a number: the two digits of its year and
the year's counter (stored `2642`, shown `26-42`), given by the database from
consultation_number_counter (models.allocate_consultation_numbers).

Existing consultations are numbered in creation order within the (UTC) year they were created
in, the counters are set to match, then the column becomes NOT NULL and unique.
"""

from datetime import UTC

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

_BATCH = 1000


def upgrade():
    op.create_table(
        "consultation_number_counter",
        sa.Column("year", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("last_number", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("year"),
    )
    with op.batch_alter_table("consultation", schema=None) as batch_op:
        batch_op.add_column(sa.Column("number", sa.String(length=16), nullable=True))

    conn = op.get_bind()
    consultation = sa.table(
        "consultation",
        sa.column("id", sa.Integer()),
        sa.column("created_at", sa.DateTime(timezone=True)),
        sa.column("number", sa.String()),
    )
    counters: dict[int, int] = {}
    pending: list[dict] = []
    update = (
        sa.update(consultation)
        .where(consultation.c.id == sa.bindparam("row_id"))
        .values(number=sa.bindparam("row_number"))
    )
    rows = conn.execute(
        sa.select(consultation.c.id, consultation.c.created_at).order_by(
            consultation.c.created_at, consultation.c.id
        )
    )
    for row_id, created_at in rows.all():
        # SQLite gives the stored UTC time without a zone, PostgreSQL an aware one.
        at = created_at if created_at.tzinfo is None else created_at.astimezone(UTC)
        year = at.year % 100
        counters[year] = counters.get(year, 0) + 1
        pending.append({"row_id": row_id, "row_number": f"{year:02d}{counters[year]}"})
        if len(pending) >= _BATCH:
            conn.execute(update, pending)
            pending = []
    if pending:
        conn.execute(update, pending)
    if counters:
        counter = sa.table(
            "consultation_number_counter",
            sa.column("year", sa.Integer()),
            sa.column("last_number", sa.Integer()),
        )
        conn.execute(
            sa.insert(counter),
            [{"year": y, "last_number": n} for y, n in sorted(counters.items())],
        )

    with op.batch_alter_table("consultation", schema=None) as batch_op:
        batch_op.alter_column("number", existing_type=sa.String(length=16), nullable=False)
        batch_op.create_unique_constraint("uq_consultation_number", ["number"])


def downgrade():
    with op.batch_alter_table("consultation", schema=None) as batch_op:
        batch_op.drop_constraint("uq_consultation_number", type_="unique")
        batch_op.drop_column("number")
    op.drop_table("consultation_number_counter")
