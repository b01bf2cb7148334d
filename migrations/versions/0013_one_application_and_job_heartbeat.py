"""one open application per centre and disease; form token; referral import heartbeat

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 00:45:00

Issue 15, items 6 and 12.

- consultation.form_token (unique per patient): the hidden one-time id of the «Новая заявка»
  form, so the same form sent twice finds the first application.
- uq_consultation_open_application: a partial unique index, one open centre_request per
  patient, centre and disease. Duplicates the old code let in are closed first (the one
  furthest along stays, else the earliest; the others are cancelled with a reason saying
  why), or the index could not be built.
- referral_import.heartbeat_at: the import job's last sign of life; a stalled job is resumed
  by the worker (app/import_recovery.py).
"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

# Frozen copy of models.OPEN_STATUSES at this revision: a migration never imports the models.
OPEN_WHERE = (
    "kind = 'centre_request' AND status IN "
    "('awaiting_documents', 'requested', 'needs_documents', 'scheduled', 'in_progress')"
)


def _rank(table: str) -> str:
    # Of duplicates, the one furthest along stays (a doctor may have set its time), then the first.
    return f"(CASE {table}.status WHEN 'in_progress' THEN 0 WHEN 'scheduled' THEN 1 ELSE 2 END)"


def upgrade():
    with op.batch_alter_table("consultation", schema=None) as batch_op:
        batch_op.add_column(sa.Column("form_token", sa.String(length=36), nullable=True))
        batch_op.create_unique_constraint(
            "uq_consultation_patient_form_token", ["patient_id", "form_token"]
        )
    op.execute(
        sa.text(
            f"""
            UPDATE consultation SET status = 'cancelled', cancelled_at = CURRENT_TIMESTAMP,
                   cancel_reason = 'Duplicate application (sent more than once)',
                   version = version + 1
             WHERE disease_id IS NOT NULL AND {OPEN_WHERE}
               AND EXISTS (
                   SELECT 1 FROM consultation AS kept
                    WHERE kept.patient_id = consultation.patient_id
                      AND kept.center_id = consultation.center_id
                      AND kept.disease_id = consultation.disease_id
                      AND kept.kind = 'centre_request'
                      AND kept.status IN ('awaiting_documents', 'requested',
                                          'needs_documents', 'scheduled', 'in_progress')
                      AND ({_rank("kept")} < {_rank("consultation")}
                           OR ({_rank("kept")} = {_rank("consultation")}
                               AND kept.id < consultation.id)))
            """
        )
    )
    op.create_index(
        "uq_consultation_open_application",
        "consultation",
        ["patient_id", "center_id", "disease_id"],
        unique=True,
        sqlite_where=sa.text(OPEN_WHERE),
        postgresql_where=sa.text(OPEN_WHERE),
    )
    with op.batch_alter_table("referral_import", schema=None) as batch_op:
        batch_op.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))


def downgrade():
    with op.batch_alter_table("referral_import", schema=None) as batch_op:
        batch_op.drop_column("heartbeat_at")
    op.drop_index("uq_consultation_open_application", table_name="consultation")
    with op.batch_alter_table("consultation", schema=None) as batch_op:
        batch_op.drop_constraint("uq_consultation_patient_form_token", type_="unique")
        batch_op.drop_column("form_token")
