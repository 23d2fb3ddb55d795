"""The step tasks: thin Celery tasks around the handlers' step functions.

Each step of each registered handler becomes a task named ``agentq.<handler>.<step>``.
A task claims its job's step through ``app.state`` (a duplicate delivery finds the
claim taken and exits), runs the step function while a thread renews the claim's
lease, and hands the outcome back to ``app.state``. When the job does not go on
within this chain (an approval checkpoint, a failure, a lost claim), the task
clears the rest of its Celery chain so that nothing after it runs.
"""

from __future__ import annotations

import json
import logging
import threading
import traceback
import uuid

from celery import Celery
from celery import Task
from flask import Flask
from flask import current_app

from app import queries
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
            _stop_chain(task)
            return outcome
    outcome = state.finish_step(claim, output, ctx.checkpoints, chain_continues=chain_continues)
    if outcome != "advanced":
        _stop_chain(task)
    return outcome


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
        self._thread = threading.Thread(target=self._run, name="agentq-lease", daemon=True)

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
