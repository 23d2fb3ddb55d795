"""user passwords, for the admin pages' login

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 00:30:00

"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("users", sa.Column("password_hash", sa.String(length=255), nullable=True))


def downgrade():
    op.drop_column("users", "password_hash")
