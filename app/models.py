"""The tables: users, tokens, jobs, the step ledger, checkpoints, decisions, logs, outbox.

Postgres is the only source of truth. Status columns hold the values of the enums
in ``app.state``; CHECK constraints and partial unique indexes hold the invariants
the database can hold. Nothing here changes a status: ``app.state`` does.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
import sqlalchemy.orm as so
from flask_login import UserMixin
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import INET
from sqlalchemy.dialects.postgresql import JSONB

from app.extensions import db
from app.policy import Policy
from app.policy import review_policy
from app.status import CheckpointEventKind
from app.status import CheckpointStatus
from app.status import CheckpointType
from app.status import JobStatus
from app.status import Outcome
from app.status import StepStatus

UUID = sa.Uuid(as_uuid=True)
NOW = sa.text("clock_timestamp()")


def _id() -> so.Mapped[uuid.UUID]:
    return so.mapped_column(UUID, primary_key=True, server_default=sa.text("gen_random_uuid()"))


def _ts(nullable: bool = False) -> so.Mapped[Any]:
    if nullable:
        return so.mapped_column(sa.DateTime(timezone=True), nullable=True)
    return so.mapped_column(sa.DateTime(timezone=True), server_default=NOW, nullable=False)


def _in(column: str, vocabulary: type[StrEnum]) -> str:
    return f"{column} IN ({', '.join(repr(v.value) for v in vocabulary)})"


def _is(column: str, value: StrEnum) -> sa.TextClause:
    return sa.text(f"{column} = '{value.value}'")


class User(UserMixin, db.Model):
    """A person or a client; admins may review checkpoints and steer the fleet."""

    __tablename__ = "users"

    id: so.Mapped[uuid.UUID] = _id()
    name: so.Mapped[str] = so.mapped_column(sa.String(100), unique=True)
    is_admin: so.Mapped[bool] = so.mapped_column(server_default=sa.false())
    #: For the admin pages' login; NULL: the user signs in with API tokens only.
    password_hash: so.Mapped[str | None] = so.mapped_column(sa.String(255))
    created_at: so.Mapped[datetime] = _ts()


class ApiToken(db.Model):
    __tablename__ = "api_tokens"

    id: so.Mapped[uuid.UUID] = _id()
    user_id: so.Mapped[uuid.UUID] = so.mapped_column(
        sa.ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    #: SHA-256 of the token, hex; the token itself is shown once and never stored.
    token_hash: so.Mapped[str] = so.mapped_column(sa.String(64), unique=True)
    #: The token's first characters (``aq_`` and 5 more), to tell it apart in lists; NULL for
    #: tokens made before revision 0006.
    prefix: so.Mapped[str | None] = so.mapped_column(sa.String(16))
    created_at: so.Mapped[datetime] = _ts()
    revoked_at: so.Mapped[datetime | None] = _ts(nullable=True)
    #: When a request last carried the token, to the minute: the statement that checks the
    #: token writes it only when the stored time is older than that (``app/sql/hot.sql``).
    last_used_at: so.Mapped[datetime | None] = _ts(nullable=True)

    user: so.Mapped[User] = so.relationship(lazy="joined")


class Group(db.Model):
    """A named set of users that a review policy may name as approvers (``group:<name>``)."""

    __tablename__ = "groups"

    id: so.Mapped[uuid.UUID] = _id()
    name: so.Mapped[str] = so.mapped_column(sa.String(100), unique=True)
    created_at: so.Mapped[datetime] = _ts()

    members: so.Mapped[list[User]] = so.relationship(
        secondary="group_members", lazy="selectin", order_by="User.name"
    )


class GroupMember(db.Model):
    __tablename__ = "group_members"
    __table_args__ = (sa.Index("ix_group_members_user", "user_id"),)

    group_id: so.Mapped[uuid.UUID] = so.mapped_column(
        sa.ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: so.Mapped[uuid.UUID] = so.mapped_column(
        sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    added_at: so.Mapped[datetime] = _ts()


class Job(db.Model):
    __tablename__ = "jobs"
    __table_args__ = (
        sa.CheckConstraint("priority BETWEEN 0 AND 10", name="priority_range"),
        sa.CheckConstraint(_in("status", JobStatus), name="status_known"),
        sa.Index("ix_jobs_created", sa.text("created_at DESC"), sa.text("id DESC")),
        sa.Index("ix_jobs_user_created", "user_id", sa.text("created_at DESC"), sa.text("id DESC")),
        sa.Index(
            "ix_jobs_status_created", "status", sa.text("created_at DESC"), sa.text("id DESC")
        ),
        sa.Index(
            "uq_jobs_idempotency",
            "user_id",
            "idempotency_key",
            unique=True,
            postgresql_where=sa.text("idempotency_key IS NOT NULL"),
        ),
    )

    id: so.Mapped[uuid.UUID] = _id()
    user_id: so.Mapped[uuid.UUID] = so.mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"))
    job_type: so.Mapped[str] = so.mapped_column(sa.String(100))
    task_description: so.Mapped[str] = so.mapped_column(sa.Text)
    input_data: so.Mapped[dict] = so.mapped_column(JSONB, server_default=sa.text("'{}'::jsonb"))
    priority: so.Mapped[int] = so.mapped_column(sa.SmallInteger, server_default=sa.text("5"))
    status: so.Mapped[str] = so.mapped_column(sa.String(20), server_default=JobStatus.PENDING.value)
    #: The step to run next, or running now; NULL once the job is COMPLETED.
    current_step: so.Mapped[str | None] = so.mapped_column(sa.String(100))
    #: The job_steps row that holds the claim on current_step, NULL when nobody does.
    claim_step_id: so.Mapped[uuid.UUID | None] = so.mapped_column(UUID)
    #: Attempts of current_step since it became current (reset by advance and retry).
    step_attempts: so.Mapped[int] = so.mapped_column(server_default=sa.text("0"))
    result: so.Mapped[dict | None] = so.mapped_column(JSONB)
    error: so.Mapped[str | None] = so.mapped_column(sa.Text)
    idempotency_key: so.Mapped[str | None] = so.mapped_column(sa.String(200))
    #: The submission's ``review``: what it tightens in every checkpoint's policy.
    review: so.Mapped[dict | None] = so.mapped_column(JSONB)
    created_at: so.Mapped[datetime] = _ts()
    updated_at: so.Mapped[datetime] = _ts()
    started_at: so.Mapped[datetime | None] = _ts(nullable=True)
    finished_at: so.Mapped[datetime | None] = _ts(nullable=True)

    user: so.Mapped[User] = so.relationship(lazy="joined")

    @property
    def owner(self) -> str:
        """The name of the user who submitted it."""
        return self.user.name


class JobStep(db.Model):
    """One attempt of one step: the step ledger."""

    __tablename__ = "job_steps"
    __table_args__ = (
        sa.UniqueConstraint("job_id", "step", "attempt", name="uq_job_steps_attempt"),
        sa.CheckConstraint(_in("status", StepStatus), name="status_known"),
        sa.Index("ix_job_steps_job", "job_id", "started_at"),
        sa.Index(
            "ix_job_steps_lease",
            "lease_expires_at",
            postgresql_where=_is("status", StepStatus.RUNNING),
        ),
    )

    id: so.Mapped[uuid.UUID] = _id()
    job_id: so.Mapped[uuid.UUID] = so.mapped_column(sa.ForeignKey("jobs.id", ondelete="CASCADE"))
    step: so.Mapped[str] = so.mapped_column(sa.String(100))
    attempt: so.Mapped[int]
    status: so.Mapped[str] = so.mapped_column(
        sa.String(20), server_default=StepStatus.RUNNING.value
    )
    output: so.Mapped[Any | None] = so.mapped_column(JSONB)
    error: so.Mapped[str | None] = so.mapped_column(sa.Text)
    traceback: so.Mapped[str | None] = so.mapped_column(sa.Text)
    worker: so.Mapped[str | None] = so.mapped_column(sa.String(255))
    task_id: so.Mapped[str | None] = so.mapped_column(sa.String(64))
    started_at: so.Mapped[datetime] = _ts()
    finished_at: so.Mapped[datetime | None] = _ts(nullable=True)
    lease_expires_at: so.Mapped[datetime | None] = _ts(nullable=True)


class Checkpoint(db.Model):
    __tablename__ = "checkpoints"
    __table_args__ = (
        sa.CheckConstraint(_in("type", CheckpointType), name="type_known"),
        sa.CheckConstraint(_in("status", CheckpointStatus), name="status_known"),
        sa.CheckConstraint(
            f"({_is('type', CheckpointType.INFO).text}) = "
            f"({_is('status', CheckpointStatus.RECORDED).text})",
            name="info_never_blocks",
        ),
        sa.Index("ix_checkpoints_job", "job_id", "created_at"),
        sa.Index(
            "ix_checkpoints_pending",
            "created_at",
            "id",
            postgresql_where=_is("status", CheckpointStatus.PENDING),
        ),
        sa.Index(
            "ix_checkpoints_expiring",
            "expires_at",
            postgresql_where=sa.and_(
                _is("status", CheckpointStatus.PENDING), sa.text("expires_at IS NOT NULL")
            ),
        ),
        sa.Index(
            "uq_checkpoints_one_pending_per_job",
            "job_id",
            unique=True,
            postgresql_where=_is("status", CheckpointStatus.PENDING),
        ),
    )

    id: so.Mapped[uuid.UUID] = _id()
    job_id: so.Mapped[uuid.UUID] = so.mapped_column(sa.ForeignKey("jobs.id", ondelete="CASCADE"))
    type: so.Mapped[str] = so.mapped_column(sa.String(20))
    status: so.Mapped[str] = so.mapped_column(sa.String(20))
    title: so.Mapped[str] = so.mapped_column(sa.Text)
    data: so.Mapped[Any | None] = so.mapped_column(JSONB)
    #: The handler and step that opened it, and the step approval resumes at (NULL: the last).
    handler: so.Mapped[str] = so.mapped_column(sa.String(100))
    step: so.Mapped[str] = so.mapped_column(sa.String(100))
    resume_step: so.Mapped[str | None] = so.mapped_column(sa.String(100))
    #: 1 for the step's first proposal; each request for changes makes the next version.
    version: so.Mapped[int] = so.mapped_column(server_default=sa.text("1"))
    #: The review policy in force (``app.policy``, as the API shows it); NULL: the default.
    policy: so.Mapped[dict | None] = so.mapped_column(JSONB)
    #: Who may decide: user names and ``group:<name>``s; NULL: any admin. Escalation adds.
    approvers: so.Mapped[list[str] | None] = so.mapped_column(ARRAY(sa.Text))
    #: Votes so far, and who cast them (one vote per user, checked in the vote's UPDATE).
    approvals: so.Mapped[int] = so.mapped_column(server_default=sa.text("0"))
    rejections: so.Mapped[int] = so.mapped_column(server_default=sa.text("0"))
    voters: so.Mapped[list[uuid.UUID]] = so.mapped_column(
        ARRAY(UUID), server_default=sa.text("'{}'::uuid[]")
    )
    created_at: so.Mapped[datetime] = _ts()
    expires_at: so.Mapped[datetime | None] = _ts(nullable=True)
    decided_at: so.Mapped[datetime | None] = _ts(nullable=True)

    #: Every vote, oldest first; the last settled it once the checkpoint is not PENDING.
    votes: so.Mapped[list[Decision]] = so.relationship(
        lazy="selectin", order_by="Decision.created_at"
    )
    job: so.Mapped[Job] = so.relationship(lazy="select")

    @property
    def review_policy(self) -> Policy | None:
        """The review policy in force, every field said (None for an INFO checkpoint)."""
        return review_policy(self)

    @property
    def decision(self) -> Decision | None:
        """The vote that settled it (None while it is pending, or when nobody voted: it
        was cancelled)."""
        if self.status in (CheckpointStatus.PENDING, CheckpointStatus.CANCELLED):
            return None
        return self.votes[-1] if self.votes else None


class Decision(db.Model):
    """One vote on a checkpoint: a reviewer's, or ``system:timeout``'s at the deadline."""

    __tablename__ = "decisions"
    __table_args__ = (
        sa.CheckConstraint(_in("outcome", Outcome), name="outcome_known"),
        sa.Index("ix_decisions_checkpoint", "checkpoint_id", "created_at"),
        sa.Index("uq_decisions_one_vote_per_user", "checkpoint_id", "user_id", unique=True),
    )

    id: so.Mapped[uuid.UUID] = _id()
    checkpoint_id: so.Mapped[uuid.UUID] = so.mapped_column(
        sa.ForeignKey("checkpoints.id", ondelete="CASCADE")
    )
    user_id: so.Mapped[uuid.UUID | None] = so.mapped_column(
        sa.ForeignKey("users.id", ondelete="SET NULL")
    )
    #: A system actor (``system:timeout``); NULL for a user's vote.
    actor: so.Mapped[str | None] = so.mapped_column(sa.String(100))
    outcome: so.Mapped[str] = so.mapped_column(sa.String(20))
    #: The named option chosen with an approval (the policy's ``options``).
    option: so.Mapped[str | None] = so.mapped_column(sa.String(100))
    reason: so.Mapped[str | None] = so.mapped_column(sa.Text)
    #: The data as the approver edited it, NULL when approved as proposed.
    data: so.Mapped[Any | None] = so.mapped_column(JSONB)
    ip: so.Mapped[str | None] = so.mapped_column(INET)
    user_agent: so.Mapped[str | None] = so.mapped_column(sa.Text)
    created_at: so.Mapped[datetime] = _ts()

    user: so.Mapped[User | None] = so.relationship(lazy="joined")

    @property
    def decided_by(self) -> str | None:
        """The name of the user who decided, or the system actor (None once that user is
        deleted)."""
        return self.user.name if self.user else self.actor


class CheckpointEvent(db.Model):
    """A reminder or an escalation a pending checkpoint's policy scheduled: fired once, by
    whichever sweep claims it first."""

    __tablename__ = "checkpoint_events"
    __table_args__ = (
        sa.CheckConstraint(_in("kind", CheckpointEventKind), name="kind_known"),
        sa.Index(
            "ix_checkpoint_events_due", "due_at", postgresql_where=sa.text("fired_at IS NULL")
        ),
        sa.Index("ix_checkpoint_events_checkpoint", "checkpoint_id"),
    )

    id: so.Mapped[uuid.UUID] = _id()
    checkpoint_id: so.Mapped[uuid.UUID] = so.mapped_column(
        sa.ForeignKey("checkpoints.id", ondelete="CASCADE")
    )
    kind: so.Mapped[str] = so.mapped_column(sa.String(20))
    due_at: so.Mapped[datetime] = so.mapped_column(sa.DateTime(timezone=True))
    fired_at: so.Mapped[datetime | None] = _ts(nullable=True)
    #: What it carries: ``{"before": seconds}`` for a reminder, ``{"escalateTo": [...]}``.
    data: so.Mapped[Any | None] = so.mapped_column(JSONB)
    created_at: so.Mapped[datetime] = _ts()


class JobLog(db.Model):
    __tablename__ = "job_logs"
    __table_args__ = (sa.Index("ix_job_logs_job", "job_id", "created_at", "id"),)

    id: so.Mapped[uuid.UUID] = _id()
    job_id: so.Mapped[uuid.UUID] = so.mapped_column(sa.ForeignKey("jobs.id", ondelete="CASCADE"))
    step: so.Mapped[str | None] = so.mapped_column(sa.String(100))
    kind: so.Mapped[str] = so.mapped_column(sa.String(50))
    message: so.Mapped[str] = so.mapped_column(sa.Text)
    data: so.Mapped[Any | None] = so.mapped_column(JSONB)
    created_at: so.Mapped[datetime] = _ts()


class Outbox(db.Model):
    """A dispatch intent: run ``step`` of ``job_id``, committed with the change that needs it."""

    __tablename__ = "outbox"
    __table_args__ = (
        sa.Index("ix_outbox_available", "available_at"),
        sa.Index("ix_outbox_job", "job_id"),
    )

    id: so.Mapped[uuid.UUID] = _id()
    job_id: so.Mapped[uuid.UUID] = so.mapped_column(sa.ForeignKey("jobs.id", ondelete="CASCADE"))
    step: so.Mapped[str] = so.mapped_column(sa.String(100))
    created_at: so.Mapped[datetime] = _ts()
    #: Not published before this time (retry backoff).
    available_at: so.Mapped[datetime] = _ts()
    attempts: so.Mapped[int] = so.mapped_column(server_default=sa.text("0"))
    last_error: so.Mapped[str | None] = so.mapped_column(sa.Text)
    #: The Sentry trace (``sentry-trace`` header) of the transaction that wrote the row, and
    #: its ``baggage``: publishing continues it, so a job's steps join the request's trace.
    traceparent: so.Mapped[str | None] = so.mapped_column(sa.String(100))
    baggage: so.Mapped[str | None] = so.mapped_column(sa.Text)
    #: Written by an approval: the job's continuation, published on the fast lane
    #: (``app.routing``) so that it does not wait behind new jobs.
    continuation: so.Mapped[bool] = so.mapped_column(server_default=sa.false())


class FleetState(db.Model):
    """One row: whether the workers consume their step queues."""

    __tablename__ = "fleet_state"
    __table_args__ = (sa.CheckConstraint("id = 1", name="single_row"),)

    id: so.Mapped[int] = so.mapped_column(primary_key=True, autoincrement=False)
    paused: so.Mapped[bool] = so.mapped_column(server_default=sa.false())
    changed_by: so.Mapped[uuid.UUID | None] = so.mapped_column(
        sa.ForeignKey("users.id", ondelete="SET NULL")
    )
    changed_at: so.Mapped[datetime] = _ts()
