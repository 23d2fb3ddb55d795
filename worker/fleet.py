"""Fleet control: which workers run, and whether they consume the steps queue.

Pausing is a flag in Postgres, applied two ways: a broadcast (``cancel_consumer`` /
``add_consumer``) for an immediate effect on the workers online, and a consumer
bootstep that re-reads the flag when a worker starts, after it reconnects to the
broker, and every few seconds, so a worker that missed the broadcast (offline,
started later, reconnecting) comes into line. In-flight steps finish either way.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

from celery import Celery
from celery import bootsteps
from flask import current_app

from app import queries
from app import state
from app.config import STEPS_QUEUE

log = logging.getLogger(__name__)

#: Seconds between a worker's checks of the paused flag.
RECONCILE_INTERVAL = 3.0


def status() -> dict:
    """The fleet as the workers report it (waiting ``FLEET_TIMEOUT`` at most) and the job counts."""
    celery = current_app.extensions["celery"]
    timeout = current_app.config["FLEET_TIMEOUT"]
    inspect = celery.control.inspect(timeout=timeout)
    with ThreadPoolExecutor(max_workers=3) as pool:
        stats_f = pool.submit(inspect.stats)
        active_f = pool.submit(inspect.active)
        queues_f = pool.submit(inspect.active_queues)
        replies = {}
        errors = []
        for name, future in (("stats", stats_f), ("active", active_f), ("queues", queues_f)):
            try:
                replies[name] = future.result() or {}
            except Exception as exc:  # broker unreachable: report it, do not fail the page
                replies[name] = {}
                errors.append(str(exc))
    workers = []
    for name in sorted(replies["stats"]):
        stats = replies["stats"][name]
        consuming = any(q.get("name") == STEPS_QUEUE for q in replies["queues"].get(name, []))
        active = [
            t for t in replies["active"].get(name, []) if t.get("name", "").startswith("agentq.")
        ]
        workers.append(
            {
                "name": name,
                "concurrency": stats.get("pool", {}).get("max-concurrency", 0),
                "activeSteps": len(active),
                "activeTasks": [
                    {
                        "id": t.get("id"),
                        "name": t.get("name"),
                        "jobId": (t.get("args") or [None])[0],
                    }
                    for t in active
                ],
                "consuming": consuming,
                "pid": stats.get("pid"),
            }
        )
    paused = state.is_paused()
    counts = queries.job_counts()
    if workers:
        message = f"{len(workers)} worker(s) answered"
    else:
        message = f"no worker answered within {timeout:g}s" + (f" ({errors[0]})" if errors else "")
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
