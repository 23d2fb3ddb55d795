"""The worker's side of fleet control (``app.fleet`` is the web's): the remote-control
command each worker answers with its state, and the consumer bootstep that keeps its
consumption of the steps queue in line with the paused flag: it re-reads the flag when
the worker starts, after it reconnects to the broker, and every few seconds, so a worker
that missed the pause or resume broadcast (offline, started later, reconnecting) comes
into line. In-flight steps finish either way.
"""

from __future__ import annotations

import logging
import os

from celery import Celery
from celery import bootsteps
from celery.worker import state as worker_state
from celery.worker.control import inspect_command

from app import fleet
from app.config import STEPS_QUEUE

log = logging.getLogger(__name__)

#: Seconds between a worker's checks of the paused flag.
RECONCILE_INTERVAL = 3.0


@inspect_command(name=fleet.STATUS_COMMAND)
def agentq_status(panel) -> dict:
    """This worker's concurrency, the steps it runs, and whether it consumes the steps queue.

    One remote-control command, so the fleet view gets one consistent reply per worker.
    """
    consumer = panel.consumer
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
                paused = fleet.is_paused()
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
