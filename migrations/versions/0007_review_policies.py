"""review policies: groups, a checkpoint's policy, version and votes, its events

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 10:20:00

A checkpoint gains the policy in force, its version (a request for changes opens the
next), who may decide, and its votes so far; a decision becomes one vote of several
(unique per user), possibly a system actor's with an option; reminders and escalations
are stored as events. ``agentq_may_decide`` is the one place that says who may vote.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_CHECKPOINT_STATUSES = (
    "RECORDED",
    "PENDING",
    "APPROVED",
    "REJECTED",
    "EXPIRED",
    "CANCELLED",
    "CHANGES_REQUESTED",
)
_OUTCOMES = ("APPROVED", "REJECTED", "CHANGES_REQUESTED", "EXPIRED")

#: Whether a user may vote on a checkpoint, beside being an admin: named among its
#: approvers (by name or by a group), and not its job's submitter unless the policy allows.
MAY_DECIDE = """
CREATE FUNCTION agentq_may_decide(
    approvers text[], allow_self boolean, owner_id uuid, voter_id uuid, voter_name text
) RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT (allow_self OR owner_id IS DISTINCT FROM voter_id)
       AND (approvers IS NULL
            OR voter_name = ANY(approvers)
            OR EXISTS (SELECT FROM group_members m JOIN groups g ON g.id = m.group_id
                        WHERE m.user_id = voter_id AND 'group:' || g.name = ANY(approvers)))
$$
"""


def _in(values):
    return ", ".join(f"'{v}'" for v in values)


def upgrade():
    op.create_table(
        "groups",
        sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("clock_timestamp()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "group_members",
        sa.Column("group_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column(
            "added_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("clock_timestamp()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(["group_id"], ["groups.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("group_id", "user_id"),
    )
    op.create_index("ix_group_members_user", "group_members", ["user_id"])

    op.add_column("jobs", sa.Column("review", postgresql.JSONB(), nullable=True))

    op.add_column(
        "checkpoints",
        sa.Column("version", sa.Integer(), server_default=sa.text("1"), nullable=False),
    )
    op.add_column("checkpoints", sa.Column("policy", postgresql.JSONB(), nullable=True))
    op.add_column("checkpoints", sa.Column("approvers", postgresql.ARRAY(sa.Text()), nullable=True))
    for counter in ("approvals", "rejections"):
        op.add_column(
            "checkpoints",
            sa.Column(counter, sa.Integer(), server_default=sa.text("0"), nullable=False),
        )
    op.add_column(
        "checkpoints",
        sa.Column(
            "voters",
            postgresql.ARRAY(sa.Uuid()),
            server_default=sa.text("'{}'::uuid[]"),
            nullable=False,
        ),
    )
    op.drop_constraint("status_known", "checkpoints", type_="check")
    op.create_check_constraint(
        "status_known", "checkpoints", f"status IN ({_in(_CHECKPOINT_STATUSES)})"
    )
    # Checkpoints pending at the upgrade keep the rules they were opened under: their
    # submitter may decide them, and their expiry fails the job.
    op.execute(
        'UPDATE checkpoints SET policy = \'{"allowSelfApproval": true, "onTimeout": "fail"}\''
        " WHERE status = 'PENDING' AND type = 'APPROVAL_REQUIRED'"
    )

    op.drop_constraint("decisions_checkpoint_id_key", "decisions", type_="unique")
    op.create_index("ix_decisions_checkpoint", "decisions", ["checkpoint_id", "created_at"])
    op.create_index(
        "uq_decisions_one_vote_per_user", "decisions", ["checkpoint_id", "user_id"], unique=True
    )
    op.add_column("decisions", sa.Column("actor", sa.String(length=100), nullable=True))
    op.add_column("decisions", sa.Column("option", sa.String(length=100), nullable=True))
    op.drop_constraint("outcome_known", "decisions", type_="check")
    op.create_check_constraint("outcome_known", "decisions", f"outcome IN ({_in(_OUTCOMES)})")

    op.create_table(
        "checkpoint_events",
        sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("checkpoint_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("fired_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("data", postgresql.JSONB(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("clock_timestamp()"),
            nullable=False,
        ),
        sa.CheckConstraint("kind IN ('reminder', 'escalation')", name="kind_known"),
        sa.ForeignKeyConstraint(["checkpoint_id"], ["checkpoints.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_checkpoint_events_due",
        "checkpoint_events",
        ["due_at"],
        postgresql_where=sa.text("fired_at IS NULL"),
    )
    op.create_index("ix_checkpoint_events_checkpoint", "checkpoint_events", ["checkpoint_id"])
    op.execute(MAY_DECIDE)


def downgrade():
    op.execute("DROP FUNCTION agentq_may_decide(text[], boolean, uuid, uuid, text)")
    op.drop_table("checkpoint_events")
    op.drop_constraint("outcome_known", "decisions", type_="check")
    op.execute(
        "DELETE FROM decisions WHERE outcome NOT IN ('APPROVED', 'REJECTED')"
        " OR id NOT IN (SELECT DISTINCT ON (checkpoint_id) id FROM decisions"
        " ORDER BY checkpoint_id, created_at DESC)"
    )
    op.create_check_constraint("outcome_known", "decisions", "outcome IN ('APPROVED', 'REJECTED')")
    op.drop_column("decisions", "option")
    op.drop_column("decisions", "actor")
    op.drop_index("uq_decisions_one_vote_per_user", table_name="decisions")
    op.drop_index("ix_decisions_checkpoint", table_name="decisions")
    op.create_unique_constraint("decisions_checkpoint_id_key", "decisions", ["checkpoint_id"])
    op.drop_constraint("status_known", "checkpoints", type_="check")
    op.execute("UPDATE checkpoints SET status = 'REJECTED' WHERE status = 'CHANGES_REQUESTED'")
    op.create_check_constraint(
        "status_known", "checkpoints", f"status IN ({_in(_CHECKPOINT_STATUSES[:-1])})"
    )
    for column in ("voters", "rejections", "approvals", "approvers", "policy", "version"):
        op.drop_column("checkpoints", column)
    op.drop_column("jobs", "review")
    op.drop_index("ix_group_members_user", table_name="group_members")
    op.drop_table("group_members")
    op.drop_table("groups")
