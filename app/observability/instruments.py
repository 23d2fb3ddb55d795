"""Event metrics: what happened, counted where it happened.

The state machine announces jobs created, checkpoints decided and jobs reaching a
final status, and the step runtime each step attempt's end (``app.events``); ``listen``
connects the receivers here that count them. Counts of states (how many jobs
are RUNNING now) are not kept here: ``app.observability.scrape`` reads them from Postgres at
scrape time, so every process agrees.

=========================================  =======================================
``agentq_jobs_created_total``              counter {job_type}
``agentq_checkpoints_decided_total``       counter {job_type, outcome}: approved,
                                           rejected, changes_requested, expired
``agentq_checkpoint_votes_total``          counter {job_type, outcome}: every vote
``agentq_checkpoint_timeouts_total``       counter {job_type, on_timeout}: deadlines
                                           that decided (approve, reject, fail)
``agentq_checkpoint_revisions_total``      counter {job_type}: changes requested
``agentq_checkpoint_reminders_total``      counter {job_type}: reminders fired
``agentq_checkpoint_escalations_total``    counter {job_type}: escalations fired
``agentq_checkpoint_wait_seconds``         histogram {job_type, outcome}: creation
                                           to decision
``agentq_job_duration_seconds``            histogram {job_type, outcome}: creation
                                           to completed, failed or cancelled
``agentq_step_duration_seconds``           histogram {job_type, step, outcome}:
                                           succeeded, failed, discarded
``agentq_step_retries_total``              counter {job_type, step}
=========================================  =======================================

In a process with a multiprocess directory (``app.observability.multiproc``: every gunicorn worker,
every Celery worker's processes) the values go to that directory's files and are
summed at scrape time; elsewhere (tests, ``flask run``) they stay in this process
and ``/api/metrics`` serves ``REGISTRY``.

A metric must never fail a job: every receiver logs its own errors and returns. The
events are sent once their change is committed, and not at all when it rolls back.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client import Counter
from prometheus_client import Histogram

from app import events
from app.events import FinishedJob
from app.status import CheckpointEventKind
from app.status import OnTimeout
from app.status import Outcome
from app.status import StepOutcome
from app.status import StepStatus

log = logging.getLogger(__name__)

#: The event metrics of this process (served by /api/metrics in single-process mode).
REGISTRY = CollectorRegistry(auto_describe=True)

#: People decide within minutes or days.
WAIT_BUCKETS = (1, 5, 15, 30, 60, 300, 900, 1800, 3600, 14400, 43200, 86400, 259200, 604800)
#: Jobs run seconds unattended, or days when they wait for a person.
JOB_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 14400, 86400, 604800)
#: Steps run from milliseconds to STEP_TIME_LIMIT (an hour by default).
STEP_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)

JOBS_CREATED = Counter(
    "agentq_jobs_created_total",
    "Jobs created, by job type",
    ["job_type"],
    registry=REGISTRY,
)
CHECKPOINTS_DECIDED = Counter(
    "agentq_checkpoints_decided_total",
    "Approval checkpoints decided, by job type and outcome (approved, rejected, expired)",
    ["job_type", "outcome"],
    registry=REGISTRY,
)
CHECKPOINT_VOTES = Counter(
    "agentq_checkpoint_votes_total",
    "Votes on approval checkpoints, by job type and outcome (each approval of a quorum)",
    ["job_type", "outcome"],
    registry=REGISTRY,
)
CHECKPOINT_TIMEOUTS = Counter(
    "agentq_checkpoint_timeouts_total",
    "Approval checkpoints decided by their deadline, by what the policy said (onTimeout)",
    ["job_type", "on_timeout"],
    registry=REGISTRY,
)
CHECKPOINT_REVISIONS = Counter(
    "agentq_checkpoint_revisions_total",
    "Approval checkpoints sent back for changes (each opens the next version)",
    ["job_type"],
    registry=REGISTRY,
)
CHECKPOINT_REMINDERS = Counter(
    "agentq_checkpoint_reminders_total",
    "Reminders sent to the approvers of pending checkpoints (remindAt)",
    ["job_type"],
    registry=REGISTRY,
)
CHECKPOINT_ESCALATIONS = Counter(
    "agentq_checkpoint_escalations_total",
    "Pending checkpoints escalated to more approvers (escalateTo)",
    ["job_type"],
    registry=REGISTRY,
)
CHECKPOINT_WAIT = Histogram(
    "agentq_checkpoint_wait_seconds",
    "Seconds from an approval checkpoint's creation to its decision",
    ["job_type", "outcome"],
    buckets=WAIT_BUCKETS,
    registry=REGISTRY,
)
JOB_DURATION = Histogram(
    "agentq_job_duration_seconds",
    "Seconds from a job's creation to its final status (completed, failed, cancelled)",
    ["job_type", "outcome"],
    buckets=JOB_BUCKETS,
    registry=REGISTRY,
)
STEP_DURATION = Histogram(
    "agentq_step_duration_seconds",
    "Seconds from claiming a step to recording its outcome (succeeded, failed, discarded)",
    ["job_type", "step", "outcome"],
    buckets=STEP_BUCKETS,
    registry=REGISTRY,
)
STEP_RETRIES = Counter(
    "agentq_step_retries_total",
    "Failed step attempts that were scheduled to run again",
    ["job_type", "step"],
    registry=REGISTRY,
)

#: A step attempt's outcome (``app.status.StepOutcome``) as the step outcome label.
STEP_OUTCOMES = {
    StepOutcome.ADVANCED: StepStatus.SUCCEEDED.value,
    StepOutcome.WAITING: StepStatus.SUCCEEDED.value,
    StepOutcome.COMPLETED: StepStatus.SUCCEEDED.value,
    StepOutcome.RETRYING: StepStatus.FAILED.value,
    StepOutcome.FAILED: StepStatus.FAILED.value,
    StepOutcome.DISCARDED: StepStatus.DISCARDED.value,
}


def _never_raises(fn: Callable[..., None]) -> Callable[..., None]:
    """A receiver that logs its own error instead of raising it into the transition."""

    @functools.wraps(fn)
    def receive(*args: Any, **kwargs: Any) -> None:
        try:
            fn(*args, **kwargs)
        except Exception:  # a metric must never fail a job: log, as Sentry does its own errors
            log.exception("metrics: recording %s failed; the figure will be off", fn.__name__)

    return receive


def _seconds(start, end) -> float:
    return max((end - start).total_seconds(), 0.0)


@_never_raises
def _job_created(job_type: str) -> None:
    JOBS_CREATED.labels(job_type).inc()


@_never_raises
def _job_finished(job_type: str, *, job: FinishedJob) -> None:
    """A job's duration, creation to ``finished_at``, by its final status."""
    seconds = _seconds(job.created_at, job.finished_at)
    JOB_DURATION.labels(job_type, job.status.lower()).observe(seconds)


@_never_raises
def _checkpoint_decided(job_type: str, *, checkpoint: Any) -> None:
    """A settled checkpoint (approved, rejected, changes requested, expired) and its wait,
    creation to decision."""
    labels = (job_type, checkpoint.status.lower())
    CHECKPOINTS_DECIDED.labels(*labels).inc()
    CHECKPOINT_WAIT.labels(*labels).observe(_seconds(checkpoint.created_at, checkpoint.decided_at))


@_never_raises
def _checkpoint_voted(job_type: str, *, checkpoint: Any, outcome: Outcome) -> None:
    CHECKPOINT_VOTES.labels(job_type, outcome.value.lower()).inc()
    if outcome == Outcome.CHANGES_REQUESTED:
        CHECKPOINT_REVISIONS.labels(job_type).inc()


@_never_raises
def _checkpoint_timed_out(job_type: str, *, on_timeout: OnTimeout) -> None:
    CHECKPOINT_TIMEOUTS.labels(job_type, on_timeout.value).inc()


@_never_raises
def _checkpoint_event(job_type: str, *, event: events.FiredEvent) -> None:
    counter = {
        CheckpointEventKind.REMINDER: CHECKPOINT_REMINDERS,
        CheckpointEventKind.ESCALATION: CHECKPOINT_ESCALATIONS,
    }[CheckpointEventKind(event.kind)]
    counter.labels(job_type).inc()


@_never_raises
def _step_ended(job_type: str, *, claim: Any, outcome: StepOutcome, seconds: float) -> None:
    """A step attempt by what the state machine made of it; counted if it will retry."""
    STEP_DURATION.labels(job_type, claim.step, STEP_OUTCOMES[outcome]).observe(seconds)
    if outcome == StepOutcome.RETRYING:
        STEP_RETRIES.labels(job_type, claim.step).inc()


def listen() -> None:
    """Count what ``app.events`` announces, in this process (once, however often called)."""
    events.job_created.connect(_job_created)
    events.job_finished.connect(_job_finished)
    events.checkpoint_decided.connect(_checkpoint_decided)
    events.checkpoint_voted.connect(_checkpoint_voted)
    events.checkpoint_timed_out.connect(_checkpoint_timed_out)
    events.checkpoint_event.connect(_checkpoint_event)
    events.step_ended.connect(_step_ended)
