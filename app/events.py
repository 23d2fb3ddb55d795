"""What the job runtime announces once it has happened: blinker signals (Flask's own).

The state machine sends these after its change is committed, and only then, so a
receiver never sees a change that rolled back; the step runtime sends ``step_ended``
after an attempt's outcome is recorded. The domain knows nothing of who listens:
``app.observability.instruments`` turns them into metrics; later receivers (webhooks,
audit) connect the same way. A receiver must not raise: blinker would raise its
error into the transition's caller, after the commit.

    events.job_finished.connect(receiver)   # receiver(sender, job=...) for every final job
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from blinker import Namespace

_signals = Namespace()

#: A job was created; sender: its job type.
job_created = _signals.signal("job-created")
#: A job reached a final status; sender: its job type; ``job``: a ``FinishedJob``.
job_finished = _signals.signal("job-finished")
#: A vote on a checkpoint was recorded (it may or may not have settled it); sender: its
#: job type; ``checkpoint``: a ``DecidedCheckpoint`` of ``app.state``; ``outcome``: the
#: vote's ``app.status.Outcome``.
checkpoint_voted = _signals.signal("checkpoint-voted")
#: A checkpoint was settled: approved, rejected, sent back for changes or expired; sender:
#: its job type; ``checkpoint``: a ``DecidedCheckpoint`` of ``app.state``.
checkpoint_decided = _signals.signal("checkpoint-decided")
#: A checkpoint's deadline passed and its policy decided it; sender: its job type;
#: ``on_timeout``: the ``app.status.OnTimeout`` applied.
checkpoint_timed_out = _signals.signal("checkpoint-timed-out")
#: A reminder or an escalation of a pending checkpoint fired; sender: its job type;
#: ``event``: a ``FiredEvent``.
checkpoint_event = _signals.signal("checkpoint-event")
#: A step attempt ended; sender: its job type; ``claim``: the ``app.state.Claim``,
#: ``outcome``: an ``app.status.StepOutcome``, ``seconds``: how long the step ran.
step_ended = _signals.signal("step-ended")


@dataclass(frozen=True)
class FiredEvent:
    """A reminder or escalation that fired, as ``checkpoint_event`` carries it."""

    kind: str
    checkpoint_id: object
    job_id: object
    data: dict | None


@dataclass(frozen=True)
class FinishedJob:
    """A job that reached a final status, as ``job_finished`` carries it."""

    status: str
    job_type: str
    created_at: datetime
    finished_at: datetime
