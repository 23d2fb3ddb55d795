"""Redis and Postgres restarted, and away for 20 s, under a stream of jobs; two beats."""

from __future__ import annotations

import re
import time

import pytest

from tests.conftest import TMP
from tests.conftest import celery_process
from tests.faults.conftest import scaled
from tests.faults.report import record
from tests.faults.system import Stream
from tests.faults.system import check
from tests.faults.system import figures
from tests.faults.system import kill_at_random

pytestmark = [pytest.mark.acceptance]

#: Seconds every job has, after the last fault, to reach its final state.
BOUND = 120
#: Seconds a server stays away in the outage.
OUTAGE = 20


def restarts_then_outage(server, restarts: int, stream: Stream) -> tuple[float, int]:
    """Restart ``server`` ``restarts`` times, 3 s apart, then stop it for ``OUTAGE`` seconds
    under ``stream``; returns when it was back (``time.monotonic``) and how many submissions
    were answered 201 while it was away."""
    time.sleep(2)
    for _ in range(restarts):
        server.stop()
        server.start()
        time.sleep(3)
    server.stop()
    before = stream.submitted.codes[201]
    try:
        time.sleep(OUTAGE)
        during = stream.submitted.codes[201] - before
    finally:
        server.start()
    return time.monotonic(), during


def test_redis_restarts_and_an_outage(app, servers, system, tokens):
    """Given a stream of jobs, when Redis (AOF on) restarts, and then stays away 20 s while
    clients keep submitting and approving, then submissions and approvals are answered
    201/200 throughout, and every job completes once Redis is back."""
    if servers.redis is None:
        pytest.skip("Redis comes from REDIS_URL (external): the test cannot stop and start it")
    restarts = scaled(2, 5)
    with Stream(system.web.url, *tokens) as stream:
        ended, during = restarts_then_outage(servers.redis, restarts, stream)
        settled = stream.settle(app, since=ended, bound=BOUND)
    record(
        figures(
            "Redis restarted, and down 20 s",
            f"{restarts} Redis restarts (AOF on) 3 s apart, then Redis stopped for {OUTAGE} s "
            f"while the client kept submitting ({during} jobs answered 201 meanwhile) and "
            "approving.",
            "The API commits each job or decision with its dispatch intent (the outbox) and "
            "answers 201/200; the publish that follows fails fast (socket timeouts) and the "
            "sweep publishes the intent once Redis is back. Workers try Redis again every "
            "2 s at most, and reconnect within 2 s of its return; messages "
            "they held come back (AOF keeps queues and kombu's unacked hash). The rate "
            "limiter, whose counters live in Redis, lets requests through while it is away.",
            stream,
            settled,
            restarts + 1,
        )
    )
    assert during > 0, "no submission was answered 201 while Redis was down"
    check(stream, settled, system)
    # Workers tried the lost Redis again every 2 s at most (worker.consumer), as they say.
    said = "\n".join(worker.output() for worker in system.workers)
    intervals = [float(s) for s in re.findall(r"Trying again in ([\d.]+) seconds?", said)]
    assert intervals and max(intervals) <= 2, intervals


def test_postgres_restarts_and_an_outage(app, servers, system, tokens):
    """Given a stream of jobs, when Postgres restarts, and then stays away 20 s, then the API
    answers 503 with Retry-After while it is away (never a bare 500), nothing answered 201
    is lost, and every job completes within seconds of Postgres coming back."""
    if servers.pg is None:
        pytest.skip("Postgres comes from DATABASE_URL (external): the test cannot stop it")
    restarts = scaled(1, 3)
    with Stream(system.web.url, *tokens) as stream:
        ended, _during = restarts_then_outage(servers.pg, restarts, stream)
        time.sleep(2)  # clients see it back
        settled = stream.settle(app, since=ended, bound=BOUND)
    record(
        figures(
            "Postgres restarted, and down 20 s",
            f"{restarts} Postgres restarts, then Postgres stopped for {OUTAGE} s while the "
            "client kept submitting and approving.",
            "The API answers 503 database_unavailable with Retry-After while Postgres is "
            "away; a connection it dropped is replaced on the next request. A step whose "
            "claim cannot reach Postgres sends its message again with backoff (0.5 s "
            "doubling to 5 s) instead of losing it; a step whose result could not be "
            "recorded is re-run when its lease lapses.",
            stream,
            settled,
            restarts + 1,
        )
    )
    assert stream.unavailable > 0, "no 503 while Postgres was down"
    check(stream, settled, system, unavailable_ok=True)


def test_two_beats(app, system, tokens, rng):
    """Given a second beat started by mistake, when jobs stream and pool processes are
    killed (so the sweeps have work), then the doubled sweeps do nothing twice."""
    second = celery_process(
        "beat", "--schedule", str(TMP / "second-beat-schedule"), name="second-beat"
    )
    second.start()
    kills = scaled(3, 10)
    try:
        with Stream(system.web.url, *tokens) as stream:
            for _ in range(kills):
                time.sleep(rng.uniform(1.0, 3.0))
                kill_at_random(system, rng)
                ended = time.monotonic()
            settled = stream.settle(app, since=ended, bound=BOUND)
        assert second.running(), second.output()[-2000:]
    finally:
        second.stop()
    record(
        figures(
            "Two beats",
            f"A second celery beat ran beside the first under the stream, with {kills} "
            "worker processes SIGKILLed to give the sweeps work.",
            "Every sweep action is a guarded transition in Postgres (and a put-back is a "
            "Redis transaction), so two sweeps at once do each thing once.",
            stream,
            settled,
            kills + 1,
        )
    )
    check(stream, settled, system)
