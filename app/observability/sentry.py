"""Sentry: errors and traces of web, worker and beat, when ``SENTRY_DSN`` is set.

Without ``SENTRY_DSN`` nothing here does anything: no SDK client, no error, and every
function below returns at once. With it, ``init_app`` turns on sentry-sdk's Flask
and Celery integrations in each process that builds the app: web (gunicorn), worker
and beat (``worker.celery_app`` builds the app when ``celery -A worker`` loads it,
before the worker forks its pool or runs a task, which is what Sentry's Celery
integration asks for), and the ``agentq`` commands. agentq adds:

- **Step tags.** Events and transactions of a step carry ``job_id``, ``job_type``,
  ``step`` and, where there is one, ``checkpoint_id`` (the checkpoint the step opened
  or the decision it continues from): ``tag_step``. A step's exception, which the step
  runner catches and hands to the job's retry policy, is sent by ``capture_step_error``.
- **Job logs as breadcrumbs.** An error event from a step carries the job's log lines
  (what ``ctx.log`` wrote, and the queue/retry/approval lines of the job's history), read
  from Postgres only when an event is sent.
- **Deciders.** Approving or rejecting sets the Sentry user to the admin's id and IP
  (``set_decider``), and the decision's request is tagged with the checkpoint and job.
- **Traces through the outbox.** Celery's integration carries a trace from the code
  that calls ``apply_async`` to the task; the outbox breaks that (the row is published
  after the commit, by another thread or by the beat sweep). So each outbox row keeps
  the ``sentry-trace`` and ``baggage`` of the transaction that wrote it
  (``trace_headers``), and the publisher continues that trace around ``apply_async``
  (``continued_trace``). The POST that created a job, and the approval that resumed it,
  lead to the steps they caused, across processes.

Everything is wrapped in ``capture_internal_exceptions`` (as sentry-sdk wraps its own
integrations): trouble in Sentry is logged by the SDK, never raised into a request or a
step.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Iterator
from datetime import datetime
from importlib import metadata
from typing import Any

import sentry_sdk
from flask import Flask
from flask import current_app
from sentry_sdk.integrations.celery import CeleryIntegration
from sentry_sdk.integrations.flask import FlaskIntegration
from sentry_sdk.scrubber import DEFAULT_PII_DENYLIST
from sentry_sdk.scrubber import EventScrubber
from sentry_sdk.utils import capture_internal_exceptions

from app import queries
from app.observability import logs
from app.status import StepOutcome

log = logging.getLogger(__name__)

#: Breadcrumbs of an error event: the job's latest log lines, up to Sentry's default cap.
MAX_JOB_LOG_BREADCRUMBS = 100

_settings: tuple | None = None


def init_app(app: Flask) -> bool:
    """Turn Sentry on in this process when ``SENTRY_DSN`` is set; returns whether it is on.

    Once per process: a second app built with the same settings changes nothing.
    """
    dsn = app.config.get("SENTRY_DSN")
    if dsn:
        init(
            dsn,
            environment=app.config.get("SENTRY_ENVIRONMENT"),
            traces_sample_rate=app.config.get("SENTRY_TRACES_SAMPLE_RATE"),
        )

        @app.before_request
        def _tag_request_id() -> None:
            with capture_internal_exceptions():
                if enabled() and logs.request_id():
                    sentry_sdk.set_tag("request_id", logs.request_id())

    return enabled()


def init(dsn: str, *, environment: str | None = None, traces_sample_rate: float | None = None):
    """Initialise sentry-sdk with the Flask and Celery integrations (once per process).

    ``traces_sample_rate`` None leaves performance tracing off; errors still carry the
    trace id, so an error in a step still links to the request that caused it.
    """
    global _settings
    settings = (dsn, environment, traces_sample_rate)
    if settings == _settings:
        return
    try:
        sentry_sdk.init(
            dsn=dsn,
            environment=environment or None,
            release=f"agentq@{_version()}",
            traces_sample_rate=traces_sample_rate,
            integrations=[FlaskIntegration(transaction_style="url"), CeleryIntegration()],
            # No personal data by default, except the IP of a decision's admin, which
            # set_decider adds on purpose (the decisions table records it too).
            event_scrubber=EventScrubber(
                pii_denylist=[name for name in DEFAULT_PII_DENYLIST if name != "ip_address"]
            ),
        )
    except Exception as exc:  # a bad DSN must not keep the web or the workers from starting
        log.error("Sentry is off: SENTRY_DSN was not accepted: %s", exc)
        return
    _settings = settings


def _version() -> str:
    try:
        return metadata.version("agentq")
    except metadata.PackageNotFoundError:
        return "unknown"


def enabled() -> bool:
    """Whether Sentry is on in this process."""
    return sentry_sdk.get_client().is_active()


# -- Steps -------------------------------------------------------------------------------


def tag_step(
    *,
    job_id: uuid.UUID | str,
    job_type: str,
    step: str,
    checkpoint_id: uuid.UUID | str | None = None,
) -> None:
    """Tag what this step task sends, and have its error events carry the job's logs.

    Called at the start of a step task: Celery's integration gives each task an
    isolation scope of its own, so the tags end with the task and also reach its
    transaction.
    """
    if not enabled():
        return
    with capture_internal_exceptions():
        scope = sentry_sdk.get_isolation_scope()
        scope.set_tags({"job_id": str(job_id), "job_type": job_type, "step": step})
        if checkpoint_id:
            scope.set_tag("checkpoint_id", str(checkpoint_id))
        scope.add_event_processor(
            _job_logs_as_breadcrumbs(current_app._get_current_object(), uuid.UUID(str(job_id)))
        )


def tag(**tags: Any) -> None:
    """Tag the events of this request or task (None values are skipped)."""
    if not enabled():
        return
    with capture_internal_exceptions():
        sentry_sdk.get_isolation_scope().set_tags(
            {k: str(v) for k, v in tags.items() if v is not None}
        )


def capture_step_error(exc: BaseException, *, outcome: str) -> None:
    """Send a step's exception: an error when it failed the job, else a warning.

    ``outcome`` is what ``app.state.fail_step`` did: ``failed``, ``retrying`` or
    ``discarded``; it becomes the ``step_outcome`` tag.
    """
    if not enabled():
        return
    with capture_internal_exceptions(), sentry_sdk.new_scope() as scope:
        scope.set_level("error" if outcome == StepOutcome.FAILED else "warning")
        scope.set_tag("step_outcome", outcome)
        sentry_sdk.capture_exception(exc)


def _job_logs_as_breadcrumbs(app: Flask, job_id: uuid.UUID):
    # An event may be sent outside the task's app context (Celery's integration reports
    # a task's unhandled exception after FlaskTask.__call__ returned): bring the app along.
    def processor(event: dict, _hint: dict) -> dict:
        if event.get("type") == "transaction":
            return event
        with capture_internal_exceptions(), app.app_context():
            crumbs = [
                {
                    "type": "default",
                    "category": "job.log",
                    "level": "error" if line.kind == "error" else "info",
                    "message": line.message,
                    "timestamp": line.created_at,
                    "data": {"kind": line.kind, "step": line.step},
                }
                for line in queries.recent_job_logs(job_id, MAX_JOB_LOG_BREADCRUMBS)
            ]
            existing = (event.get("breadcrumbs") or {}).get("values") or []
            merged = sorted([*crumbs, *existing], key=lambda c: _epoch(c.get("timestamp")))
            event["breadcrumbs"] = {"values": merged[-MAX_JOB_LOG_BREADCRUMBS:]}
        return event

    return processor


def _epoch(value: Any) -> float:
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    return 0.0


# -- Decisions ---------------------------------------------------------------------------


def set_decider(
    user_id: uuid.UUID | str, ip: str | None, *, checkpoint_id: uuid.UUID | str
) -> None:
    """Make the admin deciding a checkpoint the Sentry user of this request, and tag it."""
    if not enabled():
        return
    with capture_internal_exceptions():
        user = {"id": str(user_id)}
        if ip:
            user["ip_address"] = ip
        sentry_sdk.set_user(user)
        sentry_sdk.set_tag("checkpoint_id", str(checkpoint_id))


# -- Traces through the outbox -------------------------------------------------------------


def trace_headers() -> dict[str, str | None]:
    """The current trace as outbox columns: ``{"traceparent": ..., "baggage": ...}``.

    Empty when Sentry is off, so no made-up trace is stored.
    """
    if not enabled():
        return {}
    with capture_internal_exceptions():
        return {"traceparent": sentry_sdk.get_traceparent(), "baggage": sentry_sdk.get_baggage()}
    return {}


@contextlib.contextmanager
def continued_trace(
    traceparent: str | None, baggage: str | None, *, name: str = "agentq.outbox.publish"
) -> Iterator[None]:
    """Run the block in a transaction that continues the trace an outbox row saved.

    Celery's integration then puts that trace into the headers of what the block
    publishes. Without a saved trace, or with Sentry off, the block just runs.
    """
    if not traceparent or not enabled():
        yield
        return
    stack = contextlib.ExitStack()
    with capture_internal_exceptions():
        stack.enter_context(sentry_sdk.isolation_scope())
        headers = {"sentry-trace": traceparent, "baggage": baggage or ""}
        transaction = sentry_sdk.continue_trace(
            headers, op="queue.publish", name=name, source="task"
        )
        stack.enter_context(sentry_sdk.start_transaction(transaction))
    try:
        yield
    finally:
        with capture_internal_exceptions():
            stack.close()
