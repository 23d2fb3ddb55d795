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
import sqlalchemy.orm as so
from flask import current_app
from marshmallow import ValidationError
from sqlalchemy.dialects.postgresql import ARRAY

from app import auth
from app import events
from app import joblog
from app import outbox
from app.auth import ADMINS_ONLY
from app.auth import INVALID_TOKEN
from app.errors import AlreadyDecided
from app.errors import AlreadyVoted
from app.errors import AuthError
from app.errors import ConflictError
from app.errors import ForbiddenError
from app.errors import InvalidEdit
from app.errors import InvalidTransition
from app.errors import NotFoundError
from app.errors import RevisionsExhausted
from app.errors import StaleVersion
from app.errors import UnknownHandlerError
from app.events import FinishedJob
from app.extensions import db
from app.framework import APPROVAL_REQUIRED
from app.framework import Approval as StepDecision
from app.framework import Feedback
from app.framework.registry import registry
from app.joblog import LogLine
from app.joblog import LogRecord
from app.models import Checkpoint
from app.models import Decision
from app.models import Job
from app.models import JobStep
from app.models import Outbox
from app.outbox import Dispatch
from app.policy import Policy
from app.policy import data_problems
from app.policy import review_policy
from app.sql import run
from app.sql import run_one
from app.status import CheckpointEventKind
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
    review: Policy | None = None,
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
        review=None if review is None else _json(review.to_json()),
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
    #: The last request for changes to this step's proposals.
    feedback: Feedback | None = None
    #: The submission's ``review``, which tightens the policy of the checkpoints it opens.
    review: Policy | None = None


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
    decision, feedback = row.decision, row.feedback
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
        feedback=Feedback(**feedback) if feedback else None,
        review=Policy.from_json(row.review) if row.review else None,
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
                **(_reviewed(claim, c.get("policy")) if pending else {}),
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


def _reviewed(claim: Claim, layer: Policy | None) -> dict:
    """What an approval checkpoint the step opens stores of its review policy: the policy in
    force (the system's defaults, the step's, the checkpoint's ``layer``, tightened by the
    job's ``review``), who may decide, its deadline, and the reminders and escalation it
    schedules, each due so many seconds from now."""
    step = registry.get(claim.job_type).get_step(claim.step)
    policy = (
        current_app.config["REVIEW_DEFAULTS"]
        .resolved()
        .merged(step.policy)
        .merged(layer)
        .tightened_by(claim.review)
    )
    registry.get(claim.job_type).check_options(policy)
    events = [
        {
            "kind": CheckpointEventKind.REMINDER,
            "due_in": policy.expires_in - before,
            "data": {"before": before},
        }
        for before in policy.remind_at
        if policy.expires_in is not None and before < policy.expires_in
    ]
    if policy.escalate_to:
        events.append(
            {
                "kind": CheckpointEventKind.ESCALATION,
                "due_in": policy.escalate_after,
                "data": {"escalateTo": list(policy.escalate_to)},
            }
        )
    return {
        "policy": policy.resolved().to_json(),
        "approvers": None if policy.approvers is None else list(policy.approvers),
        "expires_in": policy.expires_in,
        "events": events,
    }


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
    """A vote as written."""

    id: uuid.UUID
    outcome: str
    user_id: uuid.UUID | None
    decided_by: str
    created_at: datetime
    reason: str | None = None
    data: Any = None
    option: str | None = None
    ip: str | None = None
    user_agent: str | None = None


@dataclass(frozen=True)
class DecidedCheckpoint:
    """A checkpoint just voted on, as written, with its votes; ``decision`` is the vote that
    settled it (None while it waits for more)."""

    id: uuid.UUID
    job_id: uuid.UUID
    handler: str
    type: str
    status: str
    title: str
    data: Any
    step: str
    resume_step: str | None
    version: int
    policy: dict | None
    approvers: list[str] | None
    approvals: int
    rejections: int
    created_at: datetime
    expires_at: datetime | None
    decided_at: datetime | None
    #: This vote.
    vote: DecisionRecord
    votes: tuple[DecisionRecord, ...]
    #: The job's status after the vote.
    job_status: str

    @property
    def decision(self) -> DecisionRecord | None:
        return None if self.status == CheckpointStatus.PENDING else self.vote

    @property
    def review_policy(self) -> Policy | None:
        return review_policy(self)


#: Settled, a checkpoint moves its job from WAITING_APPROVAL to one of these.
_DECISION_TARGETS = (JobStatus.PENDING, JobStatus.COMPLETED, JobStatus.FAILED)
if not all(JobStatus.WAITING_APPROVAL in sources(t) for t in _DECISION_TARGETS):
    raise ValueError("a decision must be able to move a WAITING_APPROVAL job")

#: What the job's log says of a vote that settles the checkpoint, by outcome: its kind and
#: its head (followed by `` by <who>: <reason>``).
_SETTLED = {
    Outcome.APPROVED: ("approved", "Checkpoint approved"),
    Outcome.REJECTED: ("rejected", "Checkpoint rejected"),
    Outcome.CHANGES_REQUESTED: ("changes_requested", "Changes requested"),
    Outcome.EXPIRED: ("expired", "Checkpoint expired"),
}
#: ... and of a vote that leaves it pending.
_VOTE = {Outcome.APPROVED: "Approval", Outcome.REJECTED: "Rejection"}


def decide(
    checkpoint_id: uuid.UUID,
    outcome: Outcome,
    *,
    user_id: uuid.UUID | None = None,
    token_hash: str | None = None,
    system_actor: str | None = None,
    now: datetime | None = None,
    version: int | None = None,
    reason: str | None = None,
    data: Any = None,
    option: str | None = None,
    ip: str | None = None,
    user_agent: str | None = None,
) -> DecidedCheckpoint:
    """Vote on a pending checkpoint, in one statement, as the admin ``user_id``, the holder
    of the API token whose hash is ``token_hash`` (checked in the same statement), or the
    ``system_actor`` of a deadline past at ``now``; on ``version`` (None: the current).

    The vote settles the checkpoint as its policy says (``app.policy``): the last approval
    needed puts the job back to PENDING at the step after the checkpoint (or the chosen
    ``option``'s, or COMPLETED when there is none) with the continuation's dispatch
    intent, published once written; a rejection that vetoes fails the job with the reason;
    a request for changes queues the checkpoint's step again, which opens the next version.
    A vote that settles nothing is recorded, and the checkpoint waits for more.

    :raises AuthError: when there is no such user, or the token is unknown or revoked.
    :raises ForbiddenError: when the user is not an admin, not among the approvers, or the
        job's submitter and self-approval is not allowed.
    :raises NotFoundError: for an unknown checkpoint.
    :raises InvalidEdit: when ``data`` does not fit what the checkpoint accepts (the
        step's schema of edits, the policy's ``dataSchema``) or ``option`` is not one of its
        options (checked first, one read more).
    :raises StaleVersion: when ``version`` is not the current version.
    :raises AlreadyDecided: when it was settled first; ``details`` carries the decision.
    :raises AlreadyVoted: for a second vote of the same user.
    :raises RevisionsExhausted: for changes requested past the policy's ``maxRevisions``.
    :raises InvalidTransition: when its job is not waiting for it (or, for the system, the
        deadline is not past).
    """
    if data is not None or option is not None:
        _check_request(checkpoint_id, outcome, data, option)
    resumes = outcome in (Outcome.APPROVED, Outcome.CHANGES_REQUESTED)
    trace = outbox.trace() if resumes else {}
    log_kind, log_head = _SETTLED[outcome]
    row = run_one(
        "decide",
        user_id=user_id,
        token_hash=token_hash,
        system_actor=system_actor,
        now=now,
        checkpoint_id=checkpoint_id,
        version=version,
        outcome=outcome.value,
        option=option,
        reason=reason,
        data=None if data is None else _json(data),
        ip=ip,
        user_agent=user_agent,
        error=f"{log_head}{': ' + reason if reason else ''}",
        log_kind=log_kind,
        log_head=log_head,
        vote_head=_VOTE.get(outcome, log_head),
        traceparent=trace.get("traceparent"),
        baggage=trace.get("baggage"),
    )
    if row is None:
        raise AuthError(INVALID_TOKEN)
    if row.user_id is not None:
        auth.identified(row.user_id, row.user_name, row.is_admin)
    if not row.is_admin:
        raise ForbiddenError(ADMINS_ONLY)
    if row.id is None:
        raise _refusal(checkpoint_id, outcome, version, row)
    if row.outbox_id is not None:
        outbox.publish(
            [
                Dispatch(
                    row.outbox_id,
                    row.job_id,
                    row.job_step,
                    row.handler,
                    row.job_priority,
                    **trace,
                    continuation=True,
                )
            ]
        )
    vote = DecisionRecord(
        id=row.decision_id,
        outcome=outcome.value,
        user_id=row.user_id,
        decided_by=row.user_name,
        created_at=row.decision_created_at,
        reason=reason,
        data=data,
        option=option,
        ip=ip,
        user_agent=user_agent,
    )
    many = row.approvals + row.rejections > 1
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
        version=row.version,
        policy=row.policy,
        approvers=row.approvers,
        approvals=row.approvals,
        rejections=row.rejections,
        created_at=row.created_at,
        expires_at=row.expires_at,
        decided_at=row.decided_at,
        vote=vote,
        votes=_votes(row.id) if many else (vote,),
        job_status=row.job_status or JobStatus.WAITING_APPROVAL.value,
    )
    events.checkpoint_voted.send(row.handler, checkpoint=decided, outcome=outcome)
    if row.status != CheckpointStatus.PENDING:
        events.checkpoint_decided.send(row.handler, checkpoint=decided)
    if row.job_status in (JobStatus.COMPLETED, JobStatus.FAILED):
        finished = FinishedJob(row.job_status, row.handler, row.job_created_at, row.job_finished_at)
        events.job_finished.send(row.handler, job=finished)
    return decided


def _votes(checkpoint_id: uuid.UUID) -> tuple[DecisionRecord, ...]:
    """Every vote on the checkpoint, oldest first (read after a vote that was not the only)."""
    votes = db.session.scalars(
        sa.select(Decision)
        .where(Decision.checkpoint_id == checkpoint_id)
        .order_by(Decision.created_at)
    ).all()
    db.session.commit()
    return tuple(
        DecisionRecord(
            id=d.id,
            outcome=d.outcome,
            user_id=d.user_id,
            decided_by=d.decided_by,
            created_at=d.created_at,
            reason=d.reason,
            data=d.data,
            option=d.option,
            ip=d.ip,
            user_agent=d.user_agent,
        )
        for d in votes
    )


def _refusal(checkpoint_id: uuid.UUID, outcome: Outcome, version: int | None, row: Any):
    """Why the vote was not recorded, as the error to raise (read after the statement).

    The checkpoint and its job are read in one statement: read one after the other, a vote
    settling the checkpoint in between would show a PENDING checkpoint of a job no longer
    waiting for it.
    """
    existing = db.session.get(Checkpoint, checkpoint_id, options=[so.joinedload(Checkpoint.job)])
    if existing is None:
        return NotFoundError(f"Checkpoint {checkpoint_id} not found")
    if existing.status == CheckpointStatus.CHANGES_REQUESTED or (
        version is not None and version != existing.version
    ):
        return StaleVersion(version or existing.version, _current_version(existing))
    if existing.status != CheckpointStatus.PENDING:
        return AlreadyDecided(existing)
    if existing.job.status != JobStatus.WAITING_APPROVAL:
        return InvalidTransition(
            f"Job {existing.job_id} is not waiting for checkpoint {checkpoint_id}",
            details={"status": existing.job.status},
        )
    if row.user_id is None:
        return InvalidTransition(f"Checkpoint {checkpoint_id} is not past its deadline")
    policy = Policy.from_json(existing.policy).resolved()
    if row.user_id in existing.voters:
        return AlreadyVoted(f"{row.user_name} already voted on checkpoint {checkpoint_id}")
    if existing.job.user_id == row.user_id and not policy.allow_self_approval:
        return ForbiddenError(
            f"{row.user_name} submitted job {existing.job_id}; its review policy does not"
            " allow the submitter to decide its checkpoints (allowSelfApproval)"
        )
    if existing.approvers is not None and not may_decide(existing, row.user_id, row.user_name):
        return ForbiddenError(
            f"Only {', '.join(existing.approvers)} may decide checkpoint {checkpoint_id};"
            f" {row.user_name} is not among them"
        )
    if outcome == Outcome.CHANGES_REQUESTED and policy.max_revisions is not None:
        return RevisionsExhausted(
            f"Checkpoint {checkpoint_id} is version {existing.version}: its policy allows"
            f" {policy.max_revisions} revision(s) (maxRevisions); approve or reject it"
        )
    return InvalidTransition(f"Checkpoint {checkpoint_id} was not decided", details=None)


def may_decide(checkpoint: Checkpoint, user_id: uuid.UUID, user_name: str) -> bool:
    """Whether the user, an admin, may vote on the checkpoint (``agentq_may_decide``)."""
    allow_self = Policy.from_json(checkpoint.policy).resolved().allow_self_approval
    return db.session.scalar(
        sa.select(
            sa.func.agentq_may_decide(
                sa.cast(checkpoint.approvers, ARRAY(sa.Text)),
                allow_self,
                checkpoint.job.user_id,
                user_id,
                user_name,
            )
        )
    )


def _current_version(checkpoint: Checkpoint) -> Checkpoint:
    """The latest version of the checkpoint (the last its step opened)."""
    return db.session.scalars(
        sa.select(Checkpoint)
        .where(
            Checkpoint.job_id == checkpoint.job_id,
            Checkpoint.step == checkpoint.step,
            Checkpoint.type == checkpoint.type,
        )
        .order_by(Checkpoint.version.desc())
        .limit(1)
    ).one()


def _check_request(checkpoint_id: uuid.UUID, outcome: Outcome, data: Any, option: str | None):
    """Check a vote's ``option`` and ``data`` against the checkpoint: the option must be one
    of its policy's, the data fit the step's schema of edits and the policy's
    ``dataSchema``.

    :raises InvalidEdit: naming the fields that are wrong (``data.files.0.path``).
    """
    opened = db.session.execute(
        sa.select(Checkpoint.handler, Checkpoint.step, Checkpoint.policy).where(
            Checkpoint.id == checkpoint_id
        )
    ).one_or_none()
    if opened is None:
        return  # decide says it does not exist
    policy = Policy.from_json(opened.policy).resolved()
    if option is not None:
        names = [o.name for o in policy.options]
        if outcome != Outcome.APPROVED:
            raise InvalidEdit(["Only an approval chooses an option."], field="option")
        if option not in names:
            known = f"one of {', '.join(names)}" if names else "none: the checkpoint has no options"
            raise InvalidEdit([f"Must be {known}."], field="option")
    if data is None:
        return
    # An approval's data is the edit the next steps take; a request's, the edit the step
    # proposes anew from: both must fit what the step accepts.
    problems = _edit_problems(opened.handler, opened.step, data)
    if problems is None and policy.data_schema is not None:
        problems = data_problems(policy.data_schema, data) or None
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
