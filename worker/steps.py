"""The step tasks: thin Celery tasks around the handlers' step functions.

Each step of each registered handler becomes a task named ``agentq.<handler>.<step>``.
A task claims its job's step through ``app.state`` (a duplicate delivery finds the
claim taken and exits), runs the step function, and hands the outcome back to
``app.state``, which records it with the step's log lines in one statement. When the
job does not go on within this chain (an approval checkpoint, a failure, a lost
claim), the task clears the rest of its Celery chain so that nothing after it runs.

While steps run, one thread per process (``Attempts``) renews their claim leases and
writes the log lines of steps that run longer than a second or two, so progress shows
while they run; a short step costs neither.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import traceback
import uuid
from dataclasses import dataclass
from dataclasses import field

from celery import Celery
from celery import Task
from celery.exceptions import Retry
from flask import Flask
from flask import current_app

from app import events
from app import joblog
from app import queries
from app import sql
from app import state
from app.framework import PermanentError
from app.framework import Step
from app.framework import StepContext
from app.framework.registry import registry
from app.framework.workspace import Workspace
from app.observability import logs
from app.observability import sentry
from app.status import StepOutcome

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
                # Claims retry for as long as the database stays away (retry()'s own
                # max_retries=None means "the task's default", which is 3).
                max_retries=None,
            )(_task_body(step))


def _task_body(step: Step):
    def run(task: Task, job_id: str) -> str:
        # Every log line of the task carries the job and step (app.observability.logs).
        with logs.bound(job_id=job_id, job_type=step.handler, step=step.name):
            return run_step(task, step, uuid.UUID(job_id)).value

    run.__name__ = run.__qualname__ = step.task_name.replace(".", "_").replace("-", "_")
    run.__doc__ = (step.fn.__doc__ or "").strip() or f"Step {step.name} of {step.handler}"
    return run


def _stop_chain(task: Task) -> None:
    """Keep Celery from sending the rest of this task's chain."""
    task.request.chain = None


def _cut_chain(task: Task, step: Step, job_id: uuid.UUID) -> str | None:
    """The chain's next step, when this message came back after its worker was lost between
    recording the step and sending the next step's message: the job waits at that step
    with nobody on it and nothing to dispatch it. Sending it again is safe: a copy that
    was sent after all finds the step claimed and is skipped."""
    chain = task.request.chain
    if not chain or not (task.request.delivery_info or {}).get("redelivered"):
        return None
    following = next(
        (s.name for s in registry.get(step.handler).steps if s.task_name == chain[-1]["task"]),
        None,
    )
    return following if following and queries.awaits_message(job_id, following) else None


#: Seconds before a step whose claim could not reach the database tries again: doubled
#: each time, up to the second figure, for as long as the database stays unreachable.
CLAIM_RETRY_DELAY = (0.5, 5.0)


def run_step(task: Task, step: Step, job_id: uuid.UUID) -> StepOutcome:
    """Claim, run and record one step attempt; returns what happened to the job."""
    app = current_app._get_current_object()
    try:
        claim = state.claim_step(
            job_id,
            step.name,
            worker=task.request.hostname or "unknown",
            task_id=task.request.id,
            lease_seconds=app.config["STEP_LEASE_SECONDS"],
        )
    except Exception as exc:
        if not sql.database_unavailable(exc):
            raise
        raise _claim_later(task, step, job_id, exc) from exc
    if claim is None:
        following = _cut_chain(task, step, job_id)
        if following:
            log.warning(
                "step %s of job %s: done, but its worker was lost before sending step %s; "
                "sending it now",
                step.name,
                job_id,
                following,
            )
            return StepOutcome.RESENT
        log.info("step %s of job %s: not its turn (duplicate or stale delivery)", step.name, job_id)
        _stop_chain(task)
        return StepOutcome.SKIPPED
    chain_continues = bool(task.request.chain)
    attempts = Attempts.here(app)
    running = attempts.start(claim)
    ctx = _context(app, claim, running)
    started = _observe_start(claim)
    try:
        output = _json_checked(step.fn(ctx))
    except Exception as exc:  # the one place step errors are caught; the policy decides
        outcome = state.fail_step(
            claim,
            error=f"{type(exc).__name__}: {exc}",
            traceback=traceback.format_exc(),
            permanent=isinstance(exc, PermanentError),
            logs=attempts.end(running),
        )
        _observe_failure(claim, exc, outcome, started)
        _stop_chain(task)
        return outcome
    outcome = state.finish_step(
        claim,
        output,
        ctx.checkpoints,
        logs=attempts.end(running),
        chain_continues=chain_continues,
    )
    _observe_finish(claim, ctx, outcome, started)
    if outcome != StepOutcome.ADVANCED:
        _stop_chain(task)
    return outcome


def _claim_later(task: Task, step: Step, job_id: uuid.UUID, exc: Exception) -> Retry:
    """Send the step's message again, to claim it once the database is back (acked as failed,
    the message, and the step, would be lost until the stall sweep found the job); the
    ``Retry`` to raise, which tells the worker the task will run again."""
    first, most = CLAIM_RETRY_DELAY
    delay = min(first * 2**task.request.retries, most)
    log.warning(
        "step %s of job %s: the database is unreachable (%s); claiming again in %.1f s",
        step.name,
        job_id,
        next(iter(str(exc).strip().splitlines()), type(exc).__name__),
        delay,
    )
    return task.retry(countdown=delay, exc=exc, throw=False)


def _observe_start(claim: state.Claim) -> float:
    """Log the attempt and tag it for Sentry; returns its start time (``time.monotonic``)."""
    checkpoint_id = claim.decision.checkpoint_id if claim.decision else None
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


def _observe_failure(
    claim: state.Claim, exc: Exception, outcome: StepOutcome, started: float
) -> None:
    """Log a step's exception, announce it, and send it to Sentry (the job's logs as
    breadcrumbs)."""
    _ended(claim, outcome, started)
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


def _observe_finish(
    claim: state.Claim, ctx: StepContext, outcome: StepOutcome, started: float
) -> None:
    """Log and announce the step's outcome."""
    _ended(claim, outcome, started)
    if outcome == StepOutcome.WAITING:
        # The step opened an approval checkpoint: later lines and events name it.
        checkpoint_id = ctx.approval_checkpoint_id
        logs.bind(checkpoint_id=checkpoint_id)
        sentry.tag(checkpoint_id=checkpoint_id)
    log.info(
        "step %s of job %s: %s",
        claim.step,
        claim.job_id,
        outcome,
        extra=_outcome_fields(claim, outcome, started),
    )


def _ended(claim: state.Claim, outcome: StepOutcome, started: float) -> None:
    seconds = time.monotonic() - started
    events.step_ended.send(claim.job_type, claim=claim, outcome=outcome, seconds=seconds)


def _outcome_fields(claim: state.Claim, outcome: StepOutcome, started: float) -> dict:
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


def _context(app: Flask, claim: state.Claim, running: Running) -> StepContext:
    return StepContext(
        job_id=str(claim.job_id),
        job_type=claim.job_type,
        step=claim.step,
        attempt=claim.attempt,
        task_description=claim.task_description,
        input=claim.input_data,
        outputs=claim.outputs,
        decision=claim.decision,
        feedback=claim.feedback,
        workspace=Workspace(app.config["WORKSPACE_ROOT"], str(claim.job_id)),
        log=running.log,
    )


#: Seconds between the attempts thread's turns; a running step's log line waits one or
#: two of them before it is written on its own (a step that returns sooner writes its
#: lines with its result).
LOG_FLUSH_SECONDS = 1.0


@dataclass(eq=False)
class Running:
    """A step attempt running in this process: its claim, and its lines not yet written."""

    claim: state.Claim
    attempts: Attempts
    renewed: float = field(default_factory=time.monotonic)
    lines: list[joblog.LogLine] = field(default_factory=list)
    first_line: float | None = None
    lost: bool = False

    def log(self, kind: str, message: str, data=None) -> None:
        """``ctx.log``: a job log line, written with the result or within two seconds.

        :raises TypeError: when ``data`` is not JSON (in the step, which fails as for any
            other error of its own).
        """
        if data is not None:
            json.dumps(data)
        line = joblog.LogLine(kind, message, self.claim.step, data)
        with self.attempts.lock:
            self.lines.append(line)
            if self.first_line is None:
                self.first_line = time.monotonic()


class Attempts:
    """The step attempts running in this process, and the thread that looks after them.

    Every ``tick`` (a second, or a sixth of a short lease), the thread renews the claim
    leases due for renewal (every third of the lease) and writes the log lines that
    waited a second or more. Starting and ending an attempt only touches a set under a lock: a
    step that returns within a second costs the thread nothing.
    """

    _here: Attempts | None = None

    @classmethod
    def here(cls, app: Flask) -> Attempts:
        """This process's instance (a forked pool process makes its own)."""
        if cls._here is None or cls._here.pid != os.getpid():
            cls._here = cls(app)
        return cls._here

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.pid = os.getpid()
        self.lease_seconds = app.config["STEP_LEASE_SECONDS"]
        #: Short enough that a lease is renewed well before it lapses.
        self.tick = min(LOG_FLUSH_SECONDS, self.lease_seconds / 6)
        self.lock = threading.Lock()
        self._running: set[Running] = set()
        threading.Thread(target=self._loop, name="agentq-attempts", daemon=True).start()

    def start(self, claim: state.Claim) -> Running:
        running = Running(claim, self)
        with self.lock:
            self._running.add(running)
        return running

    def end(self, running: Running) -> list[joblog.LogLine]:
        """Stop looking after ``running``; returns its log lines not written yet."""
        with self.lock:
            self._running.discard(running)
            lines, running.lines, running.first_line = running.lines, [], None
        return lines

    def _loop(self) -> None:
        while True:
            time.sleep(self.tick)
            now = time.monotonic()
            with self.lock:
                renew = [
                    r
                    for r in self._running
                    if not r.lost and now >= r.renewed + self.lease_seconds / 3
                ]
                for r in renew:
                    r.renewed = now
                flush = []
                for r in self._running:
                    if r.first_line is not None and now >= r.first_line + LOG_FLUSH_SECONDS:
                        flush.append((r.claim, r.lines))
                        r.lines, r.first_line = [], None
            if not (renew or flush):
                continue
            try:
                with self.app.app_context():
                    self._renew(renew)
                    for claim, lines in flush:
                        joblog.write(claim.job_id, lines)
            except Exception:  # a database blip must not end the thread; the next turn may work
                log.exception("renewing leases or writing step logs failed")

    def _renew(self, renew: list[Running]) -> None:
        if not renew:
            return
        held = state.renew_leases([r.claim.attempt_id for r in renew], self.lease_seconds)
        for r in renew:
            if r.claim.attempt_id not in held:
                r.lost = True
                log.warning(
                    "attempt %s of step %s of job %s lost its claim; its result will be discarded",
                    r.claim.attempt,
                    r.claim.step,
                    r.claim.job_id,
                )
