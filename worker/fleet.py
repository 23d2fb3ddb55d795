"""Fleet control: which workers run, and whether they consume the steps queue.

Pausing is a flag in Postgres, applied two ways: a broadcast (``cancel_consumer`` /
``add_consumer``) for an immediate effect on the workers online, and a consumer
bootstep that re-reads the flag when a worker starts, after it reconnects to the
broker, and every few seconds, so a worker that missed the broadcast (offline,
started later, reconnecting) comes into line. In-flight steps finish either way.
"""

from __future__ import annotations

import logging
import os

from celery import Celery
from celery import bootsteps
from celery.worker import state as worker_state
from celery.worker.control import inspect_command
from flask import current_app

from app import queries
from app import state
from app.config import STEPS_QUEUE

log = logging.getLogger(__name__)

#: Seconds between a worker's checks of the paused flag.
RECONCILE_INTERVAL = 3.0


@inspect_command()
def agentq_status(state) -> dict:
    """This worker's concurrency, the steps it runs, and whether it consumes the steps queue.

    One remote-control command, so the fleet view gets one consistent reply per worker.
    """
    consumer = state.consumer
    active = [r.info() for r in worker_state.active_requests if r.name.startswith("agentq.")]
    return {
        "concurrency": consumer.controller.concurrency,
        "consuming": consumer.task_consumer is not None and _selected(consumer),
        "pid": os.getpid(),
        "active": [
            {"id": a["id"], "name": a["name"], "jobId": (a.get("args") or [None])[0]}
            for a in active
        ],
    }


def status() -> dict:
    """The fleet as the workers report it (waiting ``FLEET_TIMEOUT`` at most) and the job counts."""
    celery = current_app.extensions["celery"]
    timeout = current_app.config["FLEET_TIMEOUT"]
    error = None
    try:
        replies = celery.control.broadcast("agentq_status", reply=True, timeout=timeout)
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
    paused = state.is_paused()
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


def set_consuming(consuming: bool, *, user_id) -> None:
    """Resume (True) or pause (False) consuming the steps queue on every worker."""
    state.set_paused(not consuming, user_id=user_id)
    control = current_app.extensions["celery"].control
    try:
        if consuming:
            control.add_consumer(STEPS_QUEUE, reply=False)
        else:
            control.cancel_consumer(STEPS_QUEUE, reply=False)
    except Exception as exc:  # the flag is saved; workers apply it when they next check
        log.warning("fleet: broadcasting %s failed: %s", "resume" if consuming else "pause", exc)


class FleetStateStep(bootsteps.StartStopStep):
    """Keeps this worker's consumption of the steps queue in line with the paused flag."""

    requires = frozenset({"celery.worker.consumer.tasks:Tasks"})

    def __init__(self, parent, **kwargs):
        super().__init__(parent, **kwargs)
        self.timer_ref = None
        #: Whether this worker was started to consume the steps queue at all (``-Q``).
        self.manages: bool | None = None

    def start(self, c) -> None:
        if self.manages is None:
            self.manages = _selected(c)
        if not self.manages:
            return
        self.reconcile(c)
        self.timer_ref = c.timer.call_repeatedly(RECONCILE_INTERVAL, self.reconcile, (c,))

    def stop(self, c) -> None:
        if self.timer_ref is not None:
            self.timer_ref.cancel()
            self.timer_ref = None

    def reconcile(self, c) -> None:
        flask_app = c.app.flask_app
        try:
            with flask_app.app_context():
                paused = state.is_paused()
        except Exception as exc:  # database unreachable: keep the current state, try again later
            log.warning("fleet: cannot read the paused flag: %s", exc)
            return
        consuming = _selected(c)
        if paused and consuming:
            log.info("fleet: paused; no longer consuming %s", STEPS_QUEUE)
            c.cancel_task_queue(STEPS_QUEUE)
        elif not paused and not consuming:
            log.info("fleet: resumed; consuming %s", STEPS_QUEUE)
            c.add_task_queue(STEPS_QUEUE)


def _selected(c) -> bool:
    """Whether the task consumer consumes, or is about to consume, the steps queue.

    Not ``consuming_from()``: it sees only started consumers, and a bootstep starts
    before the event loop calls ``consume()``, so at start-up it is always False.
    """
    return any(q.name == STEPS_QUEUE for q in c.task_consumer.queues)


def register(celery: Celery) -> None:
    celery.steps["consumer"].add(FleetStateStep)
