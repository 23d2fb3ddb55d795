"""Reads used by views, steps and sweeps, as named functions returning rows or selects."""

from __future__ import annotations

import functools
import json
import uuid
from datetime import UTC
from datetime import datetime
from types import SimpleNamespace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY

from app.errors import NotFoundError
from app.extensions import db
from app.models import Checkpoint
from app.models import Job
from app.models import JobLog
from app.models import JobStep
from app.models import User
from app.policy import Policy
from app.policy import review_policy
from app.sql import run
from app.sql import statements
from app.status import CheckpointStatus
from app.status import JobStatus


def get_job(job_id: uuid.UUID) -> Job:
    """:raises NotFoundError: when there is no such job."""
    job = db.session.get(Job, job_id)
    if job is None:
        raise NotFoundError(f"Job {job_id} not found")
    return job


def jobs(*, user_id: uuid.UUID | None, status: str | None, job_type: str | None) -> sa.Select:
    """Jobs newest first (a user's own when ``user_id`` is given), filtered."""
    stmt = sa.select(Job).order_by(Job.created_at.desc(), Job.id.desc())
    if user_id is not None:
        stmt = stmt.where(Job.user_id == user_id)
    if status:
        stmt = stmt.where(Job.status == status)
    if job_type:
        stmt = stmt.where(Job.job_type == job_type)
    return stmt


def pending_checkpoints(*, job_type: str | None = None) -> sa.Select:
    """Pending approval checkpoints, oldest first, with their jobs."""
    stmt = (
        sa.select(Checkpoint)
        .join(Job, Job.id == Checkpoint.job_id)
        .where(Checkpoint.status == CheckpointStatus.PENDING)
        .order_by(Checkpoint.created_at, Checkpoint.id)
    )
    if job_type:
        stmt = stmt.where(Job.job_type == job_type)
    return stmt


#: The smallest keyset there is: page 1 of a list read in (created_at, id) order.
_FIRST = (datetime.min.replace(tzinfo=UTC), uuid.UUID(int=0))


def pending_checkpoints_page(
    *,
    job_type: str | None,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
    viewer: Any,
    mine: bool = False,
) -> list[dict]:
    """Pending checkpoints after the keyset ``after``, oldest first, each with its job and
    its votes (one statement), as the API shows them (``PendingCheckpointSchema``), and
    whether ``viewer`` (an admin: ``id``, ``name``) may vote on it; with ``mine``, only
    those."""
    created, checkpoint_id = after or _FIRST
    rows = run(
        "pending_checkpoints",
        job_type=job_type,
        after_created=created,
        after_id=checkpoint_id,
        limit=limit,
        viewer_id=viewer.id,
        viewer_name=viewer.name,
        mine=mine,
    )
    return [
        {
            "id": r.id,
            "job_id": r.job_id,
            "type": r.type,
            "status": r.status,
            "title": r.title,
            "data": r.data,
            "step": r.step,
            "resume_step": r.resume_step,
            "created_at": r.created_at,
            "expires_at": r.expires_at,
            "decided_at": r.decided_at,
            "decision": None,
            "version": r.version,
            "review_policy": _policy(r.type, r.policy),
            "approvers": r.approvers,
            "approvals": r.approvals,
            "rejections": r.rejections,
            "votes": [
                {**v, "created_at": datetime.fromisoformat(v["created_at"])} for v in r.votes
            ],
            "may_decide": r.may_decide,
            "job": {
                "id": r.job_id,
                "job_type": r.job_type,
                "task_description": r.task_description,
                "input_data": r.input_data,
                "priority": r.priority,
                "status": r.job_status,
                "current_step": r.current_step,
                "result": r.result,
                "error": r.error,
                "user_id": r.user_id,
                "owner": r.owner,
                "created_at": r.job_created_at,
                "updated_at": r.job_updated_at,
                "started_at": r.job_started_at,
                "finished_at": r.job_finished_at,
            },
        }
        for r in rows
    ]


@functools.lru_cache(maxsize=512)
def _policy(checkpoint_type: str, text: str | None) -> Policy | None:
    """The policy in force of a listed checkpoint, from its stored JSON's text: parsed once
    for every row that has the same (most rows of a page do)."""
    stored = SimpleNamespace(
        type=checkpoint_type, policy=None if text is None else json.loads(text)
    )
    return review_policy(stored)


def checkpoint_versions(checkpoint_id: uuid.UUID) -> tuple[Checkpoint, list[Checkpoint]]:
    """The checkpoint, and every version of it its step opened (oldest first).

    :raises NotFoundError: for an unknown checkpoint.
    """
    checkpoint = db.session.get(Checkpoint, checkpoint_id)
    if checkpoint is None:
        raise NotFoundError(f"Checkpoint {checkpoint_id} not found")
    versions = db.session.scalars(
        sa.select(Checkpoint)
        .where(
            Checkpoint.job_id == checkpoint.job_id,
            Checkpoint.step == checkpoint.step,
            Checkpoint.type == checkpoint.type,
        )
        .order_by(Checkpoint.version, Checkpoint.created_at)
    ).all()
    return checkpoint, list(versions)


def eligible_deciders(checkpoint: Checkpoint) -> list[str]:
    """The names of the admins who may vote on the checkpoint as its policy stands
    (``agentq_may_decide``: its approvers and their groups, its submitter only with
    self-approval), whether or not they voted yet; alphabetical."""
    allow_self = bool((checkpoint.policy or {}).get("allowSelfApproval"))
    may = sa.func.agentq_may_decide(
        sa.cast(checkpoint.approvers, ARRAY(sa.Text)),
        allow_self,
        checkpoint.job.user_id,
        User.id,
        User.name,
    )
    return list(
        db.session.scalars(sa.select(User.name).where(User.is_admin, may).order_by(User.name))
    )


def job_logs(job_id: uuid.UUID) -> list[JobLog]:
    return list(
        db.session.scalars(
            sa.select(JobLog).where(JobLog.job_id == job_id).order_by(JobLog.created_at, JobLog.id)
        )
    )


def job_checkpoints(job_id: uuid.UUID) -> list[Checkpoint]:
    return list(
        db.session.scalars(
            sa.select(Checkpoint)
            .where(Checkpoint.job_id == job_id)
            .order_by(Checkpoint.created_at, Checkpoint.id)
        ).unique()
    )


def job_steps(job_id: uuid.UUID) -> list[JobStep]:
    return list(
        db.session.scalars(
            sa.select(JobStep)
            .where(JobStep.job_id == job_id)
            .order_by(JobStep.started_at, JobStep.attempt)
        )
    )


def job_counts() -> dict[str, int]:
    """Jobs by status, every status present (zero when none)."""
    counts = {s.value: 0 for s in JobStatus}
    counts.update({row.status: row.n for row in db.session.execute(statements["job_counts"])})
    return counts


def pending_checkpoint_count() -> int:
    return db.session.scalar(
        sa.select(sa.func.count())
        .select_from(Checkpoint)
        .where(Checkpoint.status == CheckpointStatus.PENDING)
    )


def oldest_pending_checkpoint_age() -> float:
    """Seconds since the oldest pending checkpoint's creation (0 when none is pending)."""
    return db.session.scalar(statements["oldest_pending_checkpoint_age"])


def lapsed_leases(limit: int = 100) -> list[sa.Row]:
    return db.session.execute(statements["lapsed_leases"], {"limit": limit}).all()


def stalled_jobs(stall_seconds: float, limit: int = 100) -> list[sa.Row]:
    return db.session.execute(
        statements["stalled_jobs"], {"stall_seconds": stall_seconds, "limit": limit}
    ).all()


def held_steps(pairs: list[tuple[uuid.UUID, str]]) -> set[tuple[uuid.UUID, str]]:
    """The (job, step) pairs among ``pairs`` that a running attempt holds with a live lease."""
    if not pairs:
        return set()
    job_ids, steps = zip(*pairs, strict=True)
    rows = db.session.execute(
        statements["held_steps"], {"job_ids": list(job_ids), "steps": list(steps)}
    )
    return {(row.job_id, row.step) for row in rows}


def awaits_message(job_id: uuid.UUID, step: str) -> bool:
    """True when the job waits at ``step`` for a message: runnable, unclaimed, no intent."""
    return db.session.execute(
        statements["awaits_message"], {"job_id": job_id, "step": step}
    ).scalar()


def expired_checkpoints(now: datetime, on_timeout: str, limit: int = 100) -> list[sa.Row]:
    """Pending checkpoints whose deadline passed by ``now``: ``id``, ``on_timeout`` (the
    policy's, else ``on_timeout``), ``expires_in``."""
    params = {"now": now, "on_timeout": on_timeout, "limit": limit}
    return list(db.session.execute(statements["expired_checkpoints"], params))


def fire_checkpoint_events(now: datetime, limit: int = 100) -> list[sa.Row]:
    """Fire the reminders and escalations due by ``now`` (committed): the rows fired,
    ``kind``, ``data``, ``checkpoint_id``, ``job_id``, ``handler``."""
    rows = list(
        db.session.execute(statements["fire_checkpoint_events"], {"now": now, "limit": limit})
    )
    db.session.commit()
    return rows


def outbox_backlog() -> sa.Row:
    """``backlog``: outbox rows not yet published; ``oldest_age``: seconds since the oldest's
    creation (0 when there is none)."""
    return db.session.execute(statements["outbox_backlog"]).one()


def recent_job_logs(job_id: uuid.UUID, limit: int = 100) -> list[sa.Row]:
    """The job's latest log lines, oldest first, on a connection of their own.

    Safe to call while the session's transaction is failing (Sentry reads them then).
    """
    stmt = (
        sa.select(JobLog.created_at, JobLog.kind, JobLog.step, JobLog.message)
        .where(JobLog.job_id == job_id)
        .order_by(JobLog.created_at.desc(), JobLog.id.desc())
        .limit(limit)
    )
    with db.engine.connect() as conn:
        return list(reversed(conn.execute(stmt).all()))
