"""The fleet as the web and the CLI see it: whether the workers are paused, pausing and
resuming them, and what each worker reports.

Pausing is a flag in Postgres, applied two ways: a broadcast (``PAUSE_COMMAND``) for an
immediate effect on the workers online, which stop or resume consuming their step queues
(every queue but the sweeps, ``app.routing``), and the workers' own
check of the flag (``worker.fleet``) when they start, after they reconnect, and every
few seconds, so a worker that missed the broadcast comes into line. In-flight steps
finish either way.
"""

from __future__ import annotations

import logging
import uuid

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.dialects.postgresql import insert as pg_insert

from app import queries
from app.extensions import db
from app.models import FleetState

log = logging.getLogger(__name__)

#: The remote-control command each worker answers with its state (``worker.fleet``).
STATUS_COMMAND = "agentq_status"
#: The remote-control command that pauses or resumes each worker's step queues.
PAUSE_COMMAND = "agentq_pause"


def is_paused() -> bool:
    """Whether the workers should stop consuming their step queues."""
    flag = db.session.get(FleetState, 1)
    return bool(flag and flag.paused)


def set_paused(paused: bool, *, user_id: uuid.UUID | None) -> None:
    """Pause (True) or resume (False) consuming the step queues on every worker: record the
    flag, which workers re-apply when they start or reconnect, then broadcast it."""
    now = sa.func.clock_timestamp()
    stmt = pg_insert(FleetState).values(id=1, paused=paused, changed_by=user_id, changed_at=now)
    db.session.execute(
        stmt.on_conflict_do_update(
            index_elements=[FleetState.id],
            set_={"paused": paused, "changed_by": user_id, "changed_at": now},
        )
    )
    db.session.commit()
    control = current_app.extensions["celery"].control
    try:
        control.broadcast(PAUSE_COMMAND, arguments={"paused": paused}, reply=False)
    except Exception as exc:  # the flag is saved; workers apply it when they next check
        log.warning("fleet: broadcasting %s failed: %s", "pause" if paused else "resume", exc)


def status() -> dict:
    """The fleet as the workers report it (waiting ``FLEET_TIMEOUT`` at most) and the job counts."""
    celery = current_app.extensions["celery"]
    timeout = current_app.config["FLEET_TIMEOUT"]
    error = None
    try:
        replies = celery.control.broadcast(STATUS_COMMAND, reply=True, timeout=timeout)
    except Exception as exc:  # broker unreachable: report it, do not fail the page
        replies, error = [], str(exc)
    answers = {name: body for reply in replies or [] for name, body in reply.items()}
    workers = [
        {
            "name": name,
            "concurrency": body["concurrency"],
            "activeSteps": len(body["active"]),
            "activeTasks": body["active"],
            "consuming": body["consuming"],
            "pid": body["pid"],
        }
        for name, body in sorted(answers.items())
    ]
    paused = is_paused()
    counts = queries.job_counts()
    if workers:
        message = f"{len(workers)} worker(s) answered"
    else:
        message = f"no worker answered within {timeout:g}s" + (f" ({error})" if error else "")
    return {
        "worker": {
            "isRunning": any(w["consuming"] for w in workers),
            "paused": paused,
            "activeJobs": sum(w["activeSteps"] for w in workers),
            "maxConcurrentJobs": sum(w["concurrency"] for w in workers),
            "pollInterval": int(current_app.config["SWEEP_INTERVAL"] * 1000),
            "message": message,
        },
        "workers": workers,
        "jobs": {status.lower(): n for status, n in counts.items()},
    }
