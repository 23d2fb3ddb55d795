"""How soon an approval's continuation starts, on an idle system.

agentq: a ``bench-approval`` job parks at its checkpoint; the client approves it and the
next step notes the time it started (``bench.handlers``). Measured from the approval's
response (the message is on its way before the client hears back) and from its request.

Baselines, same run: Celery alone (``apply_async`` → the task starts) for the first, and
a bare HTTP endpoint doing UPDATE + COMMIT + ``apply_async`` for the second.
"""

from __future__ import annotations

import contextlib
import io
import time
import uuid

from bench import bare
from bench.client import Api
from bench.harness import Bench
from bench.harness import Result
from bench.harness import Row
from bench.harness import alternate
from bench.harness import measured
from bench.harness import median
from bench.harness import percentile
from bench.harness import say
from bench.harness import wait_until

NAME = "approval"
TITLE = "Approval to continuation"

P50_TARGET_MS, P99_TARGET_MS = 5.0, 10.0
REQUEST_FACTOR_TARGET = 1.5
#: Samples of each variant's warm-up pass.
WARM_UP = 3
#: Pause between samples, so each one meets an idle system.
PAUSE = 0.03


def run(bench: Bench) -> Result:
    result = Result(NAME, TITLE)
    samples = bench.settings.pick(100, 12)
    with measured(bench, result):
        web = bench.web()
        bench.worker()
        bench.beat()
        bare_web = bench.web("bench.bare:create_app()", name="bare-web")
        bench.worker("bench.bare", queues=bare.QUEUE, name="bare-worker")
        submitter, reviewer = Api(web.url, bench.submitter_token), Api(web.url, bench.admin_token)
        bare_api = Api(bare_web.url)
        redis = bench.redis()

        def agentq(rep: int) -> list[tuple[float, float]]:
            out = []
            for _ in range(samples if rep >= 0 else WARM_UP):
                job = submitter.submit("bench-approval", {})
                checkpoint = wait_until(
                    lambda job=job: _pending_checkpoint(bench, job["id"]), 30, "the checkpoint"
                )
                time.sleep(PAUSE)
                sent, answered, _ = reviewer.timed(
                    "POST", f"/api/admin/agent-checkpoints/{checkpoint}", {"reason": "bench"}
                )
                time.sleep(PAUSE)
                started = wait_until(lambda job=job: _go_started(bench, job["id"]), 30, "go")
                out.append(((started - sent) * 1000, (started - answered) * 1000))
            _report("agentq", rep, out)
            return out

        def celery_publish(rep: int) -> list[tuple[float, float]]:
            out = []
            for _ in range(samples if rep >= 0 else WARM_UP):
                key = f"stamp:{uuid.uuid4()}"
                time.sleep(PAUSE)
                sent = time.time()
                bare.stamp.apply_async((key,))
                time.sleep(PAUSE)
                started = wait_until(lambda key=key: _stamp(redis, key), 30, "the task")
                out.append(((started - sent) * 1000, (started - sent) * 1000))
            _report("celery publish", rep, out)
            return out

        def bare_http(rep: int) -> list[tuple[float, float]]:
            out = []
            for _ in range(samples if rep >= 0 else WARM_UP):
                checkpoint = bench.sql("INSERT INTO bare_checkpoints DEFAULT VALUES RETURNING id")
                checkpoint_id = str(checkpoint[0][0])
                time.sleep(PAUSE)
                sent, answered, _ = bare_api.timed("POST", f"/checkpoints/{checkpoint_id}")
                time.sleep(PAUSE)
                started = wait_until(lambda k=checkpoint_id: _stamp(redis, k), 30, "the task")
                out.append(((started - sent) * 1000, (started - answered) * 1000))
            _report("bare http", rep, out)
            return out

        for warm in (agentq, celery_publish, bare_http):
            _quiet(warm)
        runs = alternate(
            bench.settings.reps,
            ("agentq", agentq),
            ("celery", celery_publish),
            ("bare_http", bare_http),
        )
        bench.stop_all()
        bench.reset()
    from_request = {k: [s[0] for rep in v for s in rep] for k, v in runs.items()}
    from_response = {k: [s[1] for rep in v for s in rep] for k, v in runs.items()}
    p50 = _median_p(runs["agentq"], 1, 50)
    p99 = _median_p(runs["agentq"], 1, 99)
    c50, c99 = _median_p(runs["celery"], 1, 50), _median_p(runs["celery"], 1, 99)
    result.rows.append(
        Row(
            path="approve → continuation starts, from the response",
            agentq=p50,
            baseline=c50,
            unit="ms",
            higher_is_better=False,
            target=f"p50 ≤ {P50_TARGET_MS:g} ms, p99 ≤ {P99_TARGET_MS:g} ms",
            passed=p50 <= P50_TARGET_MS and p99 <= P99_TARGET_MS,
            agentq_text=f"p50 {p50:.1f} ms, p99 {p99:.1f} ms",
            baseline_text=f"Celery publish → start: p50 {c50:.1f} ms, p99 {c99:.1f} ms",
        )
    )
    r50 = _median_p(runs["agentq"], 0, 50)
    b50, b99 = _median_p(runs["bare_http"], 0, 50), _median_p(runs["bare_http"], 0, 99)
    result.rows.append(
        Row(
            path="approve → continuation starts, from the request",
            agentq=r50,
            baseline=b50,
            unit="ms",
            higher_is_better=False,
            target=f"≤ {REQUEST_FACTOR_TARGET}×",
            passed=r50 <= REQUEST_FACTOR_TARGET * b50,
            agentq_text=f"p50 {r50:.1f} ms, p99 {_median_p(runs['agentq'], 0, 99):.1f} ms",
            baseline_text=f"bare HTTP approve+publish: p50 {b50:.1f} ms, p99 {b99:.1f} ms",
        )
    )
    result.latencies = {
        "agentq, from the response": from_response["agentq"],
        "agentq, from the request": from_request["agentq"],
        "Celery publish → start": from_request["celery"],
        "bare HTTP approve+publish, from the request": from_request["bare_http"],
    }
    return result


def _quiet(fn) -> None:
    """A warm-up pass, not reported."""
    with contextlib.redirect_stdout(io.StringIO()):
        fn(-1)


def _report(name: str, rep: int, out: list[tuple[float, float]]) -> None:
    if rep >= 0:
        say(
            f"approval {name} rep {rep + 1}: from the request p50 "
            f"{percentile([s[0] for s in out], 50):.1f} ms, from the response p50 "
            f"{percentile([s[1] for s in out], 50):.1f} ms, p99 "
            f"{percentile([s[1] for s in out], 99):.1f} ms"
        )


def _median_p(reps: list[list[tuple[float, float]]], which: int, p: float) -> float:
    return median([percentile([s[which] for s in rep], p) for rep in reps])


def _pending_checkpoint(bench: Bench, job_id: str) -> str | None:
    rows = bench.sql(
        "SELECT id FROM checkpoints WHERE job_id = %s AND status = 'PENDING'", (job_id,)
    )
    return str(rows[0][0]) if rows else None


def _go_started(bench: Bench, job_id: str) -> float | None:
    rows = bench.sql(
        "SELECT output->>'startedAt' FROM job_steps "
        "WHERE job_id = %s AND step = 'go' AND status = 'succeeded'",
        (job_id,),
    )
    return float(rows[0][0]) if rows else None


def _stamp(redis, key: str) -> float | None:
    value = redis.get(key)
    return float(value) if value else None
