"""The beat sweep: what no single request or step can be trusted to finish.

Every ``SWEEP_INTERVAL`` seconds beat sends ``agentq.sweep`` to the sweeps queue,
which every worker consumes even while the steps queue is paused. It

- publishes outbox rows still there ``OUTBOX_GRACE_SECONDS`` after they were due
  (their after-commit publish failed: Redis down, process killed);
- re-dispatches steps whose claim lease lapsed (their worker or machine died),
  within seconds rather than after the broker's visibility timeout;
- dispatches again a runnable job that nobody runs and nothing will dispatch
  after ``STALL_SECONDS`` (a worker died between committing a step and sending the
  next message of its chain); not while the fleet is paused;
- expires pending checkpoints past their ``expires_in``.

Each action goes through a guarded transition, so two sweeps at once are harmless.
"""

from __future__ import annotations

import logging

from celery import Celery
from flask import current_app

from app import queries
from app import state
from worker import outbox

log = logging.getLogger(__name__)


def register(celery: Celery) -> None:
    celery.task(name="agentq.sweep", ignore_result=True)(sweep)


def sweep() -> dict[str, int]:
    """Run one sweep; returns how many rows each part handled."""
    released = sum(
        state.release_lapsed(row.attempt_id, row.job_id, row.step)
        for row in queries.lapsed_leases()
    )
    stall = current_app.config["STALL_SECONDS"]
    stalled = 0
    if not state.is_paused():
        stalled = sum(
            state.redispatch_stalled(row.job_id, row.step, stall_seconds=stall)
            for row in queries.stalled_jobs(stall)
        )
    expired = sum(state.expire_checkpoint(cid) for cid in queries.expired_checkpoints())
    published = outbox.publish_due(older_than=current_app.config["OUTBOX_GRACE_SECONDS"])
    counts = {"released": released, "stalled": stalled, "expired": expired, "published": published}
    if any(counts.values()):
        log.info("sweep: %s", ", ".join(f"{n} {what}" for what, n in counts.items()))
    return counts
