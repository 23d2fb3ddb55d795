"""POST /api/agent-jobs under load (wrk, 8 and 32 connections), against a bare endpoint
that does an INSERT, a COMMIT and an ``apply_async`` under the same gunicorn settings.

No worker runs: this measures the submission path alone (the messages wait in Redis).
"""

from __future__ import annotations

import json

from bench import wrk
from bench.harness import Bench
from bench.harness import CpuMeter
from bench.harness import Result
from bench.harness import Row
from bench.harness import alternate
from bench.harness import cpu_table
from bench.harness import measured
from bench.harness import median
from bench.harness import say

NAME = "enqueue"
TITLE = "Job submission under load"

BODY = json.dumps(
    {
        "jobType": "simple-task",
        "taskDescription": "bench",
        "inputData": {"source": "wrk", "n": 1},
        "priority": 5,
    }
)

#: p99 at 8 connections on an idle machine, milliseconds.
P99_TARGET_MS = 15.0
RATIO_TARGET = 0.7


def run(bench: Bench) -> Result:
    result = Result(NAME, TITLE)
    seconds = bench.settings.pick(10, 2)
    with measured(bench, result):
        web = bench.web()
        bare = bench.web("bench.bare:create_app()", name="bare-web")
        targets = {
            "agentq": (
                web.url + "/api/agent-jobs",
                {"Authorization": f"Bearer {bench.submitter_token}"},
            ),
            "bare": (bare.url + "/jobs", {}),
        }
        groups = {
            "agentq web": web.proc.pids,
            "bare web": bare.proc.pids,
            "Postgres": bench.servers.pids_of("pg"),
            "Redis": bench.servers.pids_of("redis"),
        }
        for url, headers in targets.values():  # warm both up: imports, connections
            wrk.run(url, connections=8, seconds=1, method="POST", body=BODY, headers=_json(headers))
        for connections in (8, 32):

            def load(variant: str, connections=connections):
                def one(rep: int) -> tuple[wrk.Load, dict[str, float]]:
                    bench.reset()
                    url, headers = targets[variant]
                    meter = CpuMeter(groups).start()
                    figures = wrk.run(
                        url,
                        connections=connections,
                        seconds=seconds,
                        method="POST",
                        body=BODY,
                        headers=_json(headers),
                    )
                    say(
                        f"enqueue c={connections} {variant} rep {rep + 1}: "
                        f"{figures.rate:.0f} req/s, p50 {figures.p(50):.1f} ms, "
                        f"p99 {figures.p(99):.1f} ms"
                    )
                    return figures, meter.stop(figures.requests)

                return one

            runs = alternate(
                bench.settings.reps, ("agentq", load("agentq")), ("bare", load("bare"))
            )
            loads = {variant: [figures for figures, _cpu in reps] for variant, reps in runs.items()}
            result.rows.append(_row(connections, loads["agentq"], loads["bare"]))
            for variant, reps in loads.items():
                best = sorted(reps, key=lambda f: f.rate)[len(reps) // 2]
                result.latencies[f"POST c={connections}: {variant}"] = best.latency_ms
            result.tables.append(
                cpu_table(
                    f"Where the time goes at {connections} connections",
                    {variant: [cpu for _figures, cpu in reps] for variant, reps in runs.items()},
                    "request",
                )
            )
        bench.stop_all()
        bench.reset()
    return result


def _json(headers: dict[str, str]) -> dict[str, str]:
    return {**headers, "Content-Type": "application/json"}


def _row(connections: int, agentq: list[wrk.Load], bare: list[wrk.Load]) -> Row:
    rate, base = median([f.rate for f in agentq]), median([f.rate for f in bare])
    p50, p99 = median([f.p(50) for f in agentq]), median([f.p(99) for f in agentq])
    b50, b99 = median([f.p(50) for f in bare]), median([f.p(99) for f in bare])
    ratio_ok = rate / base >= RATIO_TARGET
    if connections == 8:
        target = f"≥ {RATIO_TARGET}, p99 ≤ {P99_TARGET_MS:g} ms on an idle machine"
        passed = ratio_ok and p99 <= P99_TARGET_MS
    else:
        target, passed = f"≥ {RATIO_TARGET}", ratio_ok
    return Row(
        path=f"POST /api/agent-jobs, wrk c={connections}",
        agentq=rate,
        baseline=base,
        unit="req/s",
        higher_is_better=True,
        target=target,
        passed=passed,
        agentq_text=f"{rate:.0f} req/s, p50 {p50:.1f} ms, p99 {p99:.1f} ms",
        baseline_text=f"INSERT+COMMIT+apply_async endpoint: {base:.0f} req/s, "
        f"p50 {b50:.1f} ms, p99 {b99:.1f} ms",
    )
