"""indexes for the hot paths: a job's outbox rows, pending checkpoints by expiry

The claim drops a job's dispatch intents and a job's deletion cascades to them
(``ix_outbox_job``); the sweep looks for expired checkpoints among the pending ones
without reading every parked job's (``ix_checkpoints_expiring``).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 16:00:00

"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade():
    op.create_index("ix_outbox_job", "outbox", ["job_id"])
    op.create_index(
        "ix_checkpoints_expiring",
        "checkpoints",
        ["expires_at"],
        postgresql_where=sa.text("status = 'PENDING' AND expires_at IS NOT NULL"),
    )


def downgrade():
    op.drop_index(
        "ix_checkpoints_expiring",
        table_name="checkpoints",
        postgresql_where=sa.text("status = 'PENDING' AND expires_at IS NOT NULL"),
    )
    op.drop_index("ix_outbox_job", table_name="outbox")
