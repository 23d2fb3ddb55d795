"""outbox rows keep the Sentry trace of the transaction that wrote them

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 10:00:00

"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("outbox", sa.Column("traceparent", sa.String(length=100), nullable=True))
    op.add_column("outbox", sa.Column("baggage", sa.Text(), nullable=True))


def downgrade():
    op.drop_column("outbox", "baggage")
    op.drop_column("outbox", "traceparent")
