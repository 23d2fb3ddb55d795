"""The beat sweep: what no single request or step can be trusted to finish.

Every ``SWEEP_INTERVAL`` seconds beat sends ``agentq.sweep`` to the sweeps queue,
which every worker consumes even while the fleet is paused. It

- publishes outbox rows still there ``OUTBOX_GRACE_SECONDS`` after they were due
  (their after-commit publish failed: Redis down, process killed);
- re-dispatches steps whose claim lease lapsed (their worker or machine died),
  within seconds rather than after the broker's visibility timeout;
- puts back on their queues step messages a worker took more than a lease ago that no
  live claim holds (their worker died before claiming them, or after its step's result
  and before its ack), within seconds rather than after the visibility timeout;
- dispatches again a runnable job that nobody runs and no message will bring (a worker
  died between committing a step and sending the next message of its chain, or between
  popping a message and recording it as taken): after a lease when Redis holds no
  message for it, after ``STALL_SECONDS`` when too many wait to read them all; not
  while the fleet is paused;
- decides pending checkpoints whose deadline passed, as their policy's ``onTimeout``
  says (``system:timeout``), and fires their reminders and escalations when due, each
  once however many sweeps run at the same time;
- fails a job whose next step this release cannot run (a deploy renamed or removed its
  step or job type) instead of leaving it PENDING: retried once the step is back, it runs.

Each action goes through a guarded transition, so two sweeps at once are harmless.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from datetime import UTC
from datetime import datetime
from datetime import timedelta

from celery import Celery
from flask import current_app

from app import events
from app import fleet
from app import outbox
from app import queries
from app import review
from app import routing
from app import state
from app.framework.registry import registry
from app.status import CheckpointEventKind
from app.status import OnTimeout
from worker import transport

log = logging.getLogger(__name__)


def register(celery: Celery) -> None:
    celery.task(name="agentq.sweep", ignore_result=True)(sweep)


def sweep(now: datetime | None = None) -> dict[str, int]:
    """Run one sweep; returns how many rows each part handled. ``now`` is the time the
    checkpoints' deadlines, reminders and escalations are measured against (the clock's
    by default)."""
    now = now or datetime.now(UTC)
    released = sum(
        state.release_lapsed(row.attempt_id, row.job_id, row.step)
        for row in queries.lapsed_leases()
    )
    expired = time_out_due(now)
    fired = fire_due_events(now)
    due = outbox.publish_due(older_than=current_app.config["OUTBOX_GRACE_SECONDS"])
    unrunnable = sum(state.fail_unrunnable(u.job_id, u.step, u.reason) for u in due.unrunnable)
    lease = current_app.config["STEP_LEASE_SECONDS"]
    returned = put_back_unheld(lease)
    stalled = 0
    if not fleet.is_paused():
        stalled = redispatch_stalled(lease, current_app.config["STALL_SECONDS"])
    counts = {
        "released": released,
        "stalled": stalled,
        "expired": expired,
        "reminded": fired[CheckpointEventKind.REMINDER],
        "escalated": fired[CheckpointEventKind.ESCALATION],
        "published": due.sent,
        "unrunnable": unrunnable,
        "returned": returned,
    }
    done = [DONE[what].format(n) for what, n in counts.items() if n]
    if done:
        log.info("sweep: %s", "; ".join(done))
    else:
        log.debug("sweep: nothing to do")
    return counts


#: What the sweep's line says of each part that acted, with how many rows it handled.
DONE = {
    "released": "re-dispatched {} step(s) whose claim lease lapsed",
    "stalled": "dispatched again {} stalled job(s) that no message would bring",
    "expired": "decided {} checkpoint(s) whose deadline passed",
    "reminded": "reminded the approvers of {} checkpoint(s)",
    "escalated": "escalated {} checkpoint(s)",
    "published": "published {} dispatch(es) left in the outbox",
    "unrunnable": "failed {} job(s) whose next step this release does not have",
    "returned": "put back {} step message(s) whose worker was lost",
}


def time_out_due(now: datetime) -> int:
    """Decide the pending checkpoints whose deadline passed by ``now``, each as its policy's
    ``onTimeout`` says; how many were (one decided first by a reviewer is not)."""
    default = current_app.config["REVIEW_DEFAULTS"].resolved().on_timeout
    decided = 0
    for row in queries.expired_checkpoints(now, default.value):
        reason = (
            f"no decision within {row.expires_in:g}s"
            if row.expires_in
            else "no decision before its deadline"
        )
        decided += review.time_out(row.id, OnTimeout(row.on_timeout), reason, now)
    return decided


def fire_due_events(now: datetime) -> Counter[str]:
    """Fire the reminders and escalations due by ``now``, each once, and announce them;
    how many of each kind."""
    fired = queries.fire_checkpoint_events(now)
    for row in fired:
        event = events.FiredEvent(row.kind, row.checkpoint_id, row.job_id, row.data)
        events.checkpoint_event.send(row.handler, event=event)
    return Counter(row.kind for row in fired)


#: Most messages a sweep reads from the step queues to find jobs no message will bring.
SCAN_LIMIT = 2_000


def redispatch_stalled(lease_seconds: float, stall_seconds: float) -> int:
    """Dispatch again the runnable jobs that nobody runs and no message will bring; how many.

    A job unclaimed for a lease with no message for its step queued or taken in Redis is
    stalled; when more than ``SCAN_LIMIT`` messages wait, only one unclaimed for
    ``stall_seconds`` is taken for stalled.
    """
    steps = _step_names()
    stalled = queries.stalled_jobs(lease_seconds)
    if not stalled:
        return 0
    wait = lease_seconds
    with current_app.extensions["celery"].connection_for_read() as conn:
        queues = routing.step_queues(current_app.config)
        found = transport.messages(conn.default_channel, queues, SCAN_LIMIT)
    if found is None:
        wait = stall_seconds
        stalled = queries.stalled_jobs(stall_seconds)
    else:
        brought = {(m.args[0], steps[m.task]) for m in found if m.task in steps}
        stalled = [row for row in stalled if (str(row.job_id), row.step) not in brought]
    return sum(
        state.redispatch_stalled(row.job_id, row.step, stall_seconds=wait) for row in stalled
    )


def _step_names() -> dict[str, str]:
    """Step names by task name."""
    return {s.task_name: s.name for handler in registry for s in handler.steps}


def put_back_unheld(lease_seconds: float) -> int:
    """Return to their queues the step messages that a worker took more than a lease ago
    (or whose countdown ended that long ago) and whose step no live claim holds; how many.

    A live worker claims a step within milliseconds of taking its message and renews the
    claim's lease while the step runs, so such a message's worker is gone. Put back, the
    message is marked redelivered, and its claim takes the step or finds it done.
    """
    steps = _step_names()
    too_old = datetime.now(UTC) - timedelta(seconds=lease_seconds)
    # A connection of its own, not the producer pool's: a pooled one may still have a BRPOP
    # of a remote-control reply in flight (the fleet's status), which these reads would get.
    with current_app.extensions["celery"].connection_for_read() as conn:
        channel = conn.default_channel
        pairs = {
            taken.tag: (uuid.UUID(taken.args[0]), steps[taken.task])
            for taken in transport.taken_before(channel, lease_seconds)
            if taken.task in steps and (taken.eta is None or taken.eta < too_old)
        }
        if not pairs:
            return 0
        held = queries.held_steps(list(set(pairs.values())))
        tags = [tag for tag, pair in pairs.items() if pair not in held]
        transport.put_back(channel, tags)
    for tag in tags:
        job_id, step = pairs[tag]
        log.warning(
            "step %s of job %s: its worker took it and was lost; queued again",
            step,
            job_id,
        )
    return len(tags)
