"""20,000 jobs parked at their approval checkpoints: what do they cost?

They are made the real way (submitted over HTTP, their first step run by the worker).
Then: the worker slots they hold and the broker messages they leave (both must be 0),
the pending list's first and last page (p50 ≤ 20 ms), a fresh simple-task's latency
(creation to completion, within 1.5× of the empty system) and the CPU the idle system
uses. The empty system is measured in the same run, before parking and after the
parked jobs are deleted.
"""

from __future__ import annotations

import time

import psutil

from bench import wrk
from bench.client import Api
from bench.client import submit_many
from bench.harness import Bench
from bench.harness import Result
from bench.harness import Row
from bench.harness import measured
from bench.harness import median
from bench.harness import percentile
from bench.harness import say
from bench.harness import wait_until

NAME = "parked"
TITLE = "Parked jobs"

PAGE_P50_TARGET_MS = 20.0
LATENCY_FACTOR_TARGET = 1.5
FILES = {"files": [{"path": "src/parked.py", "content": "print('parked')\n"}]}


def run(bench: Bench) -> Result:
    result = Result(NAME, TITLE)
    count = bench.settings.pick(20_000, 300)
    samples = bench.settings.pick(30, 6)
    idle_seconds = bench.settings.pick(10, 4)
    with measured(bench, result):
        bench.reset()
        web = bench.web()
        worker = bench.worker()
        beat = bench.beat()
        system = [web.proc, worker, beat]
        api = Api(web.url, bench.submitter_token)
        latency = {"empty": [], "parked": []}
        idle = {}
        _latencies(bench, api, samples, "empty (warming up)")
        latency["empty"].append(_latencies(bench, api, samples, "empty"))
        idle["empty"] = _idle_cpu(bench, system, idle_seconds)

        say(f"parked: parking {count:,} code-generation jobs")
        started = time.monotonic()
        submit_many(web.url, bench.submitter_token, "code-generation", FILES, count)
        wait_until(
            lambda: _progress(bench, count, started), count / 5 + 120, f"{count:,} parked jobs"
        )
        parking_rate = count / (time.monotonic() - started)
        time.sleep(bench.settings.pick(5, 2))
        slots = _active_tasks(bench)
        messages = _broker_messages(bench)
        idle["parked"] = _idle_cpu(bench, system, idle_seconds)
        pages = {"first": [], "last": []}
        urls = _page_urls(bench, web.url, count)
        headers = {"Authorization": f"Bearer {bench.admin_token}"}
        for rep in range(bench.settings.reps):
            latency["parked"].append(_latencies(bench, api, samples, "parked"))
            for page, url in urls.items():
                figures = wrk.run(
                    url, connections=1, seconds=bench.settings.pick(4, 2), headers=headers
                )
                pages[page].append(figures)
                say(f"parked: pending list, {page} page, rep {rep + 1}: p50 {figures.p(50):.1f} ms")
        say("parked: deleting the parked jobs")
        bench.sql("DELETE FROM jobs")
        bench.sql("VACUUM ANALYZE jobs, checkpoints, job_steps, job_logs")
        for _ in range(bench.settings.reps - 1):
            latency["empty"].append(_latencies(bench, api, samples, "empty"))
        bench.stop_all()
        bench.reset()

    empty_p50 = median([percentile(r, 50) for r in latency["empty"]])
    parked_p50 = median([percentile(r, 50) for r in latency["parked"]])
    for page in ("first", "last"):
        p50 = median([f.p(50) for f in pages[page]])
        p99 = median([f.p(99) for f in pages[page]])
        result.rows.append(
            Row(
                path=f"{count:,} parked jobs: pending list, {page} page of 50",
                agentq=p50,
                baseline=PAGE_P50_TARGET_MS,
                unit="ms",
                higher_is_better=False,
                target=f"p50 ≤ {PAGE_P50_TARGET_MS:g} ms",
                passed=p50 <= PAGE_P50_TARGET_MS,
                agentq_text=f"p50 {p50:.1f} ms, p99 {p99:.1f} ms",
                baseline_text="(target)",
            )
        )
    result.rows.append(
        Row(
            path=f"{count:,} parked jobs: a fresh simple-task, created → completed",
            agentq=parked_p50,
            baseline=empty_p50,
            unit="ms",
            higher_is_better=False,
            target=f"≤ {LATENCY_FACTOR_TARGET}×",
            passed=parked_p50 <= LATENCY_FACTOR_TARGET * empty_p50,
            agentq_text=f"p50 {parked_p50:.1f} ms",
            baseline_text=f"the empty system: p50 {empty_p50:.1f} ms",
        )
    )
    result.tables.append(
        (
            f"{count:,} code-generation jobs parked at their approval checkpoint "
            f"(parked at {parking_rate:.0f} jobs/s, submitted by 4 clients):",
            [
                ["measure", "parked", "empty", "target", ""],
                ["worker slots busy", str(slots), "0", "0", _ok(slots == 0)],
                [
                    "broker messages (every priority list, unacked)",
                    str(messages),
                    "0",
                    "0",
                    _ok(messages == 0),
                ],
                [
                    f"CPU of web, worker, beat, Postgres, Redis while idle ({idle_seconds} s)",
                    f"{idle['parked']:.1f}% of a core",
                    f"{idle['empty']:.1f}% of a core",
                    "",
                    "",
                ],
            ],
        )
    )
    result.latencies = {
        "simple-task created → completed, empty": [x for r in latency["empty"] for x in r],
        f"simple-task created → completed, {count:,} parked": [
            x for r in latency["parked"] for x in r
        ],
    }
    return result


def _ok(passed: bool) -> str:
    return "pass" if passed else "**FAIL**"


def _progress(bench: Bench, count: int, started: float) -> bool:
    parked = bench.sql("SELECT count(*) FROM checkpoints WHERE status = 'PENDING'")[0][0]
    now = time.monotonic()
    if now - getattr(_progress, "said", 0) > 10:
        say(f"  {parked:,} of {count:,} parked ({parked / (now - started):.0f} jobs/s)")
        _progress.said = now
    return parked >= count


def _latencies(bench: Bench, api: Api, samples: int, label: str) -> list[float]:
    """Creation to completion of ``samples`` simple-tasks, one at a time, in ms."""
    out = []
    for _ in range(samples):
        job = api.submit("simple-task", {"bench": label})
        wait_until(
            lambda job=job: (
                bench.sql("SELECT status FROM jobs WHERE id = %s", (job["id"],))[0][0]
                == "COMPLETED"
            ),
            60,
            "a simple-task",
        )
        ms = bench.sql(
            "SELECT extract(epoch FROM finished_at - created_at) * 1000 FROM jobs WHERE id = %s",
            (job["id"],),
        )[0][0]
        out.append(float(ms))
        time.sleep(0.05)
    say(f"parked: simple-task on the {label} system: p50 {percentile(out, 50):.1f} ms")
    return out


def _idle_cpu(bench: Bench, system, seconds: float) -> float:
    """CPU the system's processes used while nothing was asked of them, % of one core."""

    def cpu() -> float:
        total = 0.0
        pids = bench.servers.pids().union(*(p.pids() for p in system))
        for pid in pids:
            try:
                times = psutil.Process(pid).cpu_times()
                total += times.user + times.system
            except psutil.NoSuchProcess:
                pass
        return total

    before = cpu()
    time.sleep(seconds)
    return 100 * (cpu() - before) / seconds


def _active_tasks(bench: Bench) -> int:
    replies = bench.app.extensions["celery"].control.inspect(timeout=2).active() or {}
    return sum(len(tasks) for tasks in replies.values())


def _broker_messages(bench: Bench) -> int:
    redis = bench.redis()
    waiting = sum(redis.llen(key) for key in redis.scan_iter("agentq.steps*"))
    return waiting + redis.hlen("unacked")


def _page_urls(bench: Bench, url: str, count: int) -> dict[str, str]:
    from app.paging import encode_cursor

    created, checkpoint_id = bench.sql(
        "SELECT created_at, id FROM checkpoints WHERE status = 'PENDING' "
        "ORDER BY created_at, id OFFSET %s LIMIT 1",
        (count - 51,),
    )[0]
    base = f"{url}/api/admin/agent-checkpoints?limit=50"
    return {"first": base, "last": f"{base}&cursor={encode_cursor(created, checkpoint_id)}"}
