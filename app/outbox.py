"""The outbox: dispatch intents committed with the change that needs them, published after.

A job and its first dispatch intent commit together; only then is the intent
published (``publish``), by the code that committed it (the request, the step), on its own thread
and its own broker connection. The rows of what was published are deleted a moment
later (``DELETE_DELAY``), many in one statement, by a thread of the process: not on
the request's path, and well before the sweep would take them for unpublished. What
cannot be published (Redis down, the process killed in between) stays in the table,
and the beat sweep publishes it ``OUTBOX_GRACE_SECONDS`` later. The sweep locks rows
with ``FOR UPDATE SKIP LOCKED``, so concurrent sweeps take disjoint rows. A message
published twice (a sweep racing a slow publisher, a process killed before it deleted
what it published) is harmless: the step's claim lets one delivery run.

While the broker refuses messages, publishers stop trying for ``BACKOFF_SECONDS`` after
each failure, so requests do not wait on a broker that is down; the sweep catches up.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass
from dataclasses import field

import sqlalchemy as sa
from celery import Celery
from celery import chain
from flask import Flask
from flask import current_app

from app import broker
from app import routing
from app.errors import UnknownHandlerError
from app.extensions import db
from app.framework.registry import registry
from app.models import Outbox
from app.observability import sentry
from app.sql import run
from app.sql import statements
from app.status import RUNNABLE

log = logging.getLogger(__name__)

#: Seconds a publisher leaves the broker alone after it refused a message.
BACKOFF_SECONDS = 2.0
#: Seconds the rows of published intents wait to be deleted together.
DELETE_DELAY = 0.2


@dataclass(frozen=True)
class Dispatch:
    """A committed dispatch intent (an outbox row): run ``step`` of the job."""

    outbox_id: uuid.UUID
    job_id: uuid.UUID
    step: str
    job_type: str
    priority: int
    #: The Sentry trace of the transaction that wrote it, which its publisher continues.
    traceparent: str | None = None
    baggage: str | None = None
    #: Written by an approval: the job's continuation, sent on the fast lane.
    continuation: bool = False


def trace() -> dict[str, str | None]:
    """The columns an intent written now keeps of the current trace (``traceparent``,
    ``baggage``; none when Sentry is off), for its publisher to continue."""
    return sentry.trace_headers()


def init_app(app: Flask) -> None:
    """Give the app the ``Dispatcher`` that ``publish`` uses."""
    app.extensions[_EXTENSION] = Dispatcher(app)


def publish(intents: list[Dispatch]) -> None:
    """Publish intents that were just committed, now (``Dispatcher.publish``)."""
    if intents:
        current_app.extensions[_EXTENSION].publish(intents)


_EXTENSION = "agentq.dispatcher"


def signature_for(
    celery: Celery, job_type: str, step: str, job_id: str, priority: int, *, queue: str
):
    """The chain that runs ``step`` of a job and its followers up to the next approval,
    every message of it on ``queue``."""
    sigs = [
        celery.signature(
            s.task_name,
            args=(job_id,),
            immutable=True,
            queue=queue,
            priority=broker.message_priority(celery, priority),
        )
        for s in registry.get(job_type).chain_from(step)
    ]
    return sigs[0] if len(sigs) == 1 else chain(*sigs)


def _send(celery: Celery, intent: Dispatch) -> None:
    # Continue the trace of the request or step that wrote the row.
    queue = routing.step_queue(
        celery.flask_app.config, intent.job_type, continuation=intent.continuation
    )
    with sentry.continued_trace(intent.traceparent, intent.baggage):
        signature_for(
            celery, intent.job_type, intent.step, str(intent.job_id), intent.priority, queue=queue
        ).apply_async(retry=False)


class Dispatcher:
    """Publishes the dispatch intents a request or step just committed, and deletes their
    rows from a thread of the process."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self._refused_until = 0.0
        self._published: list[uuid.UUID] = []
        self._changed = threading.Condition()
        self._pid: int | None = None

    def publish(self, intents: list[Dispatch]) -> None:
        """Publish ``intents`` now; leave what the broker refuses to the sweep."""
        if time.monotonic() < self._refused_until:
            return
        celery = self.app.extensions["celery"]
        sent: list[uuid.UUID] = []
        for i, intent in enumerate(intents):
            try:
                _send(celery, intent)
            except UnknownHandlerError as exc:  # not this release's step: the sweep fails the job
                log.error("outbox: job %s cannot be dispatched: %s", intent.job_id, exc.message)
                run("unpublished", ids=[intent.outbox_id], error=exc.message)
                continue
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
            self._forget(sent)

    def _forget(self, ids: list[uuid.UUID]) -> None:
        with self._changed:
            if self._pid != os.getpid():
                # First use in this process (or a fork's child, whose parent thread is gone).
                self._pid = os.getpid()
                self._published = []
                loop = threading.Thread(target=self._delete_loop, name="agentq-outbox", daemon=True)
                loop.start()
                atexit.register(self.flush)
            self._published.extend(ids)
            self._changed.notify()

    def _delete_loop(self) -> None:
        while True:
            with self._changed:
                while not self._published:
                    self._changed.wait()
            time.sleep(DELETE_DELAY)
            try:
                self.flush()
            except Exception:  # the sweep will publish these again, which is harmless
                log.exception("outbox: deleting published rows failed")

    def flush(self) -> None:
        """Delete the rows of what was published, now."""
        with self._changed:
            ids, self._published = self._published, []
        if ids:
            with self.app.app_context():
                run("published", ids=ids)


@dataclass(frozen=True)
class Unrunnable:
    """An intent no worker of this release can run: its job type or step is not registered
    (a deploy renamed or removed it). Its job is failed (``state.fail_unrunnable``)."""

    job_id: uuid.UUID
    step: str
    reason: str


@dataclass
class Published:
    """What ``publish_due`` did: how many intents it sent, and which it cannot send ever."""

    sent: int = 0
    unrunnable: list[Unrunnable] = field(default_factory=list)


def publish_due(*, older_than: float = 0.0, limit: int = 100) -> Published:
    """Publish outbox rows due ``older_than`` seconds ago (the sweep).

    Stops at the first broker error, leaving that row and the rest for a later try; skips
    the rows of intents this release cannot run, whose jobs the caller fails.
    """
    celery = current_app.extensions["celery"]
    rows = db.session.execute(
        statements["claim_outbox"], {"older_than": older_than, "limit": limit}
    ).all()
    done = Published()
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
                        row.continuation,
                    ),
                )
            except UnknownHandlerError as exc:
                done.unrunnable.append(Unrunnable(row.job_id, row.step, exc.message))
                continue
            except Exception as exc:  # kombu and redis-py raise many kinds; all mean "not sent"
                log.warning("outbox: publishing %s of job %s failed: %s", row.step, row.job_id, exc)
                db.session.execute(
                    sa.update(Outbox)
                    .where(Outbox.id == row.id)
                    .values(attempts=Outbox.attempts + 1, last_error=str(exc)[:1000])
                )
                break
            done.sent += 1
        db.session.execute(sa.delete(Outbox).where(Outbox.id == row.id))
    db.session.commit()
    return done
