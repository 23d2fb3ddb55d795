"""Workers SIGKILLed, and SIGTERMed, at random moments under a stream of jobs."""

from __future__ import annotations

import signal
import time

import pytest

from tests.faults.conftest import scaled
from tests.faults.report import record
from tests.faults.system import Stream
from tests.faults.system import check
from tests.faults.system import figures
from tests.faults.system import kill_at_random

pytestmark = [pytest.mark.acceptance]

#: Seconds every job has, after the last fault, to reach its final state.
BOUND = 120


def test_sigkill_of_pool_and_main_processes(app, system, tokens, rng):
    """Given a stream of jobs with two approvals each, when worker pool processes and
    worker main processes are SIGKILLed at random moments (and the worker started again),
    then every job completes, none is lost, no step advances a job twice, no checkpoint
    gets two decisions, and the client sees no 5xx."""
    kills = scaled(10, 100)
    killed = []
    with Stream(system.web.url, *tokens) as stream:
        time.sleep(2)
        for _ in range(kills):
            time.sleep(rng.uniform(0.3, 2.0))
            killed.append(kill_at_random(system, rng))
            ended = time.monotonic()
        settled = stream.settle(app, since=ended, bound=BOUND)
    record(
        figures(
            "SIGKILL of worker processes",
            f"{killed.count('pool process')} pool processes and "
            f"{killed.count('main process')} worker main processes SIGKILLed at random "
            "moments (0.3 to 2 s apart) under a stream of data-processing jobs with two "
            "approvals each; a killed main process's worker is started again.",
            "A pool process's step goes back to the queue at once (late ack, "
            "reject_on_worker_lost). A dead worker's running steps come back when their "
            "claim lease lapses (5 s here, STEP_LEASE_SECONDS); the messages it had taken "
            "but not claimed, when the sweep finds them held longer than a lease with no "
            "live claim; a message it had popped but not yet recorded as taken (lost in "
            "Redis), when the sweep finds the job unclaimed for a lease with no message for "
            "it in Redis. A message whose step had committed finds it done, and sends the "
            "chain's next step if nothing else will.",
            stream,
            settled,
            kills,
        )
    )
    check(stream, settled, system)


def test_sigterm_with_steps_in_flight(app, system, tokens, rng):
    """Given a stream of jobs, when the worker's main process gets SIGTERM (as a deploy or
    an orchestrator sends it) with steps in flight, and is started again, then its steps
    finish or come back, and every job completes once."""
    stops = scaled(3, 10)
    with Stream(system.web.url, *tokens) as stream:
        for _ in range(stops):
            time.sleep(rng.uniform(1.0, 3.0))
            worker = system.workers[0]
            worker.proc.send_signal(signal.SIGTERM)
            worker.proc.wait(60)
            system.restart_worker(0)
            ended = time.monotonic()
        settled = stream.settle(app, since=ended, bound=BOUND)
    record(
        figures(
            "SIGTERM with steps in flight",
            f"{stops} SIGTERMs to the worker's main process, 1 to 3 s apart, under the "
            "stream; the worker started again after each warm shutdown.",
            "Celery's warm shutdown stops taking messages, lets running steps finish and "
            "puts back the messages it had taken; the next worker takes them.",
            stream,
            settled,
            stops,
        )
    )
    check(stream, settled, system)
