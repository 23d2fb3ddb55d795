"""The worker's side of fleet control (``app.fleet`` is the web's): the remote-control
command each worker answers with its state, and the consumer bootstep that keeps its
consumption of its step queues (every queue but the sweeps) in line with the paused
flag: it applies the pause or resume broadcast at once, and re-reads the flag when the
worker starts, after it reconnects to the broker, and every few seconds, so a worker that
missed the broadcast (offline, started later, reconnecting) comes into line. In-flight
steps finish either way.
"""

from __future__ import annotations

import logging
import os

from celery import Celery
from celery import bootsteps
from celery.worker import state as worker_state
from celery.worker.control import control_command
from celery.worker.control import inspect_command

from app import fleet
from app.routing import SWEEPS_QUEUE

log = logging.getLogger(__name__)

#: Seconds between a worker's checks of the paused flag.
RECONCILE_INTERVAL = 3.0


@inspect_command(name=fleet.STATUS_COMMAND)
def agentq_status(panel) -> dict:
    """This worker's concurrency, the steps it runs, and whether it consumes its step queues.

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
    """Keeps this worker's consumption of its step queues in line with the paused flag."""

    requires = frozenset({"celery.worker.consumer.tasks:Tasks"})

    def __init__(self, parent, **kwargs):
        super().__init__(parent, **kwargs)
        self.timer_ref = None
        #: The step queues this worker was started to consume (all its queues but the
        #: sweeps): what pausing takes off it and resuming puts back.
        self.manages: list[str] | None = None

    def start(self, c) -> None:
        if self.manages is None:
            self.manages = [q.name for q in c.task_consumer.queues if q.name != SWEEPS_QUEUE]
        c.agentq_fleet = self
        if not self.manages:
            return
        self.reconcile(c)
        self.timer_ref = c.timer.call_repeatedly(RECONCILE_INTERVAL, self.reconcile, (c,))

    def stop(self, c) -> None:
        if self.timer_ref is not None:
            self.timer_ref.cancel()
            self.timer_ref = None

    def reconcile(self, c) -> None:
        """Apply the flag as Postgres holds it."""
        flask_app = c.app.flask_app
        try:
            with flask_app.app_context():
                paused = fleet.is_paused()
        except Exception as exc:  # database unreachable: keep the current state, try again later
            log.warning("fleet: cannot read the paused flag: %s", exc)
            return
        self.apply(c, paused)

    def apply(self, c, paused: bool) -> None:
        """Stop (``paused``) or start consuming the step queues this worker manages."""
        names = self.manages or []
        consuming = _selected(c)
        if paused and consuming:
            log.info("fleet: paused; no longer consuming %s", ", ".join(names))
            for name in names:
                c.cancel_task_queue(name)
        elif not paused and not consuming:
            log.info("fleet: resumed; consuming %s", ", ".join(names))
            for name in names:
                c.add_task_queue(name)


@control_command(name=fleet.PAUSE_COMMAND, args=[("paused", bool)], signature="<paused>")
def agentq_pause(panel, paused: bool) -> dict:
    """Pause or resume consuming this worker's step queues now (``app.fleet.set_paused``)."""
    step = getattr(panel.consumer, "agentq_fleet", None)
    if step is not None and step.manages:
        step.apply(panel.consumer, paused)
    return {"ok": "paused" if paused else "resumed"}


def _selected(c) -> bool:
    """Whether the task consumer consumes, or is about to consume, any step queue.

    Not ``consuming_from()``: it sees only started consumers, and a bootstep starts
    before the event loop calls ``consume()``, so at start-up it is always False.
    """
    return any(q.name != SWEEPS_QUEUE for q in c.task_consumer.queues)


def register(celery: Celery) -> None:
    celery.steps["consumer"].add(FleetStateStep)
