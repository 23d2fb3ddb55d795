"""The fault suite's figures, and the ``docs/RELIABILITY.md`` that ``make faults`` writes.

Every fault test calls :func:`record` once with what it did and what it saw; the figures
go to ``var/faults/<mode>.json`` (``ci`` in ``make test``, ``full`` in ``make faults``).
``python -m tests.faults.report`` turns the full run's figures into ``docs/RELIABILITY.md``.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import sys
from dataclasses import asdict
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: ``full`` under ``make faults``: more of every fault, more schemathesis cases.
FULL = os.environ.get("AGENTQ_FAULTS") == "full"
MODE = "full" if FULL else "ci"
FIGURES = ROOT / "var" / "faults" / f"{MODE}.json"
DOC = ROOT / "docs" / "RELIABILITY.md"


@dataclass
class Figures:
    """What one fault test did and saw."""

    #: Short name of the fault or attack, the row's first column.
    fault: str
    #: What was done to the system.
    injected: str
    #: What the system does about it (the behaviour the test asserts).
    behaviour: str
    #: Jobs submitted (or cases sent, for schemathesis).
    jobs: int
    #: Faults injected (kills, restarts, outages, racing requests).
    faults: int
    #: Jobs answered 201 that never showed up again.
    lost: int = 0
    #: Steps that advanced a job more than once, and checkpoints with more than one decision.
    duplicated: int = 0
    #: Jobs not in their expected final state within the bound.
    stuck: int = 0
    #: Responses with a 5xx status (503 while Postgres is down is counted apart).
    errors_5xx: int = 0
    #: 503 "database unavailable" answers, expected while Postgres is down.
    unavailable_503: int = 0
    #: Seconds from the end of the fault to the last affected job's final state.
    worst_recovery_s: float | None = None
    #: Seconds from submission to final state of the slowest job (two approvals included).
    slowest_job_s: float | None = None


def record(figures: Figures) -> None:
    """Add (or replace) the figures of ``figures.fault`` in this mode's file."""
    FIGURES.parent.mkdir(parents=True, exist_ok=True)
    rows = _load(FIGURES)
    rows[figures.fault] = asdict(figures)
    FIGURES.write_text(json.dumps(rows, indent=2) + "\n")


def _load(path: Path) -> dict[str, dict]:
    return json.loads(path.read_text()) if path.exists() else {}


def _number(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def write(path: Path = DOC) -> str:
    """Write ``docs/RELIABILITY.md`` from the full run's figures; returns the table."""
    rows = _load(ROOT / "var" / "faults" / "full.json")
    if not rows:
        sys.exit("no figures in var/faults/full.json: run make faults first")
    columns = ["jobs", "faults", "lost", "duplicated", "stuck", "errors_5xx", "unavailable_503"]
    heads = ["jobs", "faults", "lost", "duplicated", "stuck", "5xx", "503 (DB down)"]
    table = [
        "| fault | " + " | ".join(heads) + " | worst recovery (s) | slowest job (s) |",
        "|---|" + "---:|" * (len(heads) + 2),
    ]
    for row in rows.values():
        cells = [_number(row[c]) for c in columns]
        cells += [_number(row.get(c)) for c in ("worst_recovery_s", "slowest_job_s")]
        table.append(f"| {row['fault']} | " + " | ".join(cells) + " |")
    totals = {c: sum(row[c] for row in rows.values()) for c in columns}
    worst = {
        c: max((r[c] for r in rows.values() if r.get(c) is not None), default=None)
        for c in ("worst_recovery_s", "slowest_job_s")
    }
    table.append(
        "| **all** | "
        + " | ".join(f"**{totals[c]}**" for c in columns)
        + "".join(f" | **{_number(v)}**" for v in worst.values())
        + " |"
    )
    details = []
    for row in rows.values():
        details += [f"### {row['fault']}", "", f"**Injected:** {row['injected']}", ""]
        details += [f"**What agentq does:** {row['behaviour']}", ""]
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    text = "\n".join(
        [
            "# Reliability: faults and attacks, and what agentq does about them",
            "",
            "Written by `make faults` (`tests/faults` with `AGENTQ_FAULTS=full`); `make test`",
            "runs the same tests with fewer faults and cases. Each test drives a real system",
            "(Postgres, Redis, Celery worker and beat processes, gunicorn where HTTP matters)",
            "and checks after the fault that every job reached its expected final state within",
            "a bound, none is missing or stuck, no step advanced a job twice (the step ledger)",
            "and no checkpoint holds two decisions.",
            "",
            f"Run of {when} on {platform.machine()}, {os.cpu_count()} cores,",
            f"Python {platform.python_version()}.",
            "",
            "*lost*: jobs answered 201 that did not reach a final state or vanished;",
            "*duplicated*: steps that advanced a job twice plus checkpoints with two decisions;",
            "*stuck*: jobs not final within the bound; *5xx*: server errors other than the",
            "503 the API answers while Postgres is down (counted apart); *worst recovery*:",
            "seconds from the end of the fault until every job was final; *slowest job*:",
            "seconds from submission to final state of the slowest job, two approvals by",
            "the client included (a job that waited on a recovery shows here).",
            "",
            *table,
            "",
            "## The faults",
            "",
            *details,
        ]
    )
    path.write_text(text.rstrip() + "\n")
    return "\n".join(table)


if __name__ == "__main__":
    print(write())
