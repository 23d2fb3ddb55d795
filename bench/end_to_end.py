"""Jobs through the whole system: submitted over HTTP, run by one worker (2 processes),
approved by an admin client as their checkpoints appear in the pending list, to COMPLETED.

Baseline, same run: a bare Celery chain of as many no-op tasks as the job has steps,
published by the client, on a worker with the same settings and concurrency.
"""

from __future__ import annotations

import os
import threading
import time
import uuid

from bench import bare
from bench.client import Api
from bench.harness import Bench
from bench.harness import CpuMeter
from bench.harness import Result
from bench.harness import Row
from bench.harness import alternate
from bench.harness import cpu_table
from bench.harness import measured
from bench.harness import median
from bench.harness import say
from bench.harness import wait_until

NAME = "end_to_end"
TITLE = "End to end, with approvals"

RATIO_TARGET = 0.5

#: Job type, input, steps and approvals of each job that runs end to end.
JOBS = {
    "data-processing": (
        {"records": [{"name": "ada", "city": "london"}, {"name": "grace", "city": "nyc"}]},
        3,
        2,
    ),
    "code-generation": (
        {"files": [{"path": "src/hello.py", "content": "print('hello')\n"}]},
        2,
        1,
    ),
}


def run(bench: Bench) -> Result:
    result = Result(NAME, TITLE)
    count = bench.settings.pick(300, 40)
    with measured(bench, result):
        web = bench.web()
        worker = bench.worker()
        beat = bench.beat()
        bare_worker = bench.worker("bench.bare", queues=bare.QUEUE, name="bare-worker")
        groups = {
            "web": web.proc.pids,
            "worker": worker.pids,
            "beat": beat.pids,
            "bare worker": bare_worker.pids,
            "Postgres": bench.servers.pids_of("pg"),
            "Redis": bench.servers.pids_of("redis"),
            "client": lambda: {os.getpid()},
        }
        for job_type, (input_data, steps, approvals) in JOBS.items():

            def agentq(rep: int, job_type=job_type, input_data=input_data):
                bench.reset()
                meter = CpuMeter(groups).start()
                rate = _agentq(bench, web.url, job_type, input_data, count, rep)
                return rate, meter.stop(count)

            def chains(rep: int, steps=steps):
                bench.reset()
                meter = CpuMeter(groups).start()
                rate = _chains(bench, steps, count, rep)
                return rate, meter.stop(count)

            agentq(-1)  # warm up
            runs = alternate(bench.settings.reps, ("agentq", agentq), ("bare", chains))
            result.tables.append(
                cpu_table(
                    f"Where the time goes, {job_type}",
                    {variant: [cpu for _rate, cpu in reps] for variant, reps in runs.items()},
                    "job",
                )
            )
            rate = median([r for r, _cpu in runs["agentq"]])
            base = median([r for r, _cpu in runs["bare"]])
            result.rows.append(
                Row(
                    path=f"end to end, {job_type} ({approvals} approval"
                    f"{'s' if approvals > 1 else ''}), 1 worker c=2",
                    agentq=rate,
                    baseline=base,
                    unit="jobs/s",
                    higher_is_better=True,
                    target=f"≥ {RATIO_TARGET}",
                    passed=rate / base >= RATIO_TARGET,
                    agentq_text=f"{rate:.1f} jobs/s",
                    baseline_text=f"bare Celery chain of {steps} no-ops: {base:.1f} jobs/s",
                )
            )
        bench.stop_all()
        bench.reset()
    return result


def _agentq(bench: Bench, url: str, job_type: str, input_data: dict, count: int, rep: int):
    """Submit ``count`` jobs while an admin approves what appears; jobs per second."""
    done = threading.Event()
    errors: list[BaseException] = []

    def approver() -> None:
        api = Api(url, bench.admin_token)
        try:
            while not done.is_set():
                page = api.call("GET", "/api/admin/agent-checkpoints?limit=50")["checkpoints"]
                for checkpoint in page:
                    api.call(
                        "POST",
                        f"/api/admin/agent-checkpoints/{checkpoint['id']}",
                        {"reason": "bench"},
                        expect=(200, 409),
                    )
                if not page:
                    time.sleep(0.01)
        except BaseException as exc:
            errors.append(exc)
            raise

    thread = threading.Thread(target=approver, name="bench-approver", daemon=True)
    started = time.time()
    thread.start()
    api = Api(url, bench.submitter_token)
    for _ in range(count):
        api.submit(job_type, input_data)
    try:
        wait_until(lambda: errors or _completed(bench) >= count, 600, f"{count} {job_type} jobs")
    finally:
        done.set()
        thread.join()
    if errors:
        raise errors[0]
    finished = bench.sql("SELECT extract(epoch FROM max(finished_at)) FROM jobs")[0][0]
    rate = count / (float(finished) - started)
    if rep >= 0:
        say(f"end to end {job_type} agentq rep {rep + 1}: {rate:.1f} jobs/s")
    return rate


def _completed(bench: Bench) -> int:
    failed = bench.sql("SELECT count(*) FROM jobs WHERE status IN ('FAILED', 'CANCELLED')")
    if failed[0][0]:
        raise RuntimeError(f"{failed[0][0]} jobs failed or were cancelled")
    return bench.sql("SELECT count(*) FROM jobs WHERE status = 'COMPLETED'")[0][0]


def _chains(bench: Bench, steps: int, count: int, rep: int) -> float:
    """Publish ``count`` bare chains of ``steps`` no-ops; chains per second."""
    redis = bench.redis()
    counter = f"chains:{uuid.uuid4()}"
    started = time.time()
    for _ in range(count):
        bare.chain_of(steps, counter).apply_async()
    wait_until(lambda: int(redis.get(counter) or 0) >= count, 600, f"{count} chains")
    rate = count / (time.time() - started)
    say(f"end to end bare chain of {steps} rep {rep + 1}: {rate:.1f} chains/s")
    return rate
