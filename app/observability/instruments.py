"""Event metrics: what happened, counted where it happened.

``app.state`` records jobs created, checkpoints decided and jobs reaching a final
status; ``worker.steps`` records each step attempt. Counts of states (how many jobs
are RUNNING now) are not kept here: ``app.observability.scrape`` reads them from Postgres at
scrape time, so every process agrees.

=========================================  =======================================
``agentq_jobs_created_total``              counter {job_type}
``agentq_checkpoints_decided_total``       counter {job_type, outcome}: approved,
                                           rejected, expired
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

A metric must never fail a job: every ``record_*`` function logs its own errors
and returns. The state-machine recorders run when the transaction commits, with
the values the transaction wrote, and not at all when it rolls back; a hot path's
statement (``app.sql``) commits on its own, and is recorded at once (``committed=True``),
even when the caller's session has a transaction of its own open (an admin page that read
the checkpoint first).

    instruments.record_job_created("code-generation")  # counted at the commit
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from prometheus_client import CollectorRegistry
from prometheus_client import Counter
from prometheus_client import Histogram
from sqlalchemy.orm import Session

from app.extensions import db

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

#: What ``app.state.finish_step`` and ``fail_step`` return, as a step outcome.
STEP_OUTCOMES = {
    "advanced": "succeeded",
    "waiting": "succeeded",
    "completed": "succeeded",
    "retrying": "failed",
    "failed": "failed",
    "discarded": "discarded",
}

_PENDING = "agentq.instruments.pending"


@contextlib.contextmanager
def _logged(what: str) -> Iterator[None]:
    """Log an error of the metrics code instead of raising it into the caller."""
    try:
        yield
    except Exception:  # a metric must never fail a job (as sentry's capture_internal_exceptions)
        log.exception("metrics: recording %s failed; the figure will be off", what)


def _never_raises(fn: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(fn)
    def record(*args: Any, **kwargs: Any) -> None:
        with _logged(fn.__name__):
            fn(*args, **kwargs)

    return record


def _on_commit(observe: Callable[[], None], committed: bool) -> None:
    """Run ``observe`` when the current transaction commits; drop it if it rolls back.

    ``committed``: what it observes was written by a statement that committed on its own
    (``app.sql``), whatever the session is doing: observe it now.
    """
    session = db.session()
    if committed or not session.in_transaction():
        observe()
        return
    session.info.setdefault(_PENDING, []).append(observe)


@sa.event.listens_for(Session, "after_commit")
def _observe_committed(session: Session) -> None:
    for observe in session.info.pop(_PENDING, ()):
        with _logged(getattr(observe, "func", observe).__name__):
            observe()


@sa.event.listens_for(Session, "after_rollback")
def _forget_rolled_back(session: Session) -> None:
    session.info.pop(_PENDING, None)


def _seconds(start, end) -> float:
    return max((end - start).total_seconds(), 0.0)


@_never_raises
def record_job_created(job_type: str, *, committed: bool = False) -> None:
    """Count a new job when its transaction commits (now, when ``committed``)."""
    _on_commit(functools.partial(_count, JOBS_CREATED, (job_type,)), committed)


@_never_raises
def record_job_finished(job, *, committed: bool = False) -> None:
    """Observe a job's duration, creation to ``finished_at``, by its final status, at the commit
    (now, when ``committed``).

    Call it after the transition that set ``finished_at`` (COMPLETED, FAILED, CANCELLED).
    """
    outcome = job.status.lower()
    seconds = _seconds(job.created_at, job.finished_at)
    observe = functools.partial(_observe, JOB_DURATION, (job.job_type, outcome), seconds)
    _on_commit(observe, committed)


@_never_raises
def record_checkpoint_decided(checkpoint, *, committed: bool = False) -> None:
    """Count a decision (approved, rejected, expired) and its wait, at the commit (now, when
    ``committed``)."""
    labels = (checkpoint.handler, checkpoint.status.lower())
    seconds = _seconds(checkpoint.created_at, checkpoint.decided_at)
    _on_commit(functools.partial(_decided, labels, seconds), committed)


@_never_raises
def record_step(claim, outcome: str, seconds: float) -> None:
    """Observe one step attempt by what ``app.state`` made of it; count it if it will retry.

    ``claim`` is the attempt's ``app.state.Claim``; ``outcome`` what ``finish_step`` or
    ``fail_step`` returned.
    """
    _observe(STEP_DURATION, (claim.job_type, claim.step, STEP_OUTCOMES[outcome]), seconds)
    if outcome == "retrying":
        STEP_RETRIES.labels(claim.job_type, claim.step).inc()


def _count(counter: Counter, labels: tuple[str, ...]) -> None:
    counter.labels(*labels).inc()


def _observe(histogram: Histogram, labels: tuple[str, ...], seconds: float) -> None:
    histogram.labels(*labels).observe(seconds)


def _decided(labels: tuple[str, str], seconds: float) -> None:
    CHECKPOINTS_DECIDED.labels(*labels).inc()
    CHECKPOINT_WAIT.labels(*labels).observe(seconds)
