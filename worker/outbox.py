"""Publishing the outbox: dispatch intents committed with the change that needs them.

A job and its first dispatch intent commit together; only then is the intent
published, by the code that committed it (the request, the step), on its own thread
and its own broker connection, and its row deleted. What cannot be published then
(Redis down, the process killed in between) stays in the table, and the beat sweep
publishes it a few seconds later. The sweep locks rows with ``FOR UPDATE SKIP
LOCKED``, so concurrent sweeps take disjoint rows; a row is deleted once published.
A message published twice (a sweep racing a slow publisher) is harmless: the step's
claim lets one delivery run.

While the broker refuses messages, publishers stop trying for ``BACKOFF_SECONDS`` after
each failure, so requests do not wait on a broker that is down; the sweep catches up.
"""

from __future__ import annotations

import logging
import time
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
from app.sql import run
from app.state import Dispatch
from handlers.registry import registry

log = logging.getLogger(__name__)

#: Job statuses in which a dispatch intent still means work to run.
RUNNABLE = ("PENDING", "RUNNING")
#: Seconds a publisher leaves the broker alone after it refused a message.
BACKOFF_SECONDS = 2.0


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


def _send(celery: Celery, intent: Dispatch) -> None:
    # Continue the trace of the request or step that wrote the row.
    with sentry.continued_trace(intent.traceparent, intent.baggage):
        signature_for(
            celery, intent.job_type, intent.step, str(intent.job_id), intent.priority
        ).apply_async(retry=False)


class Dispatcher:
    """Publishes the dispatch intents a request or step just committed."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self._refused_until = 0.0

    def publish(self, intents: list[Dispatch]) -> None:
        """Publish ``intents`` now and delete their rows; leave what the broker refuses
        to the sweep."""
        if time.monotonic() < self._refused_until:
            return
        celery = self.app.extensions["celery"]
        sent: list[uuid.UUID] = []
        for i, intent in enumerate(intents):
            try:
                _send(celery, intent)
            except Exception as exc:  # kombu and redis-py raise many kinds; all mean "not sent"
                self._refused_until = time.monotonic() + BACKOFF_SECONDS
                log.warning(
                    "outbox: publishing %s of job %s failed, the sweep will retry: %s",
                    intent.step,
                    intent.job_id,
                    exc,
                )
                run("unpublished", ids=[x.outbox_id for x in intents[i:]], error=str(exc)[:1000])
                break
            sent.append(intent.outbox_id)
        if sent:
            run("published", ids=sent)


def publish_due(*, older_than: float = 0.0, limit: int = 100) -> int:
    """Publish outbox rows due ``older_than`` seconds ago (the sweep); returns how many.

    Stops at the first broker error, leaving that row and the rest for a later try.
    """
    celery = current_app.extensions["celery"]
    rows = db.session.execute(
        queries["claim_outbox"], {"older_than": older_than, "limit": limit}
    ).all()
    sent = 0
    for row in rows:
        if row.status in RUNNABLE:
            try:
                _send(
                    celery,
                    Dispatch(
                        row.id,
                        row.job_id,
                        row.step,
                        row.job_type,
                        row.priority,
                        row.traceparent,
                        row.baggage,
                    ),
                )
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
