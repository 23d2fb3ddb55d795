"""api tokens: when each was last used, and its first characters, for agentq tokens list

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 05:40:00

"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("api_tokens", sa.Column("prefix", sa.String(length=16), nullable=True))
    op.add_column(
        "api_tokens", sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True)
    )


def downgrade():
    op.drop_column("api_tokens", "last_used_at")
    op.drop_column("api_tokens", "prefix")
