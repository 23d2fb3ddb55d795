"""Memory of the web and the worker after 5,000 and after 50,000 jobs: it must not grow
(within 10%). The jobs are simple-tasks, submitted over HTTP by 4 clients and run by one
worker with 2 processes; memory is the resident set of gunicorn's workers and of the
Celery worker's processes, summed."""

from __future__ import annotations

import time

import psutil

from bench.client import submit_many
from bench.harness import Bench
from bench.harness import Result
from bench.harness import Row
from bench.harness import measured
from bench.harness import say
from bench.harness import wait_until

NAME = "memory"
TITLE = "Memory over many jobs"

GROWTH_TARGET = 1.10


def run(bench: Bench) -> Result:
    result = Result(NAME, TITLE)
    first, second = bench.settings.pick((5_000, 50_000), (200, 1_000))
    with measured(bench, result):
        bench.reset()
        web = bench.web()
        worker = bench.worker()
        bench.beat()
        measured_at = {}
        done = 0
        started = time.monotonic()
        for target in (first, second):
            submit_many(
                web.url, bench.submitter_token, "simple-task", {"memory": True}, target - done
            )
            wait_until(
                lambda target=target: _completed(bench, target, started), 3600, f"{target:,} jobs"
            )
            done = target
            time.sleep(1)
            measured_at[target] = {"web": _rss(web.proc), "worker": _rss(worker, main=True)}
            say(
                f"memory after {target:,} jobs: web {measured_at[target]['web'] / 2**20:.1f} MiB, "
                f"worker {measured_at[target]['worker'] / 2**20:.1f} MiB"
            )
        bench.stop_all()
        bench.reset()
    for role in ("web", "worker"):
        before, after = measured_at[first][role], measured_at[second][role]
        result.rows.append(
            Row(
                path=f"memory of the {role} after {second:,} jobs",
                agentq=after,
                baseline=before,
                unit="bytes",
                higher_is_better=False,
                target=f"≤ {GROWTH_TARGET:.2f}× (within {GROWTH_TARGET - 1:.0%})",
                passed=after <= GROWTH_TARGET * before,
                agentq_text=f"{after / 2**20:.1f} MiB",
                baseline_text=f"after {first:,} jobs: {before / 2**20:.1f} MiB",
            )
        )
    return result


def _rss(proc, *, main: bool = False) -> int:
    """Resident memory of a process's children (and of itself, with ``main``), summed."""
    total = 0
    processes = proc.children() + ([psutil.Process(proc.proc.pid)] if main else [])
    for child in processes:
        try:
            total += child.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def _completed(bench: Bench, target: int, started: float) -> bool:
    done = bench.sql("SELECT count(*) FROM jobs WHERE status = 'COMPLETED'")[0][0]
    now = time.monotonic()
    if now - getattr(_completed, "said", 0) > 10:
        say(f"  {done:,} of {target:,} jobs completed ({done / (now - started):.0f} jobs/s)")
        _completed.said = now
    return done >= target
