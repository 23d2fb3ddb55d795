"""The bench's report: PERFORMANCE.md (tables) and performance.png (latency distributions)."""

from __future__ import annotations

import datetime as dt
import platform
import re
import subprocess
from pathlib import Path

from bench.harness import ROOT
from bench.harness import Result
from bench.harness import Settings
from bench.harness import percentile

CAVEAT = (
    "Every figure is measured against a bare baseline **in the same run**, alternated "
    "(agentq, baseline, baseline, agentq, ...) and the median of the repetitions is "
    "reported: the machines are shared and noisy, so the ratios are what carry from one "
    "run to the next, not the absolute numbers."
)


def machine(servers: dict[str, str]) -> dict[str, str]:
    """What the figures were measured on."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import psutil

    return {
        "CPU": f"{cpu}, {psutil.cpu_count()} cores",
        "Memory": f"{psutil.virtual_memory().total / 2**30:.0f} GiB",
        "OS": platform.platform(),
        "Python": platform.python_version(),
        **servers,
        "agentq commit": _commit(),
    }


def _commit() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "app", "worker", "handlers"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
        return head + (" (with uncommitted changes)" if dirty else "")
    except OSError:
        return "unknown"


def _fmt_ratio(row) -> str:
    if row.higher_is_better:
        return f"{row.ratio:.2f}"
    return f"{row.ratio:.2f}×"


def main_table(results: list[Result]) -> list[str]:
    lines = [
        "| path | agentq | bare baseline, same run | ratio | target | |",
        "|---|---|---|---|---|---|",
    ]
    for result in results:
        for row in result.rows:
            lines.append(
                f"| {row.path} | {row.agentq_text} | {row.baseline_text} | {_fmt_ratio(row)} "
                f"| {row.target} | {'pass' if row.passed else '**FAIL**'} |"
            )
    return lines


def _table(rows: list[list[str]]) -> list[str]:
    header, *body = rows
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    return lines


def write(
    results: list[Result],
    out: Path,
    *,
    settings: Settings,
    seconds: float,
    about: dict[str, str],
) -> list[Path]:
    """Write ``PERFORMANCE.md`` and ``performance.png`` into ``out``; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    md, png = out / "PERFORMANCE.md", out / "performance.png"
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# agentq performance",
        "",
        f"Written by `make bench{' QUICK=1' if settings.quick else ''}` on {when}, "
        f"in {seconds / 60:.1f} minutes. {CAVEAT}",
        "",
        *(f"- {k}: {v}" for k, v in about.items()),
        "",
        "## agentq against the bare stack",
        "",
        *main_table(results),
        "",
    ]
    for result in results:
        if not result.tables and not result.notes:
            continue
        lines += [f"## {result.title}", ""]
        for title, rows in result.tables:
            lines += [f"{title}", "", *_table(rows), ""]
        lines += [*(f"- {n}" for n in result.notes), ""] if result.notes else []
    lines += [
        "## Machine load while each benchmark ran",
        "",
        "Load average (1 min), CPU busy (all processes) and CPU used by processes that "
        "are not the bench's (other tenants), averaged over the benchmark's run.",
        "",
        "| benchmark | seconds | load average | CPU busy | other processes' CPU |",
        "|---|---|---|---|---|",
    ]
    for result in results:
        load = result.load
        lines.append(
            f"| {result.name} | {result.seconds:.0f} | {load.get('loadavg', 0):.2f} "
            f"| {load.get('cpu_busy_pct', 0):.0f}% | {load.get('other_cpu_pct', 0):.1f}% |"
        )
    lines += ["", f"![Latency distributions]({png.name})", ""]
    md.write_text("\n".join(lines))
    plot(results, png)
    return [md, png]


README_TABLE = re.compile(r"(<!-- bench:table [^>]*-->\n).*?(<!-- /bench:table -->)", re.S)


def update_readme(results: list[Result], readme: Path, about: dict[str, str]) -> bool:
    """Put the main table into the README's Performance section; False if it has no place."""
    text = readme.read_text()
    if not README_TABLE.search(text):
        return False
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    table = "\n".join(main_table(results))
    stamp = f"Measured {when} at commit {about.get('agentq commit', '?')}:"
    text = README_TABLE.sub(lambda m: f"{m.group(1)}{stamp}\n\n{table}\n\n{m.group(2)}", text)
    readme.write_text(text)
    return True


def plot(results: list[Result], path: Path) -> None:
    """One panel per benchmark with latencies: each series' distribution as a CDF."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [r for r in results if r.latencies]
    if not panels:
        return
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 3.2 * len(panels)), squeeze=False)
    qs = [q / 2 for q in range(0, 201)]
    for ax, result in zip(axes[:, 0], panels, strict=True):
        for name, samples in result.latencies.items():
            if samples:
                ax.plot([percentile(samples, q) for q in qs], qs, label=name)
        ax.set_title(result.title)
        ax.set_xlabel("milliseconds")
        ax.set_ylabel("percentile")
        ax.set_xscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="small", loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def summary(results: list[Result]) -> str:
    return "\n".join(main_table(results))
