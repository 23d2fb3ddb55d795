"""The directory where a process tree keeps its prometheus_client multiprocess files.

Gunicorn workers and Celery pool children are separate processes; a counter kept in
one of them is invisible to the process that answers a scrape. In prometheus_client's
multiprocess mode each process writes its counters and histograms to files of its own
in ``PROMETHEUS_MULTIPROC_DIR`` and the scrape sums the files of every process, the
exited ones included, so nothing counted is lost when a process is recycled.

The mode is chosen when prometheus_client is first imported, so the directory must be
set before that: ``app.observability.gunicorn_conf`` does it in the gunicorn master, and
``app.observability.worker_metrics`` in each Celery worker's main process; their children
inherit it.
This module imports no prometheus_client at import time for that reason.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

#: The environment variable prometheus_client reads.
ENV = "PROMETHEUS_MULTIPROC_DIR"


def current() -> str | None:
    """The multiprocess directory of this process, or None in single-process mode."""
    return os.environ.get(ENV) or None


def prepare(path: str | os.PathLike, *, wipe: bool = True) -> Path:
    """Make ``path`` this process tree's multiprocess directory, emptied unless ``wipe=False``.

    Files left by an earlier run would be summed into this one's figures: a fresh start
    counts from zero (Prometheus' ``rate()`` and ``increase()`` take a counter reset in
    their stride).
    """
    path = Path(path)
    if wipe and path.is_dir():
        for entry in path.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
    path.mkdir(parents=True, exist_ok=True)
    os.environ[ENV] = str(path)
    _use_multiprocess_values()
    return path


def _use_multiprocess_values() -> None:
    """Switch prometheus_client to file-backed values if it was imported before the directory
    was set (it picks its value class once, at import).

    Metrics whose values already exist keep them in memory; agentq's event metrics all have
    labels, and a labelled metric makes its values on first use, so they land in the files.
    """
    values = sys.modules.get("prometheus_client.values")
    if values is not None and not getattr(values.ValueClass, "_multiprocess", False):
        values.ValueClass = values.MultiProcessValue()


def mark_process_dead(pid: int) -> None:
    """Tell prometheus_client that process ``pid`` of this tree has exited.

    Only its ``live*`` gauge files are removed; its counters and histograms stay summed.
    """
    path = current()
    if path:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, path)
