"""Publishing the outbox: dispatch intents committed with the change that needs them.

A job and its first dispatch intent commit in one transaction; only then is the
intent published, by a background thread (``Dispatcher``) so that no HTTP reply
waits on the broker. What that thread cannot publish (Redis down, process killed)
stays in the table, and the beat sweep publishes it a few seconds later. Rows are
locked with ``FOR UPDATE SKIP LOCKED``, so concurrent publishers take disjoint rows;
a row is deleted in the transaction that published it. A publish whose commit then
fails is sent twice at worst, which the step's claim makes harmless.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import uuid

import sqlalchemy as sa
from celery import Celery
from celery import chain
from flask import Flask
from flask import current_app

from app import sentry
from app.config import MAX_PRIORITY
from app.config import STEPS_QUEUE
from app.extensions import db
from app.models import Outbox
from app.sql import queries
from handlers.registry import registry

log = logging.getLogger(__name__)

#: Job statuses in which a dispatch intent still means work to run.
RUNNABLE = ("PENDING", "RUNNING")


def signature_for(celery: Celery, job_type: str, step: str, job_id: str, priority: int):
    """The chain that runs ``step`` of a job and its followers up to the next approval."""
    sigs = [
        celery.signature(
            s.task_name,
            args=(job_id,),
            immutable=True,
            queue=STEPS_QUEUE,
            priority=MAX_PRIORITY - priority,
        )
        for s in registry.get(job_type).chain_from(step)
    ]
    return sigs[0] if len(sigs) == 1 else chain(*sigs)


def publish(
    *, ids: list[uuid.UUID] | None = None, older_than: float = 0.0, limit: int = 100
) -> int:
    """Publish due outbox rows (those of ``ids`` only, when given); returns how many were sent.

    Stops at the first broker error, leaving that row and the rest for a later try.
    """
    celery = current_app.extensions["celery"]
    rows = db.session.execute(
        queries["claim_outbox"],
        {"ids": [str(i) for i in ids] if ids else None, "older_than": older_than, "limit": limit},
    ).all()
    sent = 0
    for row in rows:
        if row.status in RUNNABLE:
            try:
                # Continue the trace of the request or step that wrote the row.
                with sentry.continued_trace(row.traceparent, row.baggage):
                    signature_for(
                        celery, row.job_type, row.step, str(row.job_id), row.priority
                    ).apply_async()
            except Exception as exc:  # kombu and redis-py raise many kinds; all mean "not sent"
                log.warning("outbox: publishing %s of job %s failed: %s", row.step, row.job_id, exc)
                db.session.execute(
                    sa.update(Outbox)
                    .where(Outbox.id == row.id)
                    .values(attempts=Outbox.attempts + 1, last_error=str(exc)[:1000])
                )
                break
            sent += 1
        db.session.execute(sa.delete(Outbox).where(Outbox.id == row.id))
    db.session.commit()
    return sent


class Dispatcher:
    """Publishes committed outbox rows from a background thread of this process."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self._pid: int | None = None
        self._queue: queue.SimpleQueue[list[uuid.UUID]] = queue.SimpleQueue()

    def submit(self, ids: list[uuid.UUID]) -> None:
        """Publish these rows soon; returns at once."""
        if self._pid != os.getpid():
            # First use in this process (or a fork's child, whose parent thread is gone).
            self._pid = os.getpid()
            self._queue = queue.SimpleQueue()
            threading.Thread(target=self._run, name="agentq-dispatcher", daemon=True).start()
        self._queue.put(ids)

    def _run(self) -> None:
        while True:
            ids = self._queue.get()
            with self.app.app_context():
                try:
                    publish(ids=ids)
                except Exception:  # the thread must live on; the sweep publishes what is left
                    log.exception("outbox: publishing after commit failed; the sweep will retry")
                    db.session.rollback()
