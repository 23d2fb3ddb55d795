"""The job state machine: the only code that changes a status.

Every transition is one conditional UPDATE (``... WHERE status IN <allowed>``), so
two racing actors cannot both win; the loser gets ``InvalidTransition`` (or, for a
checkpoint, ``AlreadyDecided`` carrying the first decision). The same transaction
writes the ledger, checkpoint, decision and log rows and, when work must run, the
outbox row; the outbox row is published only after the commit (``outbox.publish``), and
what happened is announced only then (``app.events``: metrics listen there).

The hot paths (a submission, a step's claim, result or failure, a decision) are each
one statement of ``app/sql/hot.sql``, which commits on its own: its guarded UPDATE
comes first and every other write selects from it, so nothing is written when the
guard does not hold. ``app.status.ALLOWED`` decides which statuses each may leave.
Every path that takes a checkpoint's job and the checkpoint locks the job first.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from dataclasses import field
from datetime import datetime
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from marshmallow import ValidationError

from app import auth
from app import events
from app import joblog
from app import outbox
from app.auth import ADMINS_ONLY
from app.auth import INVALID_TOKEN
from app.errors import AlreadyDecided
from app.errors import AuthError
from app.errors import ConflictError
from app.errors import ForbiddenError
from app.errors import InvalidEdit
from app.errors import InvalidTransition
from app.errors import NotFoundError
from app.errors import UnknownHandlerError
from app.events import FinishedJob
from app.extensions import db
from app.framework import APPROVAL_REQUIRED
from app.framework import Approval as StepDecision
from app.framework.registry import registry
from app.joblog import LogLine
from app.joblog import LogRecord
from app.models import Checkpoint
from app.models import Decision
from app.models import Job
from app.models import JobStep
from app.models import Outbox
from app.outbox import Dispatch
from app.sql import run
from app.sql import run_one
from app.status import CheckpointStatus
from app.status import JobStatus
from app.status import Outcome
from app.status import StepOutcome
from app.status import StepStatus
from app.status import sources


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
    allowed = sources(target) if from_ is None else frozenset(from_)
    if not allowed <= sources(target):
        raise ValueError(f"{sorted(allowed)} -> {target.value} is not in the transition table")
    stmt = (
        sa.update(Job)
        .where(Job.id == job_id, Job.status.in_([s.value for s in allowed]), *where)
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


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _outbox(job: Job, step: str) -> Dispatch:
    """Add a dispatch intent for ``step`` of the job to the session's transaction."""
    trace = outbox.trace()
    row = Outbox(job_id=job.id, step=step, **trace)
    db.session.add(row)
    db.session.flush()
    return Dispatch(row.id, job.id, step, job.job_type, job.priority, **trace)


def _commit(dispatch: list[Dispatch] = ()) -> None:
    """Commit the session, then publish its dispatch intents (never before the commit)."""
    db.session.commit()
    outbox.publish(dispatch)


def _values(statuses: frozenset[JobStatus]) -> list[str]:
    """Statuses as a statement's array parameter takes them."""
    return sorted(s.value for s in statuses)


def _finished(job: Job | Any) -> FinishedJob:
    return FinishedJob(job.status, job.job_type, job.created_at, job.finished_at)


# -- Jobs ------------------------------------------------------------------------------


@dataclass(frozen=True)
class NewJob:
    """A job just enqueued, as written (what the API answers with, without reading it back)."""

    id: uuid.UUID
    user_id: uuid.UUID
    owner: str
    job_type: str
    task_description: str
    input_data: dict
    priority: int
    status: str
    current_step: str
    created_at: datetime
    updated_at: datetime
    logs: list[LogRecord]
    result: Any = None
    error: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    checkpoints: tuple = ()
    steps: tuple = ()


def enqueue(
    *,
    job_type: str,
    task_description: str,
    input_data: dict,
    priority: int,
    idempotency_key: str | None = None,
    user_id: uuid.UUID | None = None,
    token_hash: str | None = None,
) -> NewJob | Job:
    """Create a PENDING job of the user ``user_id``, or of the holder of the API token
    whose hash is ``token_hash`` (checked in the same statement), with its first log line
    and its dispatch intent, in one statement; then publish the intent.

    Returns the new job as written; with an ``idempotency_key`` this user already used,
    the job that key made (read from the database).

    :raises AuthError: when there is no such user, or the token is unknown or revoked.
    :raises UnknownHandlerError: for a job type with no handler.
    :raises ConflictError: when the key was used for a different request.
    """
    step = registry.get(job_type).steps[0].name
    message = f"Job queued at priority {priority}"
    trace = outbox.trace()
    row = run_one(
        "enqueue",
        user_id=user_id,
        token_hash=token_hash,
        job_type=job_type,
        task_description=task_description,
        input_data=_json(input_data),
        priority=priority,
        status=JobStatus.PENDING,
        step=step,
        idempotency_key=idempotency_key,
        message=message,
        traceparent=trace.get("traceparent"),
        baggage=trace.get("baggage"),
    )
    if row is None:
        raise AuthError(INVALID_TOKEN)
    auth.identified(row.user_id, row.user_name, row.is_admin)
    if row.id is None:
        existing = _by_idempotency_key(row.user_id, idempotency_key)
        return _same_request(existing, job_type, task_description, input_data, priority)
    outbox.publish([Dispatch(row.outbox_id, row.id, step, job_type, priority, **trace)])
    events.job_created.send(job_type)
    return NewJob(
        id=row.id,
        user_id=row.user_id,
        owner=row.user_name,
        job_type=job_type,
        task_description=task_description,
        input_data=input_data,
        priority=priority,
        status=JobStatus.PENDING.value,
        current_step=step,
        created_at=row.created_at,
        updated_at=row.updated_at,
        logs=[LogRecord(row.log_id, "queued", message, row.log_created_at)],
    )


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
    joblog.add(job_id, "cancelled", f"Job cancelled by {by}")
    finished = _finished(job)
    _commit()
    events.job_finished.send(finished.job_type, job=finished)
    return job


def retry(job_id: uuid.UUID, *, by: str) -> Job:
    """Queue a FAILED or CANCELLED job again at the step where it stopped.

    Earlier steps' outputs and decisions are kept; their steps do not run again. Except
    when the edit approved before that step does not fit what its checkpoint accepts: then
    the step that opened the checkpoint runs again, and the review opens again.

    :raises InvalidTransition: for a job that is not FAILED or CANCELLED.
    """
    bad_edit = _bad_edit(job_id)
    job = _transition(
        job_id,
        JobStatus.PENDING,
        Job.current_step.is_not(None),
        from_={JobStatus.FAILED, JobStatus.CANCELLED},
        step_attempts=0,
        error=None,
        finished_at=None,
        claim_step_id=None,
        **({"current_step": bad_edit.step} if bad_edit else {}),
    )
    message = f"Job retried by {by} at step {job.current_step}"
    if bad_edit:
        message += (
            f": the edit approved at its checkpoint does not fit ({bad_edit.problems}),"
            " so the review opens again"
        )
    joblog.add(job_id, "retried", message)
    _commit([_outbox(job, job.current_step)])
    return job


@dataclass(frozen=True)
class _BadEdit:
    #: The step that opened the checkpoint, which runs again to propose anew.
    step: str
    #: What is wrong with the edit, field by field.
    problems: str


def _bad_edit(job_id: uuid.UUID) -> _BadEdit | None:
    """The edit approved before the job's current step, when it does not fit what the
    checkpoint's step accepts (approved before edits were checked, or under an older
    schema): retrying must re-open that review, not reuse the edit and fail again."""
    row = db.session.execute(
        sa.select(Checkpoint.handler, Checkpoint.step, Decision.data)
        .join(Decision, Decision.checkpoint_id == Checkpoint.id)
        .join(Job, Job.id == Checkpoint.job_id)
        .where(
            Checkpoint.job_id == job_id,
            Checkpoint.resume_step == Job.current_step,
            Decision.outcome == Outcome.APPROVED.value,
        )
        .order_by(Decision.created_at.desc())
        .limit(1)
    ).one_or_none()
    if row is None or row.data is None:
        return None
    problems = _edit_problems(row.handler, row.step, row.data)
    return None if problems is None else _BadEdit(row.step, InvalidEdit(problems).problems)


# -- Steps -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    """A step attempt that holds its job's claim, and what the step needs to run."""

    job_id: uuid.UUID
    job_type: str
    step: str
    attempt_id: uuid.UUID
    attempt: int
    #: Attempts of this step since it became current, this one included.
    step_attempts: int
    task_description: str = ""
    input_data: dict = field(default_factory=dict)
    #: What earlier steps returned, by step name.
    outputs: dict = field(default_factory=dict)
    #: The last approval on the job's way to this step (not a later rejection).
    decision: StepDecision | None = None


def claim_step(
    job_id: uuid.UUID, step: str, *, worker: str, task_id: str | None, lease_seconds: float
) -> Claim | None:
    """Claim ``step`` of the job for a new attempt, or None when it is not this step's turn.

    A duplicate delivery (redelivery, sweep) finds the claim taken, or the job moved
    on, and gets None. A claim whose lease lapsed is taken over, and its attempt
    is marked lost. One statement, which also reads what the step needs.
    """
    attempt_id = uuid.uuid4()
    row = run_one(
        "claim_step",
        job_id=job_id,
        step=step,
        attempt_id=attempt_id,
        status=JobStatus.RUNNING.value,
        from_statuses=_values(sources(JobStatus.RUNNING)),
        worker=worker,
        task_id=task_id,
        lease_seconds=lease_seconds,
        approved=Outcome.APPROVED.value,
    )
    if row is None:
        return None
    decision = row.decision
    return Claim(
        job_id=job_id,
        job_type=row.job_type,
        step=step,
        attempt_id=attempt_id,
        attempt=row.attempt,
        step_attempts=row.step_attempts,
        task_description=row.task_description,
        input_data=row.input_data,
        outputs=row.outputs,
        decision=StepDecision(**decision) if decision else None,
    )


def renew_leases(attempt_ids: list[uuid.UUID], lease_seconds: float) -> set[uuid.UUID]:
    """Extend running attempts' leases; returns those that still hold their claim."""
    rows = run("renew_leases", attempt_ids=attempt_ids, lease_seconds=lease_seconds)
    return {row.id for row in rows}


def _discard(claim: Claim, lines: list[LogLine], **values: Any) -> str:
    """Record a late result that changes nothing: the attempt lost its claim."""
    run(
        "discard_attempt",
        job_id=claim.job_id,
        attempt_id=claim.attempt_id,
        output=_json(values.get("output")),
        error=values.get("error"),
        traceback=values.get("traceback"),
        logs=joblog.as_json(lines),
    )
    return StepOutcome.DISCARDED


def finish_step(
    claim: Claim,
    output: Any,
    checkpoints: list[dict],
    *,
    logs: list[LogLine] = (),
    chain_continues: bool,
) -> str:
    """Record a step's result and advance the job, in one statement.

    Returns what happened: ``ADVANCED`` (the next step runs; dispatched through
    the outbox unless ``chain_continues``), ``WAITING`` (an approval checkpoint
    parked the job), ``COMPLETED``, or ``DISCARDED`` (the attempt had lost its
    claim, e.g. the job was cancelled: nothing changed). ``logs`` are the lines the
    step wrote that are not in the database yet.
    """
    nxt = registry.get(claim.job_type).next_step(claim.step)
    blocking = any(c["type"] == APPROVAL_REQUIRED for c in checkpoints)
    if blocking:
        target, outcome = JobStatus.WAITING_APPROVAL, StepOutcome.WAITING
    elif nxt is not None:
        target, outcome = JobStatus.RUNNING, StepOutcome.ADVANCED
    else:
        target, outcome = JobStatus.COMPLETED, StepOutcome.COMPLETED
    lines = list(logs)
    opened = []
    for c in checkpoints:
        pending = c["type"] == APPROVAL_REQUIRED
        status = CheckpointStatus.PENDING if pending else CheckpointStatus.RECORDED
        opened.append(
            {
                "id": c.get("id") or str(uuid.uuid4()),
                "type": c["type"],
                "status": status.value,
                "title": c["title"],
                "data": c.get("data"),
                "expires_in": c.get("expires_in"),
            }
        )
        lines.append(LogLine("checkpoint", f"{c['type']} checkpoint: {c['title']}", claim.step))
    if outcome == StepOutcome.COMPLETED:
        lines.append(LogLine("completed", "Job completed", claim.step))
    dispatch = outcome == StepOutcome.ADVANCED and not chain_continues
    trace = outbox.trace() if dispatch else {}
    row = run_one(
        "finish_step",
        job_id=claim.job_id,
        attempt_id=claim.attempt_id,
        step=claim.step,
        status=target.value,
        from_statuses=_values(sources(target)),
        advanced=outcome == StepOutcome.ADVANCED,
        completed=outcome == StepOutcome.COMPLETED,
        next_step=nxt.name if nxt else None,
        output=_json(output),
        checkpoints=_json(opened),
        logs=joblog.as_json(lines),
        dispatch=dispatch,
        traceparent=trace.get("traceparent"),
        baggage=trace.get("baggage"),
    )
    if row is None:
        return _discard(claim, list(logs), output=output)
    if row.outbox_id is not None:
        outbox.publish(
            [Dispatch(row.outbox_id, claim.job_id, nxt.name, claim.job_type, row.priority, **trace)]
        )
    if outcome == StepOutcome.COMPLETED:
        events.job_finished.send(row.job_type, job=_finished(row))
    return outcome


def fail_step(
    claim: Claim, *, error: str, traceback: str, permanent: bool, logs: list[LogLine] = ()
) -> str:
    """Record a step's exception; retry it after a backoff or fail the job (one statement).

    Returns ``RETRYING``, ``FAILED``, or ``DISCARDED`` when the attempt had lost its
    claim.
    """
    step = registry.get(claim.job_type).get_step(claim.step)
    retrying = not permanent and claim.step_attempts < step.max_attempts
    lines = list(logs)
    delay = step.backoff(claim.step_attempts) if retrying else 0.0
    if retrying:
        target, from_ = JobStatus.PENDING, frozenset({JobStatus.RUNNING})
        lines.append(
            LogLine(
                "error",
                f"Step {claim.step} failed (attempt {claim.step_attempts} of "
                f"{step.max_attempts}): {error}; retrying in {delay:g}s",
                claim.step,
            )
        )
    else:
        # From where a step runs: a PENDING job fails only when its step cannot run at all.
        target, from_ = JobStatus.FAILED, sources(JobStatus.FAILED) - {JobStatus.PENDING}
        lines.append(LogLine("error", f"Step {claim.step} failed: {error}", claim.step))
    trace = outbox.trace() if retrying else {}
    row = run_one(
        "fail_step",
        job_id=claim.job_id,
        attempt_id=claim.attempt_id,
        step=claim.step,
        status=target.value,
        from_statuses=_values(from_),
        retrying=retrying,
        job_error=f"{claim.step}: {error}",
        error=error,
        traceback=traceback,
        delay=delay,
        logs=joblog.as_json(lines),
        traceparent=trace.get("traceparent"),
        baggage=trace.get("baggage"),
    )
    if row is None:
        return _discard(claim, list(logs), error=error, traceback=traceback)
    if retrying:
        return StepOutcome.RETRYING
    events.job_finished.send(row.job_type, job=_finished(row))
    return StepOutcome.FAILED


def release_lapsed(attempt_id: uuid.UUID, job_id: uuid.UUID, step: str) -> bool:
    """Re-queue a step whose claim lease lapsed (its worker died); True when it was."""
    try:
        job = _transition(
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
    joblog.add(job_id, "recovered", f"Step {step} lost its worker; queued again", step=step)
    _commit([_outbox(job, step)])
    return True


def redispatch_stalled(job_id: uuid.UUID, step: str, *, stall_seconds: float) -> bool:
    """Dispatch a runnable job again whose next message was lost; True when it was.

    A chain's next message is published by Celery after the step's transaction
    commits; a worker that dies in between leaves the job RUNNING with nobody on it.
    """
    try:
        job = _transition(
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
    joblog.add(job_id, "recovered", f"Step {step} was not dispatched; queued again", step=step)
    _commit([_outbox(job, step)])
    return True


def fail_unrunnable(job_id: uuid.UUID, step: str, reason: str) -> bool:
    """Fail a PENDING job whose next step this release cannot run (a deploy renamed or
    removed the step or its job type), dropping its dispatch intents; True when it was.

    Otherwise the job would wait for ever, its intent retried by every sweep. Retried once
    a release has the step again, it runs from there.
    """
    try:
        job = _transition(
            job_id,
            JobStatus.FAILED,
            Job.current_step == step,
            from_={JobStatus.PENDING},
            finished_at=_now(),
            error=f"{step}: {reason}",
        )
    except InvalidTransition:
        db.session.rollback()
        return False
    db.session.execute(sa.delete(Outbox).where(Outbox.job_id == job_id))
    joblog.add(job_id, "error", f"Step {step} cannot run in this release: {reason}", step=step)
    finished = _finished(job)
    _commit()
    events.job_finished.send(finished.job_type, job=finished)
    return True


# -- Checkpoints -------------------------------------------------------------------------


@dataclass(frozen=True)
class DecisionRecord:
    """A decision as written."""

    id: uuid.UUID
    outcome: str
    user_id: uuid.UUID
    decided_by: str
    created_at: datetime
    reason: str | None = None
    data: Any = None
    ip: str | None = None
    user_agent: str | None = None


@dataclass(frozen=True)
class DecidedCheckpoint:
    """A checkpoint just decided, with its decision, as written."""

    id: uuid.UUID
    job_id: uuid.UUID
    handler: str
    type: str
    status: str
    title: str
    data: Any
    step: str
    resume_step: str | None
    created_at: datetime
    expires_at: datetime | None
    decided_at: datetime
    decision: DecisionRecord


#: A decision moves a job from WAITING_APPROVAL to one of these.
_DECISION_TARGETS = (JobStatus.PENDING, JobStatus.COMPLETED, JobStatus.FAILED)
if not all(JobStatus.WAITING_APPROVAL in sources(t) for t in _DECISION_TARGETS):
    raise ValueError("a decision must be able to move a WAITING_APPROVAL job")


def decide(
    checkpoint_id: uuid.UUID,
    outcome: Outcome,
    *,
    user_id: uuid.UUID | None = None,
    token_hash: str | None = None,
    reason: str | None = None,
    data: Any = None,
    ip: str | None = None,
    user_agent: str | None = None,
) -> DecidedCheckpoint:
    """Approve or reject a pending checkpoint, exactly once, in one statement, as the admin
    ``user_id``, or the holder of the API token whose hash is ``token_hash`` (checked in the
    same statement).

    Approval puts the job back to PENDING at the step after the checkpoint (or
    COMPLETED when there is none) with the continuation's dispatch intent, published
    once written. Rejection fails the job with the reason.

    :raises AuthError: when there is no such user, or the token is unknown or revoked.
    :raises ForbiddenError: when the user is not an admin.
    :raises NotFoundError: for an unknown checkpoint.
    :raises InvalidEdit: when an approval's ``data`` does not fit the schema of edits that
        the step which opened the checkpoint declares (checked first, one read more).
    :raises AlreadyDecided: when it was decided first; ``details`` carries that decision.
    :raises InvalidTransition: when its job is not waiting for it.
    """
    approved = outcome == Outcome.APPROVED
    if approved and data is not None:
        _check_edit(checkpoint_id, data)
    status = CheckpointStatus.APPROVED if approved else CheckpointStatus.REJECTED
    trace = outbox.trace() if approved else {}
    row = run_one(
        "decide",
        user_id=user_id,
        token_hash=token_hash,
        checkpoint_id=checkpoint_id,
        status=status.value,
        outcome=outcome.value,
        approved=approved,
        reason=reason,
        data=None if data is None else _json(data),
        ip=ip,
        user_agent=user_agent,
        error=f"Checkpoint rejected{': ' + reason if reason else ''}",
        log_kind="approved" if approved else "rejected",
        log_head=f"Checkpoint {'approved' if approved else 'rejected'}",
        traceparent=trace.get("traceparent"),
        baggage=trace.get("baggage"),
    )
    if row is None:
        raise AuthError(INVALID_TOKEN)
    auth.identified(row.user_id, row.user_name, row.is_admin)
    if not row.is_admin:
        raise ForbiddenError(ADMINS_ONLY)
    if row.id is None:
        existing = db.session.get(Checkpoint, checkpoint_id)
        if existing is None:
            raise NotFoundError(f"Checkpoint {checkpoint_id} not found")
        if existing.status != CheckpointStatus.PENDING:
            raise AlreadyDecided(existing)
        raise InvalidTransition(
            f"Job {existing.job_id} is not waiting for checkpoint {checkpoint_id}",
            details={"status": existing.job.status},
        )
    if row.outbox_id is not None:
        outbox.publish(
            [
                Dispatch(
                    row.outbox_id,
                    row.job_id,
                    row.resume_step,
                    row.handler,
                    row.job_priority,
                    **trace,
                    continuation=True,
                )
            ]
        )
    decided = DecidedCheckpoint(
        id=row.id,
        job_id=row.job_id,
        handler=row.handler,
        type=row.type,
        status=row.status,
        title=row.title,
        data=row.data,
        step=row.step,
        resume_step=row.resume_step,
        created_at=row.created_at,
        expires_at=row.expires_at,
        decided_at=row.decided_at,
        decision=DecisionRecord(
            id=row.decision_id,
            outcome=outcome.value,
            user_id=row.user_id,
            decided_by=row.user_name,
            created_at=row.decision_created_at,
            reason=reason,
            data=data,
            ip=ip,
            user_agent=user_agent,
        ),
    )
    events.checkpoint_decided.send(row.handler, checkpoint=decided)
    if row.job_status != JobStatus.PENDING:
        finished = FinishedJob(row.job_status, row.handler, row.job_created_at, row.job_finished_at)
        events.job_finished.send(row.handler, job=finished)
    return decided


def _check_edit(checkpoint_id: uuid.UUID, data: Any) -> None:
    """Check an approver's edited data against what the checkpoint's step accepts.

    :raises InvalidEdit: naming the fields that are wrong (``data.files.0.path``).
    """
    opened = db.session.execute(
        sa.select(Checkpoint.handler, Checkpoint.step).where(Checkpoint.id == checkpoint_id)
    ).one_or_none()
    if opened is None:
        return  # decide says it does not exist
    problems = _edit_problems(opened.handler, opened.step, data)
    if problems is not None:
        raise InvalidEdit(problems)


def _edit_problems(handler: str, step: str, data: Any) -> Any:
    """marshmallow's messages on ``data`` as an edit at the checkpoint ``step`` opens; None
    when it fits (or the step, no longer declared, cannot say)."""
    try:
        registry.get(handler).get_step(step).validate_edit(data)
    except ValidationError as exc:
        return exc.messages
    except (UnknownHandlerError, KeyError):
        return None
    return None


def expire_checkpoint(checkpoint_id: uuid.UUID) -> bool:
    """Expire a pending checkpoint past its time and fail its job; False if it was decided.

    Locks the job first, as ``decide`` and ``cancel`` do.
    """
    db.session.execute(
        sa.select(Job.id)
        .where(
            Job.id
            == sa.select(Checkpoint.job_id).where(Checkpoint.id == checkpoint_id).scalar_subquery()
        )
        .with_for_update()
    )
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
    joblog.add(
        checkpoint.job_id, "expired", "Checkpoint expired before a decision", step=checkpoint.step
    )
    decided, finished = _Expired.of(checkpoint), _finished(job)
    _commit()
    events.checkpoint_decided.send(decided.handler, checkpoint=decided)
    events.job_finished.send(finished.job_type, job=finished)
    return True


@dataclass(frozen=True)
class _Expired:
    """An expired checkpoint, as ``events.checkpoint_decided`` carries it."""

    handler: str
    status: str
    created_at: datetime
    decided_at: datetime

    @classmethod
    def of(cls, checkpoint: Checkpoint) -> _Expired:
        return cls(
            checkpoint.handler, checkpoint.status, checkpoint.created_at, checkpoint.decided_at
        )
