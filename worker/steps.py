"""The step tasks: thin Celery tasks around the handlers' step functions.

Each step of each registered handler becomes a task named ``agentq.<handler>.<step>``.
A task claims its job's step through ``app.state`` (a duplicate delivery finds the
claim taken and exits), runs the step function while a thread renews the claim's
lease, and hands the outcome back to ``app.state``. When the job does not go on
within this chain (an approval checkpoint, a failure, a lost claim), the task
clears the rest of its Celery chain so that nothing after it runs.
"""

from __future__ import annotations

import contextvars
import json
import logging
import threading
import time
import traceback
import uuid

from celery import Celery
from celery import Task
from flask import Flask
from flask import current_app

from app import instruments
from app import logs
from app import queries
from app import sentry
from app import state
from app.errors import PermanentError
from handlers.registry import Step
from handlers.registry import StepContext
from handlers.registry import registry
from handlers.workspace import Workspace

log = logging.getLogger(__name__)


def register(celery: Celery) -> None:
    """Register one task per step of every handler."""
    for handler in registry:
        for step in handler.steps:
            celery.task(
                name=step.task_name,
                bind=True,
                acks_late=True,
                reject_on_worker_lost=True,
                ignore_result=True,
            )(_task_body(step))


def _task_body(step: Step):
    def run(task: Task, job_id: str) -> str:
        # Every log line of the task carries the job and step (app.logs).
        with logs.bound(job_id=job_id, job_type=step.handler, step=step.name):
            return run_step(task, step, uuid.UUID(job_id))

    run.__name__ = run.__qualname__ = step.task_name.replace(".", "_").replace("-", "_")
    run.__doc__ = (step.fn.__doc__ or "").strip() or f"Step {step.name} of {step.handler}"
    return run


def _stop_chain(task: Task) -> None:
    """Keep Celery from sending the rest of this task's chain."""
    task.request.chain = None


def run_step(task: Task, step: Step, job_id: uuid.UUID) -> str:
    """Claim, run and record one step attempt; returns what happened to the job."""
    app = current_app._get_current_object()
    lease = app.config["STEP_LEASE_SECONDS"]
    claim = state.claim_step(
        job_id,
        step.name,
        worker=task.request.hostname or "unknown",
        task_id=task.request.id,
        lease_seconds=lease,
    )
    if claim is None:
        log.info("step %s of job %s: not its turn (duplicate or stale delivery)", step.name, job_id)
        _stop_chain(task)
        return "skipped"
    chain_continues = bool(task.request.chain)
    ctx = _context(app, claim)
    started = _observe_start(claim, ctx)
    with LeaseKeeper(app, claim.attempt_id, lease):
        try:
            output = _json_checked(step.fn(ctx))
        except Exception as exc:  # the one place step errors are caught; the policy decides
            outcome = state.fail_step(
                claim,
                error=f"{type(exc).__name__}: {exc}",
                traceback=traceback.format_exc(),
                permanent=isinstance(exc, PermanentError),
            )
            _observe_failure(claim, exc, outcome, started)
            _stop_chain(task)
            return outcome
    outcome = state.finish_step(claim, output, ctx.checkpoints, chain_continues=chain_continues)
    _observe_finish(claim, outcome, started)
    if outcome != "advanced":
        _stop_chain(task)
    return outcome


def _observe_start(claim: state.Claim, ctx: StepContext) -> float:
    """Log the attempt and tag it for Sentry; returns its start time (``time.monotonic``)."""
    checkpoint_id = ctx.decision.checkpoint_id if ctx.decision else None
    logs.bind(checkpoint_id=checkpoint_id)
    sentry.tag_step(
        job_id=claim.job_id, job_type=claim.job_type, step=claim.step, checkpoint_id=checkpoint_id
    )
    log.info(
        "step %s of job %s: attempt %s started",
        claim.step,
        claim.job_id,
        claim.attempt,
        extra={"attempt": claim.attempt},
    )
    return time.monotonic()


def _observe_failure(claim: state.Claim, exc: Exception, outcome: str, started: float) -> None:
    """Log a step's exception, count it, and send it to Sentry (the job's logs as breadcrumbs)."""
    instruments.record_step(claim, outcome, time.monotonic() - started)
    log.warning(
        "step %s of job %s: %s: %s: %s",
        claim.step,
        claim.job_id,
        outcome,
        type(exc).__name__,
        exc,
        exc_info=exc,
        extra=_outcome_fields(claim, outcome, started),
    )
    sentry.capture_step_error(exc, outcome=outcome)


def _observe_finish(claim: state.Claim, outcome: str, started: float) -> None:
    """Log and count the step's outcome."""
    instruments.record_step(claim, outcome, time.monotonic() - started)
    if outcome == "waiting":
        # The step opened an approval checkpoint: later lines and events name it.
        checkpoint_id = queries.pending_checkpoint_id(claim.job_id)
        logs.bind(checkpoint_id=checkpoint_id)
        sentry.tag(checkpoint_id=checkpoint_id)
    log.info(
        "step %s of job %s: %s",
        claim.step,
        claim.job_id,
        outcome,
        extra=_outcome_fields(claim, outcome, started),
    )


def _outcome_fields(claim: state.Claim, outcome: str, started: float) -> dict:
    duration_ms = round((time.monotonic() - started) * 1000)
    return {"attempt": claim.attempt, "outcome": outcome, "duration_ms": duration_ms}


def _json_checked(output):
    """The step's return value, which must be JSON: it is stored and shown.

    :raises PermanentError: when it is not (running the step again would not help).
    """
    try:
        json.dumps(output)
    except (TypeError, ValueError) as exc:
        raise PermanentError(f"the step returned a value that is not JSON: {exc}") from exc
    return output


def _context(app: Flask, claim: state.Claim) -> StepContext:
    job = queries.get_job(claim.job_id)

    def write_log(kind: str, message: str, data=None) -> None:
        state.write_log(claim.job_id, kind, message, step=claim.step, data=data)

    return StepContext(
        job_id=str(claim.job_id),
        job_type=claim.job_type,
        step=claim.step,
        attempt=claim.attempt,
        task_description=job.task_description,
        input=job.input_data,
        outputs=queries.step_outputs(claim.job_id),
        decision=queries.last_decision(claim.job_id),
        workspace=Workspace(app.config["WORKSPACE_ROOT"], str(claim.job_id)),
        log=write_log,
    )


class LeaseKeeper:
    """Renews a running attempt's claim lease every third of its length, in a thread."""

    def __init__(self, app: Flask, attempt_id: uuid.UUID, lease_seconds: float) -> None:
        self.app = app
        self.attempt_id = attempt_id
        self.lease_seconds = lease_seconds
        self._stop = threading.Event()
        # The thread runs in a copy of the step's context: its log lines carry the job.
        self._thread = threading.Thread(
            target=contextvars.copy_context().run,
            args=(self._run,),
            name="agentq-lease",
            daemon=True,
        )

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        with self.app.app_context():
            while not self._stop.wait(self.lease_seconds / 3):
                try:
                    if not state.renew_lease(self.attempt_id, self.lease_seconds):
                        log.warning(
                            "attempt %s lost its claim; its result will be discarded",
                            self.attempt_id,
                        )
                        return
                except Exception:  # a database blip must not kill the step; the next try may work
                    log.exception("renewing the lease of attempt %s failed", self.attempt_id)
