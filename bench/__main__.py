"""``python -m bench`` (``make bench``): every benchmark, then the report.

::

    python -m bench                 # the full run: docs/PERFORMANCE.md, docs/performance.png,
                                    # and the table of the README's Performance section
    python -m bench --quick         # a short run (under 3 minutes): var/bench/
    python -m bench --only enqueue,approval

With DATABASE_URL and REDIS_URL set, the bench uses those servers (their tables are
emptied: give it a database of its own); otherwise it starts its own embedded Postgres
(fsync on) and Redis, as ``make test`` does.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback
from pathlib import Path

from bench import report
from bench import wrk
from bench.harness import ROOT
from bench.harness import Bench
from bench.harness import Settings
from bench.harness import say

#: The benchmark modules, in the order they run.
BENCHMARKS = [
    "census",
    "enqueue",
    "approval",
    "end_to_end",
    "pending_list",
    "parked",
    "memory",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run, under 3 minutes")
    parser.add_argument("--only", help="comma-separated benchmark names: " + ", ".join(BENCHMARKS))
    parser.add_argument("--out", type=Path, help="where to write the report")
    parser.add_argument("--keep", action="store_true", help="keep the servers' data and logs")
    args = parser.parse_args(argv)
    names = args.only.split(",") if args.only else BENCHMARKS
    unknown = set(names) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmarks: {', '.join(sorted(unknown))}")
    if not wrk.available():
        parser.error("wrk is not installed: apt-get install wrk (make bench installs it as root)")
    out = args.out or (ROOT / "var" / "bench" if args.quick else ROOT / "docs")
    settings = Settings(quick=args.quick, keep=args.keep)
    say(f"agentq bench ({'quick' if args.quick else 'full'}): {', '.join(names)}")
    started = time.monotonic()
    bench = Bench(settings)
    about = report.machine(bench.versions())
    results, failed = [], []
    try:
        for name in names:
            module = importlib.import_module(f"bench.{name}")
            say(f"== {name}: {module.TITLE}")
            try:
                results.append(module.run(bench))
            except Exception:
                traceback.print_exc()
                failed.append(name)
                bench.stop_all()
            say(f"== {name} done")
    finally:
        bench.close()
    written = report.write(
        results, out, settings=settings, seconds=time.monotonic() - started, about=about
    )
    if not args.quick and not args.only and args.out is None:
        if report.update_readme(results, ROOT / "README.md", about):
            written.append(ROOT / "README.md")
    print(report.summary(results))
    names = [str(p.relative_to(ROOT) if p.is_relative_to(ROOT) else p) for p in written]
    say(f"wrote {', '.join(names)}")
    if failed:
        say(f"benchmarks that failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
