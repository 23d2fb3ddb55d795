"""gunicorn hooks for agentq's web process, so ``/api/metrics`` sums every gunicorn worker.

::

    gunicorn --config python:app.observability.gunicorn_conf --workers 3 \
        --bind 0.0.0.0:8000 'app:create_app()'

Each gunicorn worker writes its event and HTTP metrics to files of its own in
``PROMETHEUS_MULTIPROC_DIR`` (``app.observability.multiproc``); whichever worker answers a scrape
sums the files of all of them, including workers that have exited (``max_requests``,
a crash), so nothing counted is lost. This module only adds hooks: ``--bind``,
``--workers`` and the other options are given as usual.

- ``on_starting``: the master uses ``PROMETHEUS_MULTIPROC_DIR`` if it is set, or a new
  directory under the system temp dir, and empties it before any worker starts (the
  workers inherit it). Not with ``--preload``, which imports the app earlier.
- ``child_exit``: ``mark_process_dead`` for the worker that exited.
- ``on_exit``: removes the directory if the master made it.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from app.observability import multiproc

#: Worker processes: ``WEB_CONCURRENCY``, or 2.
workers = int(os.environ.get("WEB_CONCURRENCY") or 2)
#: Threads per worker: ``WEB_THREADS``; more than 1 makes gunicorn use its gthread worker.
threads = int(os.environ.get("WEB_THREADS") or 1)

#: Logs in LOG_FORMAT (JSON by default): gunicorn's error and access lines and the app's
#: records, with the request id (``app.observability.logs``).
logger_class = "app.observability.logs.GunicornLogger"

#: gunicorn 27's control socket has one path per user (~/.gunicorn/gunicorn.ctl), which
#: several masters on a machine would fight over; agentq does not use it.
control_socket_disable = True

#: The directory this master made (removed when it exits), if it made one.
_made: str | None = None


def on_starting(server) -> None:
    global _made
    directory = multiproc.current()
    if directory is None:
        directory = _made = tempfile.mkdtemp(prefix="agentq-web-metrics-")
    # A master re-executed by USR2 (``server.master_pid`` set) shares the directory with
    # the old master's workers, which still write to it: keep their files.
    multiproc.prepare(directory, wipe=not server.master_pid)
    server.log.info("metrics: multiprocess directory %s", directory)


def child_exit(server, worker) -> None:
    multiproc.mark_process_dead(worker.pid)


def on_exit(server) -> None:
    if _made:
        shutil.rmtree(_made, ignore_errors=True)
