"""agentq's vocabulary of statuses and outcomes, and which job status may follow which.

Everything that names a status takes it from here: the models' check constraints, the
schemas, the state machine, the SQL (as parameters), the outbox, the pages, metrics and
sweeps. This module imports nothing of agentq's, so anything may import it.

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

from enum import StrEnum


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


class CheckpointType(StrEnum):
    #: Recorded with the step's result; never blocks.
    INFO = "INFO"
    #: Parks the job until an admin decides.
    APPROVAL_REQUIRED = "APPROVAL_REQUIRED"


class CheckpointStatus(StrEnum):
    #: An INFO checkpoint: recorded, never blocks, never pending.
    RECORDED = "RECORDED"
    PENDING = "PENDING"
    APPROVED = "APPROVED"
    REJECTED = "REJECTED"
    #: Its deadline passed and its policy's ``onTimeout`` is ``fail``.
    EXPIRED = "EXPIRED"
    CANCELLED = "CANCELLED"
    #: A reviewer sent it back with feedback: its step runs again and opens the next version.
    CHANGES_REQUESTED = "CHANGES_REQUESTED"


class Outcome(StrEnum):
    """What a decision (a reviewer's vote, or the deadline's) on a checkpoint says; a
    checkpoint the decision settles takes the status of the same name."""

    APPROVED = "APPROVED"
    REJECTED = "REJECTED"
    #: Send the work back to the step that proposed it, with feedback.
    CHANGES_REQUESTED = "CHANGES_REQUESTED"
    #: The deadline passed and the policy says ``fail``: only ``system:timeout`` decides it.
    EXPIRED = "EXPIRED"


class OnTimeout(StrEnum):
    """What a checkpoint's deadline does when it passes with no decision (``onTimeout``),
    loosest first: a submission may move it only further down this list."""

    APPROVE = "approve"
    REJECT = "reject"
    FAIL = "fail"

    @property
    def outcome(self) -> Outcome:
        """The decision ``system:timeout`` records."""
        return {
            OnTimeout.APPROVE: Outcome.APPROVED,
            OnTimeout.REJECT: Outcome.REJECTED,
            OnTimeout.FAIL: Outcome.EXPIRED,
        }[self]


class CheckpointEventKind(StrEnum):
    """What a pending checkpoint's policy schedules before its deadline."""

    #: Remind its approvers that the deadline is near (``remindAt``).
    REMINDER = "reminder"
    #: Add ``escalateTo`` to its approvers (``escalateAfter``).
    ESCALATION = "escalation"


class StepOutcome(StrEnum):
    """What became of a step attempt once it ran, as the runtime reports it."""

    #: The job moved on to its next step.
    ADVANCED = "advanced"
    #: The step opened an approval checkpoint; the job waits for a decision.
    WAITING = "waiting"
    #: It was the last step; the job completed.
    COMPLETED = "completed"
    #: It raised; it runs again after a backoff.
    RETRYING = "retrying"
    #: It raised for the last time (or permanently); the job failed.
    FAILED = "failed"
    #: The attempt had lost its claim (cancelled, lease lapsed): its result changed nothing.
    DISCARDED = "discarded"
    #: A redelivered message of a step already done sent the chain's next message instead.
    RESENT = "resent"
    #: Not this step's turn (a duplicate delivery): nothing ran.
    SKIPPED = "skipped"


#: Which statuses each status may move to.
ALLOWED: dict[JobStatus, frozenset[JobStatus]] = {
    # PENDING -> PENDING: a stalled job dispatched again. PENDING -> FAILED: its next step
    # is not in the release that runs (a deploy renamed or removed it).
    JobStatus.PENDING: frozenset(
        {JobStatus.PENDING, JobStatus.RUNNING, JobStatus.FAILED, JobStatus.CANCELLED}
    ),
    JobStatus.RUNNING: frozenset(
        {
            JobStatus.RUNNING,
            JobStatus.PENDING,
            JobStatus.WAITING_APPROVAL,
            JobStatus.COMPLETED,
            JobStatus.FAILED,
            JobStatus.CANCELLED,
        }
    ),
    JobStatus.WAITING_APPROVAL: frozenset(
        {JobStatus.PENDING, JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED}
    ),
    JobStatus.COMPLETED: frozenset(),
    JobStatus.FAILED: frozenset({JobStatus.PENDING}),
    JobStatus.CANCELLED: frozenset({JobStatus.PENDING}),
}


def sources(target: JobStatus) -> frozenset[JobStatus]:
    """The statuses from which ``target`` may be reached."""
    return frozenset(s for s, targets in ALLOWED.items() if target in targets)


#: Statuses a job never leaves.
FINAL = frozenset(s for s, targets in ALLOWED.items() if not targets)
#: Statuses from which a job may be cancelled.
CANCELLABLE = sources(JobStatus.CANCELLED)
#: Statuses from which a job may be retried: it stopped, and may run again.
RETRYABLE = frozenset(s for s in sources(JobStatus.PENDING) if s not in CANCELLABLE)
#: Statuses in which a job has work to run (a dispatch intent still means something).
RUNNABLE = frozenset({JobStatus.PENDING, JobStatus.RUNNING})
