"""The command lines of agentq's web, worker and beat, written once.

``agentq worker`` and ``agentq beat`` become these commands (``os.execvp``: the same
pid, the same signals); ``agentq dev``, the test fixtures and the benchmarks start them
directly, without loading the CLI first. The Procfile's ``web`` is ``web_argv``'s with
the host's port and worker count.
"""

from __future__ import annotations

import sys

from app.config import home
from app.observability.logs import log_format


def _celery(*args: str) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "worker", *args]


def worker_argv(*args: str, queues: str | None = None) -> list[str]:
    """A Celery worker on ``queues`` (comma-separated; None: every queue of ``app.routing``);
    ``args`` go to celery."""
    consume = ("-Q", queues) if queues else ()
    return _celery("worker", "--loglevel", "INFO", *consume, *args)


def beat_argv(*args: str) -> list[str]:
    """Celery beat, which schedules the sweeps, its schedule file in ``AGENTQ_HOME``;
    ``args`` go to celery."""
    home().mkdir(parents=True, exist_ok=True)
    schedule = ("--schedule", str(home() / "celerybeat-schedule"))
    # Beat prints its banner before logging is set up: left out of JSON logs.
    quiet = ("--quiet",) if log_format() == "json" else ()
    return _celery(*quiet, "beat", "--loglevel", "INFO", *schedule, *args)


def web_argv(bind: str, *args: str, app: str = "app:create_app()") -> list[str]:
    """gunicorn serving ``app`` on ``bind`` with agentq's hooks (multiprocess metrics, JSON
    logs: ``app.observability.gunicorn_conf``) and the access log on stdout; ``args`` go to
    gunicorn (``--workers``, ...)."""
    config = ("--config", "python:app.observability.gunicorn_conf")
    return [
        sys.executable,
        "-m",
        "gunicorn",
        *config,
        "--bind",
        bind,
        "--access-logfile",
        "-",
        *args,
        app,
    ]


def argv(command: str, *args: str) -> list[str]:
    """The command line of ``agentq worker|beat *args``."""
    return {"worker": worker_argv, "beat": beat_argv}[command](*args)
