"""The pending checkpoints API, a page of 50, one client at a time, against the admin
pages' HTML list of the same rows (same process, same rows, same run)."""

from __future__ import annotations

from bench import wrk
from bench.client import Api
from bench.harness import Bench
from bench.harness import Result
from bench.harness import Row
from bench.harness import alternate
from bench.harness import measured
from bench.harness import median
from bench.harness import say
from bench.harness import wait_until

NAME = "pending_list"
TITLE = "Pending checkpoints list"

P50_TARGET_MS = 20.0
#: Parked jobs: one page of 50 and some more.
PARKED = 60
FILES = {"files": [{"path": "src/app.py", "content": "print('parked')\n"}]}


def run(bench: Bench) -> Result:
    result = Result(NAME, TITLE)
    seconds = bench.settings.pick(5, 1)
    with measured(bench, result):
        web = bench.web()
        bench.worker()
        bench.beat()
        bench.reset()
        api = Api(web.url, bench.submitter_token)
        for _ in range(PARKED):
            api.submit("code-generation", FILES)
        wait_until(
            lambda: (
                bench.sql("SELECT count(*) FROM checkpoints WHERE status = 'PENDING'")[0][0]
                >= PARKED
            ),
            120,
            f"{PARKED} pending checkpoints",
        )
        bench.stop_all()
        web = bench.web()
        targets = {
            "api": (
                f"{web.url}/api/admin/agent-checkpoints?limit=50",
                {"Authorization": f"Bearer {bench.admin_token}"},
            ),
            "html": (
                f"{web.url}/admin/agent-checkpoints",
                {"Cookie": web.admin_cookie(bench.admin_name, bench.password)},
            ),
        }
        for url, headers in targets.values():
            wrk.run(url, connections=1, seconds=1, headers=headers)

        def load(variant: str):
            def one(rep: int) -> wrk.Load:
                url, headers = targets[variant]
                figures = wrk.run(url, connections=1, seconds=seconds, headers=headers)
                say(
                    f"pending list {variant} rep {rep + 1}: p50 {figures.p(50):.1f} ms, "
                    f"p99 {figures.p(99):.1f} ms"
                )
                return figures

            return one

        runs = alternate(bench.settings.reps, ("api", load("api")), ("html", load("html")))
        bench.stop_all()
        bench.reset()
    p50, b50 = median([f.p(50) for f in runs["api"]]), median([f.p(50) for f in runs["html"]])
    p99, b99 = median([f.p(99) for f in runs["api"]]), median([f.p(99) for f in runs["html"]])
    result.rows.append(
        Row(
            path="pending checkpoints API, page of 50",
            agentq=p50,
            baseline=b50,
            unit="ms",
            higher_is_better=False,
            target=f"≤ {P50_TARGET_MS:g} ms p50",
            passed=p50 <= P50_TARGET_MS,
            agentq_text=f"p50 {p50:.1f} ms, p99 {p99:.1f} ms",
            baseline_text=f"admin HTML list of the same rows: p50 {b50:.1f} ms, p99 {b99:.1f} ms",
        )
    )
    for variant, name in (("api", "API, page of 50"), ("html", "admin HTML list")):
        best = sorted(runs[variant], key=lambda f: f.p(50))[len(runs[variant]) // 2]
        result.latencies[name] = best.latency_ms
    return result
