"""The job state machine: the only code that changes a status.

Every transition is one conditional UPDATE (``... WHERE status IN <allowed>``), so
two racing actors cannot both win; the loser gets ``InvalidTransition`` (or, for a
checkpoint, ``AlreadyDecided`` carrying the first decision). The same transaction
writes the ledger, checkpoint, decision and log rows and, when work must run, the
outbox row; the outbox row is published only after the commit (``_commit``).

::

    PENDING ──claim──▶ RUNNING ──step returns──▶ RUNNING (next step, same chain)
       ▲                  │ approval checkpoint
       │ approve          ▼
       └──────────── WAITING_APPROVAL ──reject / expire──▶ FAILED
    RUNNING ──last step──▶ COMPLETED        RUNNING ──error after retries──▶ FAILED
    RUNNING ──error, attempts left──▶ PENDING (same step, after a backoff)
    any non-final ──cancel──▶ CANCELLED     FAILED | CANCELLED ──retry──▶ PENDING
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import IntegrityError

from app import instruments
from app import sentry
from app.errors import AlreadyDecided
from app.errors import ConflictError
from app.errors import InvalidTransition
from app.errors import NotFoundError
from app.extensions import db
from app.models import Checkpoint
from app.models import Decision
from app.models import FleetState
from app.models import Job
from app.models import JobLog
from app.models import JobStep
from app.models import Outbox
from app.sql import queries
from handlers.registry import APPROVAL_REQUIRED
from handlers.registry import registry


class JobStatus(StrEnum):
    """A job's status; upper case, as the guide's API shows them."""

    #: Queued for a worker (new, approved, retried, or waiting out a retry backoff).
    PENDING = "PENDING"
    #: A step is running, or the next step of the same chain is about to.
    RUNNING = "RUNNING"
    #: Parked at an APPROVAL_REQUIRED checkpoint; holds no worker and no broker message.
    WAITING_APPROVAL = "WAITING_APPROVAL"
    #: The last step returned; ``result`` holds what it returned.
    COMPLETED = "COMPLETED"
    #: Rejected, expired, or a step failed after its attempts; ``error`` says why.
    FAILED = "FAILED"
    #: Cancelled by its owner or an admin.
    CANCELLED = "CANCELLED"


class StepStatus(StrEnum):
    """The status of one step attempt in the ledger."""

    #: Holds the job's claim and renews its lease.
    RUNNING = "running"
    #: Returned, and advanced the job.
    SUCCEEDED = "succeeded"
    #: Raised; the job was retried or failed.
    FAILED = "failed"
    #: Its lease lapsed (worker died) and another attempt took the step.
    LOST = "lost"
    #: Finished after losing its claim; its result changed nothing.
    DISCARDED = "discarded"
    #: The job was cancelled while it ran.
    CANCELLED = "cancelled"


class CheckpointStatus(StrEnum):
    #: An INFO checkpoint: recorded, never blocks, never pending.
    RECORDED = "RECORDED"
    PENDING = "PENDING"
    APPROVED = "APPROVED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"
    CANCELLED = "CANCELLED"


class Outcome(StrEnum):
    APPROVED = "APPROVED"
    REJECTED = "REJECTED"


#: Which statuses each status may move to.
ALLOWED: dict[JobStatus, set[JobStatus]] = {
    # PENDING -> PENDING: a stalled job dispatched again.
    JobStatus.PENDING: {JobStatus.PENDING, JobStatus.RUNNING, JobStatus.CANCELLED},
    JobStatus.RUNNING: {
        JobStatus.RUNNING,
        JobStatus.PENDING,
        JobStatus.WAITING_APPROVAL,
        JobStatus.COMPLETED,
        JobStatus.FAILED,
        JobStatus.CANCELLED,
    },
    JobStatus.WAITING_APPROVAL: {
        JobStatus.PENDING,
        JobStatus.COMPLETED,
        JobStatus.FAILED,
        JobStatus.CANCELLED,
    },
    JobStatus.COMPLETED: set(),
    JobStatus.FAILED: {JobStatus.PENDING},
    JobStatus.CANCELLED: {JobStatus.PENDING},
}


#: Statuses a job never leaves.
FINAL = {status for status, targets in ALLOWED.items() if not targets}


def sources(target: JobStatus) -> list[str]:
    """The statuses from which ``target`` may be reached."""
    return [s.value for s, targets in ALLOWED.items() if target in targets]


def _now() -> sa.ColumnElement:
    return sa.func.clock_timestamp()


def _transition(
    job_id: uuid.UUID,
    target: JobStatus,
    *where: Any,
    from_: set[JobStatus] | None = None,
    **values: Any,
) -> Job:
    """Move a job to ``target`` with one guarded UPDATE; returns the updated row.

    ``from_`` narrows the statuses it may leave (by default, every status that
    ``ALLOWED`` lets reach ``target``); ``where`` adds conditions (a held claim).

    :raises InvalidTransition: when the job is not in a status that allows it
        (or an extra ``where`` condition does not hold).
    """
    allowed = sources(target) if from_ is None else [s.value for s in from_]
    if not set(allowed) <= set(sources(target)):
        raise ValueError(f"{sorted(allowed)} -> {target.value} is not in the transition table")
    stmt = (
        sa.update(Job)
        .where(Job.id == job_id, Job.status.in_(allowed), *where)
        .values(status=target.value, updated_at=_now(), **values)
        .returning(Job)
        .execution_options(synchronize_session=False)
    )
    job = db.session.execute(stmt).scalar_one_or_none()
    if job is None:
        current = db.session.get(Job, job_id)
        if current is None:
            raise NotFoundError(f"Job {job_id} not found")
        raise InvalidTransition(
            f"Job {job_id} is {current.status}; it cannot become {target.value}",
            details={"status": current.status},
        )
    db.session.refresh(job)
    return job


def _outbox(job_id: uuid.UUID, step: str, delay: float = 0.0) -> uuid.UUID:
    """Add a dispatch intent for ``step`` of the job to the current transaction.

    The row keeps the current Sentry trace, which its publisher continues.
    """
    row = Outbox(job_id=job_id, step=step, **sentry.trace_headers())
    if delay:
        row.available_at = sa.func.clock_timestamp() + timedelta(seconds=delay)
    db.session.add(row)
    db.session.flush()
    return row.id


def _commit(dispatch: list[uuid.UUID] = ()) -> None:
    """Commit, then hand the new outbox rows to the publisher (never before the commit)."""
    db.session.commit()
    if dispatch:
        current_app.extensions["agentq.dispatcher"].submit(list(dispatch))


def add_log(
    job_id: uuid.UUID, kind: str, message: str, *, step: str | None = None, data: Any = None
) -> None:
    """Add a job log line to the current transaction."""
    db.session.add(JobLog(job_id=job_id, step=step, kind=kind, message=message, data=data))


def write_log(
    job_id: uuid.UUID, kind: str, message: str, *, step: str | None = None, data: Any = None
) -> None:
    """Write a job log line in a transaction of its own, so it shows while the step runs."""
    with db.engine.begin() as conn:
        conn.execute(
            sa.insert(JobLog).values(
                job_id=job_id, step=step, kind=kind, message=message, data=data
            )
        )


# -- Jobs ------------------------------------------------------------------------------


def enqueue(
    *,
    user_id: uuid.UUID,
    job_type: str,
    task_description: str,
    input_data: dict,
    priority: int,
    idempotency_key: str | None = None,
) -> Job:
    """Create a PENDING job and its dispatch intent in one transaction.

    With an ``idempotency_key`` already used by this user, returns that job.

    :raises UnknownHandlerError: for a job type with no handler.
    :raises ConflictError: when the key was used for a different request.
    """
    handler = registry.get(job_type)
    if idempotency_key:
        existing = _by_idempotency_key(user_id, idempotency_key)
        if existing is not None:
            return _same_request(existing, job_type, task_description, input_data, priority)
    job = Job(
        user_id=user_id,
        job_type=job_type,
        task_description=task_description,
        input_data=input_data,
        priority=priority,
        status=JobStatus.PENDING.value,
        current_step=handler.steps[0].name,
        idempotency_key=idempotency_key,
    )
    db.session.add(job)
    try:
        db.session.flush()
    except IntegrityError:
        # Another request with the same key committed between our look-up and insert.
        db.session.rollback()
        existing = _by_idempotency_key(user_id, idempotency_key)
        return _same_request(existing, job_type, task_description, input_data, priority)
    add_log(job.id, "queued", f"Job queued at priority {priority}")
    instruments.record_job_created(job_type)
    _commit([_outbox(job.id, job.current_step)])
    return job


def _by_idempotency_key(user_id: uuid.UUID, key: str) -> Job | None:
    return db.session.execute(
        sa.select(Job).where(Job.user_id == user_id, Job.idempotency_key == key)
    ).scalar_one_or_none()


def _same_request(job: Job, job_type: str, description: str, data: dict, priority: int) -> Job:
    if (job.job_type, job.task_description, job.input_data, job.priority) != (
        job_type,
        description,
        data,
        priority,
    ):
        raise ConflictError(
            "Idempotency-Key was already used for a different request",
            details={"jobId": str(job.id)},
        )
    return job


def cancel(job_id: uuid.UUID, *, by: str) -> Job:
    """Cancel a PENDING, RUNNING or WAITING_APPROVAL job; a running step's result is discarded.

    :raises InvalidTransition: for a job already COMPLETED, FAILED or CANCELLED.
    """
    # Retry must re-open a review that was pending, so it resumes at the step that asked
    # for it. Decided in the UPDATE itself, from the status the job has when it is cancelled.
    opened_by = (
        sa.select(Checkpoint.step)
        .where(Checkpoint.job_id == Job.id, Checkpoint.status == CheckpointStatus.PENDING.value)
        .scalar_subquery()
    )
    current_step = sa.case(
        (Job.status == JobStatus.WAITING_APPROVAL.value, opened_by), else_=Job.current_step
    )
    job = _transition(
        job_id,
        JobStatus.CANCELLED,
        claim_step_id=None,
        finished_at=_now(),
        current_step=current_step,
    )
    db.session.execute(
        sa.update(JobStep)
        .where(JobStep.job_id == job_id, JobStep.status == StepStatus.RUNNING.value)
        .values(status=StepStatus.CANCELLED.value, finished_at=_now(), error="job cancelled")
    )
    db.session.execute(
        sa.update(Checkpoint)
        .where(Checkpoint.job_id == job_id, Checkpoint.status == CheckpointStatus.PENDING.value)
        .values(status=CheckpointStatus.CANCELLED.value, decided_at=_now())
    )
    db.session.execute(sa.delete(Outbox).where(Outbox.job_id == job_id))
    add_log(job_id, "cancelled", f"Job cancelled by {by}")
    instruments.record_job_finished(job)
    _commit()
    return job


def retry(job_id: uuid.UUID, *, by: str) -> Job:
    """Queue a FAILED or CANCELLED job again at the step where it stopped.

    Earlier steps' outputs and decisions are kept; their steps do not run again.

    :raises InvalidTransition: for a job that is not FAILED or CANCELLED.
    """
    job = _transition(
        job_id,
        JobStatus.PENDING,
        Job.current_step.is_not(None),
        from_={JobStatus.FAILED, JobStatus.CANCELLED},
        step_attempts=0,
        error=None,
        finished_at=None,
        claim_step_id=None,
    )
    add_log(job_id, "retried", f"Job retried by {by} at step {job.current_step}")
    _commit([_outbox(job.id, job.current_step)])
    return job


# -- Steps -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    """A step attempt that holds its job's claim."""

    job_id: uuid.UUID
    job_type: str
    step: str
    attempt_id: uuid.UUID
    attempt: int
    #: Attempts of this step since it became current, this one included.
    step_attempts: int


def claim_step(
    job_id: uuid.UUID, step: str, *, worker: str, task_id: str | None, lease_seconds: float
) -> Claim | None:
    """Claim ``step`` of the job for a new attempt, or None when it is not this step's turn.

    A duplicate delivery (redelivery, sweep) finds the claim taken, or the job moved
    on, and gets None. A claim whose lease lapsed is taken over, and its attempt
    is marked lost.
    """
    attempt_id = uuid.uuid4()
    params = {"job_id": job_id, "step": step, "attempt_id": attempt_id}
    row = db.session.execute(queries["claim_step"], params).one_or_none()
    if row is None:
        db.session.rollback()
        return None
    attempt = db.session.execute(
        queries["record_attempt"],
        {**params, "worker": worker, "task_id": task_id, "lease_seconds": lease_seconds},
    ).scalar_one()
    db.session.execute(queries["supersede_attempts"], params)
    _commit()
    return Claim(job_id, row.job_type, step, attempt_id, attempt, row.step_attempts)


def renew_lease(attempt_id: uuid.UUID, lease_seconds: float) -> bool:
    """Extend a running attempt's lease; False when the attempt no longer holds its claim."""
    with db.engine.begin() as conn:
        row = conn.execute(
            queries["renew_lease"], {"attempt_id": attempt_id, "lease_seconds": lease_seconds}
        ).one_or_none()
    return row is not None


def _close_attempt(claim: Claim, status: StepStatus, **values: Any) -> None:
    db.session.execute(
        sa.update(JobStep)
        .where(JobStep.id == claim.attempt_id, JobStep.status == StepStatus.RUNNING.value)
        .values(status=status.value, finished_at=_now(), lease_expires_at=None, **values)
    )


def _discard(claim: Claim, **values: Any) -> str:
    """Record a late result that changes nothing: the attempt lost its claim."""
    db.session.rollback()
    _close_attempt(claim, StepStatus.DISCARDED, **values)
    _commit()
    return "discarded"


def finish_step(
    claim: Claim, output: Any, checkpoints: list[dict], *, chain_continues: bool
) -> str:
    """Record a step's result and advance the job, all in one transaction.

    Returns what happened: ``"advanced"`` (the next step runs; dispatched through
    the outbox unless ``chain_continues``), ``"waiting"`` (an approval checkpoint
    parked the job), ``"completed"``, or ``"discarded"`` (the attempt had lost its
    claim, e.g. the job was cancelled: nothing changed).
    """
    handler = registry.get(claim.job_type)
    nxt = handler.next_step(claim.step)
    blocking = next((c for c in checkpoints if c["type"] == APPROVAL_REQUIRED), None)
    dispatch: list[uuid.UUID] = []
    try:
        if blocking is not None:
            _transition(
                claim.job_id,
                JobStatus.WAITING_APPROVAL,
                Job.claim_step_id == claim.attempt_id,
                claim_step_id=None,
                current_step=nxt.name if nxt else None,
            )
            outcome = "waiting"
        elif nxt is not None:
            _transition(
                claim.job_id,
                JobStatus.RUNNING,
                Job.claim_step_id == claim.attempt_id,
                claim_step_id=None,
                current_step=nxt.name,
                step_attempts=0,
            )
            outcome = "advanced"
        else:
            job = _transition(
                claim.job_id,
                JobStatus.COMPLETED,
                Job.claim_step_id == claim.attempt_id,
                claim_step_id=None,
                current_step=None,
                result=output,
                finished_at=_now(),
            )
            outcome = "completed"
    except InvalidTransition:
        return _discard(claim, output=output)
    _close_attempt(claim, StepStatus.SUCCEEDED, output=output)
    for c in checkpoints:
        expires = c.get("expires_in")
        db.session.add(
            Checkpoint(
                job_id=claim.job_id,
                type=c["type"],
                status=(
                    CheckpointStatus.PENDING
                    if c["type"] == APPROVAL_REQUIRED
                    else CheckpointStatus.RECORDED
                ).value,
                title=c["title"],
                data=c.get("data"),
                handler=claim.job_type,
                step=claim.step,
                resume_step=nxt.name if nxt else None,
                expires_at=sa.func.clock_timestamp() + timedelta(seconds=expires)
                if expires
                else None,
            )
        )
        add_log(
            claim.job_id, "checkpoint", f"{c['type']} checkpoint: {c['title']}", step=claim.step
        )
    if outcome == "advanced" and not chain_continues:
        dispatch.append(_outbox(claim.job_id, nxt.name))
    if outcome == "completed":
        add_log(claim.job_id, "completed", "Job completed", step=claim.step)
        instruments.record_job_finished(job)
    _commit(dispatch)
    return outcome


def fail_step(claim: Claim, *, error: str, traceback: str, permanent: bool) -> str:
    """Record a step's exception; retry it after a backoff or fail the job.

    Returns ``"retrying"``, ``"failed"``, or ``"discarded"`` when the attempt had
    lost its claim.
    """
    step = registry.get(claim.job_type).get_step(claim.step)
    retrying = not permanent and claim.step_attempts < step.max_attempts
    dispatch: list[uuid.UUID] = []
    try:
        if retrying:
            delay = step.backoff(claim.step_attempts)
            _transition(
                claim.job_id,
                JobStatus.PENDING,
                Job.claim_step_id == claim.attempt_id,
                from_={JobStatus.RUNNING},
                claim_step_id=None,
            )
            dispatch.append(_outbox(claim.job_id, claim.step, delay=delay))
            add_log(
                claim.job_id,
                "error",
                f"Step {claim.step} failed (attempt {claim.step_attempts} of "
                f"{step.max_attempts}): {error}; retrying in {delay:g}s",
                step=claim.step,
            )
        else:
            job = _transition(
                claim.job_id,
                JobStatus.FAILED,
                Job.claim_step_id == claim.attempt_id,
                claim_step_id=None,
                error=f"{claim.step}: {error}",
                finished_at=_now(),
            )
            add_log(claim.job_id, "error", f"Step {claim.step} failed: {error}", step=claim.step)
            instruments.record_job_finished(job)
    except InvalidTransition:
        return _discard(claim, error=error, traceback=traceback)
    _close_attempt(claim, StepStatus.FAILED, error=error, traceback=traceback)
    _commit(dispatch)
    return "retrying" if retrying else "failed"


def release_lapsed(attempt_id: uuid.UUID, job_id: uuid.UUID, step: str) -> bool:
    """Re-queue a step whose claim lease lapsed (its worker died); True when it was."""
    try:
        _transition(
            job_id,
            JobStatus.PENDING,
            Job.claim_step_id == attempt_id,
            from_={JobStatus.RUNNING},
            claim_step_id=None,
        )
    except InvalidTransition:
        db.session.rollback()
        return False
    db.session.execute(
        sa.update(JobStep)
        .where(JobStep.id == attempt_id)
        .values(
            status=StepStatus.LOST.value,
            finished_at=_now(),
            error="claim lease lapsed: the worker stopped renewing it",
        )
    )
    add_log(job_id, "recovered", f"Step {step} lost its worker; queued again", step=step)
    _commit([_outbox(job_id, step)])
    return True


def redispatch_stalled(job_id: uuid.UUID, step: str, *, stall_seconds: float) -> bool:
    """Dispatch a runnable job again whose next message was lost; True when it was.

    A chain's next message is published by Celery after the step's transaction
    commits; a worker that dies in between leaves the job RUNNING with nobody on it.
    """
    try:
        _transition(
            job_id,
            JobStatus.PENDING,
            Job.claim_step_id.is_(None),
            Job.current_step == step,
            Job.updated_at < _now() - timedelta(seconds=stall_seconds),
            from_={JobStatus.PENDING, JobStatus.RUNNING},
        )
    except InvalidTransition:
        db.session.rollback()
        return False
    add_log(job_id, "recovered", f"Step {step} was not dispatched; queued again", step=step)
    _commit([_outbox(job_id, step)])
    return True


# -- Checkpoints -------------------------------------------------------------------------


def decide(
    checkpoint_id: uuid.UUID,
    outcome: Outcome,
    *,
    user_id: uuid.UUID,
    user_name: str,
    reason: str | None = None,
    data: Any = None,
    ip: str | None = None,
    user_agent: str | None = None,
) -> Checkpoint:
    """Approve or reject a pending checkpoint, exactly once.

    Approval puts the job back to PENDING at the step after the checkpoint (or
    COMPLETED when there is none) with the continuation's dispatch intent in the
    same transaction. Rejection fails the job with the reason.

    :raises NotFoundError: for an unknown checkpoint.
    :raises AlreadyDecided: when it was decided first; ``details`` carries that decision.
    """
    status = CheckpointStatus.APPROVED if outcome == Outcome.APPROVED else CheckpointStatus.REJECTED
    checkpoint = db.session.execute(
        sa.update(Checkpoint)
        .where(Checkpoint.id == checkpoint_id, Checkpoint.status == CheckpointStatus.PENDING.value)
        .values(status=status.value, decided_at=_now())
        .returning(Checkpoint)
        .execution_options(synchronize_session=False)
    ).scalar_one_or_none()
    if checkpoint is None:
        db.session.rollback()
        existing = db.session.get(Checkpoint, checkpoint_id)
        if existing is None:
            raise NotFoundError(f"Checkpoint {checkpoint_id} not found")
        raise AlreadyDecided(existing)
    instruments.record_checkpoint_decided(checkpoint)
    db.session.add(
        Decision(
            checkpoint_id=checkpoint_id,
            user_id=user_id,
            outcome=outcome.value,
            reason=reason,
            data=data,
            ip=ip,
            user_agent=user_agent,
        )
    )
    dispatch: list[uuid.UUID] = []
    words = f" by {user_name}" + (f": {reason}" if reason else "")
    if outcome == Outcome.REJECTED:
        job = _transition(
            checkpoint.job_id,
            JobStatus.FAILED,
            from_={JobStatus.WAITING_APPROVAL},
            current_step=checkpoint.step,
            finished_at=_now(),
            error=f"Checkpoint rejected{': ' + reason if reason else ''}",
        )
        add_log(checkpoint.job_id, "rejected", f"Checkpoint rejected{words}", step=checkpoint.step)
        instruments.record_job_finished(job)
    elif checkpoint.resume_step is None:
        last = registry.get(checkpoint.handler).steps[-1].name
        output = db.session.execute(
            sa.select(JobStep.output)
            .where(
                JobStep.job_id == checkpoint.job_id,
                JobStep.step == last,
                JobStep.status == StepStatus.SUCCEEDED.value,
            )
            .order_by(JobStep.attempt.desc())
            .limit(1)
        ).scalar_one_or_none()
        job = _transition(
            checkpoint.job_id,
            JobStatus.COMPLETED,
            from_={JobStatus.WAITING_APPROVAL},
            result=output,
            finished_at=_now(),
        )
        add_log(checkpoint.job_id, "approved", f"Checkpoint approved{words}", step=checkpoint.step)
        instruments.record_job_finished(job)
    else:
        _transition(
            checkpoint.job_id,
            JobStatus.PENDING,
            from_={JobStatus.WAITING_APPROVAL},
            current_step=checkpoint.resume_step,
            step_attempts=0,
        )
        add_log(checkpoint.job_id, "approved", f"Checkpoint approved{words}", step=checkpoint.step)
        dispatch.append(_outbox(checkpoint.job_id, checkpoint.resume_step))
    _commit(dispatch)
    db.session.refresh(checkpoint)
    return checkpoint


def expire_checkpoint(checkpoint_id: uuid.UUID) -> bool:
    """Expire a pending checkpoint past its time and fail its job; False if it was decided."""
    checkpoint = db.session.execute(
        sa.update(Checkpoint)
        .where(
            Checkpoint.id == checkpoint_id,
            Checkpoint.status == CheckpointStatus.PENDING.value,
            Checkpoint.expires_at < _now(),
        )
        .values(status=CheckpointStatus.EXPIRED.value, decided_at=_now())
        .returning(Checkpoint)
    ).scalar_one_or_none()
    if checkpoint is None:
        db.session.rollback()
        return False
    job = _transition(
        checkpoint.job_id,
        JobStatus.FAILED,
        from_={JobStatus.WAITING_APPROVAL},
        current_step=checkpoint.step,
        finished_at=_now(),
        error="Checkpoint expired",
    )
    add_log(
        checkpoint.job_id, "expired", "Checkpoint expired before a decision", step=checkpoint.step
    )
    instruments.record_checkpoint_decided(checkpoint)
    instruments.record_job_finished(job)
    _commit()
    return True


# -- Fleet -----------------------------------------------------------------------------


def is_paused() -> bool:
    """Whether the workers should stop consuming the steps queue."""
    state = db.session.get(FleetState, 1)
    return bool(state and state.paused)


def set_paused(paused: bool, *, user_id: uuid.UUID | None) -> None:
    """Record the fleet's paused flag, which workers re-apply when they start or reconnect."""
    stmt = pg_insert(FleetState).values(id=1, paused=paused, changed_by=user_id, changed_at=_now())
    db.session.execute(
        stmt.on_conflict_do_update(
            index_elements=[FleetState.id],
            set_={"paused": paused, "changed_by": user_id, "changed_at": _now()},
        )
    )
    _commit()
