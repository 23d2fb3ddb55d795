"""Each Celery worker serves its own processes' event metrics on a port of its own.

Steps run in the worker's pool children, so their counters and histograms
(``app.observability.instruments``) live in several processes. Each worker gives its process tree a
multiprocess directory of its own (``<temp dir>/agentq-worker-metrics-<pid>``, made
empty when the worker starts and removed when it stops; two workers on one machine never
share one); the children write their files there, and the worker's main process sums
them on ``http://WORKER_METRICS_HOST:WORKER_METRICS_PORT/metrics`` (every address and
port 9808 by default; 0: no port, and no directory).

Why a port per worker: workers run on any number of machines that share no filesystem
with the web or with each other, so no one process can read all the files. Each worker
serves what its own processes did, Prometheus scrapes every worker, and
``sum without (instance)`` adds them up; a worker that stops takes its figures with it,
which Prometheus' ``rate()`` and ``increase()`` treat as a counter reset.

The directory must be set before prometheus_client is imported (it picks file-backed
values once, at import): ``worker_celery()`` calls ``prepare()`` before it builds the
app when the command is ``celery worker``, and ``celeryd_init`` makes sure of it for
workers started another way, before the pool forks.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

import click
from celery import signals

from app.observability import multiproc

log = logging.getLogger(__name__)

#: The name of a worker's directory under the temp dir, followed by its main pid.
DIR_PREFIX = "agentq-worker-metrics-"

#: This worker's directory and metrics server, in its main process.
_directory: Path | None = None
_server = None


def is_worker_command() -> bool:
    """Whether this process is being started as ``celery worker`` (not beat, not inspect).

    Celery loads the ``-A`` app inside its command group, whose click context already
    names the subcommand.
    """
    ctx = click.get_current_context(silent=True)
    return ctx is not None and ctx.invoked_subcommand == "worker"


def wanted() -> bool:
    """Whether this worker serves metrics: ``WORKER_METRICS_PORT`` is not 0.

    Read from the environment, as the app's config reads it, before the app exists.
    """
    return int(os.environ.get("WORKER_METRICS_PORT") or 1) != 0


def prepare() -> Path | None:
    """Give this worker's process tree an empty multiprocess directory of its own, unless
    it serves no metrics (then its processes keep their figures to themselves)."""
    global _directory
    if not wanted():
        return None
    if _directory is None or _directory.name != f"{DIR_PREFIX}{os.getpid()}":
        path = Path(tempfile.gettempdir()) / f"{DIR_PREFIX}{os.getpid()}"
        _directory = multiproc.prepare(path)
    return _directory


@signals.celeryd_init.connect
def _ensure_directory(**_kwargs) -> None:
    """Before the pool forks: the directory, if ``worker_celery()`` could not set it early."""
    prepare()


@signals.worker_ready.connect
def _serve(sender, **_kwargs) -> None:
    """Serve the sum of this worker's processes on ``WORKER_METRICS_HOST:WORKER_METRICS_PORT``."""
    global _server
    config = sender.app.flask_app.config
    port, host = config["WORKER_METRICS_PORT"], config["WORKER_METRICS_HOST"]
    if not port:
        log.info("metrics: WORKER_METRICS_PORT is 0, no metrics port")
        return
    from prometheus_client import CollectorRegistry
    from prometheus_client import start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry(auto_describe=False)
    MultiProcessCollector(registry, path=str(prepare()))
    try:
        _server, _thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:  # the worker runs on without its metrics port
        log.error(
            "metrics: cannot serve on %s:%s (%s); give each worker on this machine its own "
            "WORKER_METRICS_PORT",
            host,
            port,
            exc,
        )
        return
    log.info("metrics: serving this worker's metrics on http://%s:%s/metrics", host, port)


@signals.worker_process_shutdown.connect
def _process_exited(pid: int, **_kwargs) -> None:
    multiproc.mark_process_dead(pid)


@signals.worker_shutdown.connect
def _stop_serving(**_kwargs) -> None:
    global _server
    if _server is not None:
        _server.shutdown()
        _server.server_close()
        _server = None
    if _directory is not None and _directory.name == f"{DIR_PREFIX}{os.getpid()}":
        shutil.rmtree(_directory, ignore_errors=True)
