"""outbox rows say whether they continue a job after an approval (the fast lane)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 05:30:00

"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column(
        "outbox",
        sa.Column("continuation", sa.Boolean(), server_default=sa.false(), nullable=False),
    )


def downgrade():
    op.drop_column("outbox", "continuation")
