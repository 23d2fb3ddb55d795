"""Logs: one JSON object a line from web, worker and beat, or plain text for people.

``LOG_FORMAT=json`` (the default) writes each record as one JSON object on one line::

    {"level": "INFO", "logger": "worker.steps", "message": "step prepare of job 5e0f...:
     advanced", "job_id": "5e0f...", "job_type": "test-flaky", "step": "prepare",
     "duration_ms": 12, "time": "2026-11-30T10:00:00.123456+00:00"}

``LOG_FORMAT=text`` writes ``time LEVEL logger [job_id=... step=...] message`` for
people at a terminal (``agentq dev`` picks it when its output is a terminal).

Every line carries what is known about the work in hand: ``job_id``, ``job_type``,
``step`` and ``checkpoint_id``, bound by the step runner (``worker.steps``) and by the
API views, and on web lines the ``request_id`` (the request's ``X-Request-ID``, or one
made for it, sent back in the response's ``X-Request-ID``). The fields live in a
context variable, so each request, task and thread sees its own.

Where each process is set up:

- web: gunicorn's ``logger_class = "app.observability.logs.GunicornLogger"``
  (``app/observability/gunicorn_conf.py``)
  formats gunicorn's error and access logs and the root logger;
- worker and beat: the ``setup_logging`` Celery signal (connected below) calls
  ``configure``, so Celery installs no handlers of its own.
"""

from __future__ import annotations

import contextvars
import logging
import os
import re
import sys
import uuid
from collections.abc import Iterator
from collections.abc import Mapping
from contextlib import contextmanager
from types import MappingProxyType
from typing import Any

from celery import signals
from flask import Flask
from flask import g
from flask import request
from gunicorn.glogging import Logger as _GunicornBaseLogger
from pythonjsonlogger.json import JsonFormatter

#: The context fields, in the order the text format shows them.
FIELDS = ("request_id", "job_id", "job_type", "step", "checkpoint_id")
#: Accepted incoming request ids; anything else is replaced by one made here.
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")
REQUEST_ID_HEADER = "X-Request-ID"

_context: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar(
    "agentq_log_context", default=MappingProxyType({})
)


def log_format() -> str:
    """``json`` or ``text``, from ``LOG_FORMAT`` (``json`` when unset or unknown)."""
    return "text" if (os.environ.get("LOG_FORMAT") or "").strip().lower() == "text" else "json"


# -- Context -----------------------------------------------------------------------------


def bind(**fields: Any) -> None:
    """Add fields to every later line of this request, task or thread (None values skipped).

    ``bind(job_id=job.id, job_type=job.job_type)``
    """
    _context.set(MappingProxyType({**_context.get(), **_clean(fields)}))


@contextmanager
def bound(**fields: Any) -> Iterator[None]:
    """Add fields to the lines logged inside the block; the block's end takes them away.

    ``with bound(job_id=claim.job_id, step=claim.step): ...``
    """
    token = _context.set(MappingProxyType({**_context.get(), **_clean(fields)}))
    try:
        yield
    finally:
        _context.reset(token)


def decided(checkpoint, outcome, *, by: str, channel: str) -> None:
    """Bind a decided checkpoint's job to this request and log the decision, and through
    which channel (``api``, ``admin``) it came."""
    bind(job_id=checkpoint.job_id, job_type=checkpoint.handler, checkpoint_id=checkpoint.id)
    logging.getLogger("app.decisions").info(
        "checkpoint %s of job %s %s by %s",
        checkpoint.id,
        checkpoint.job_id,
        str(outcome.value).lower(),
        by,
        extra={"outcome": str(outcome.value).lower(), "channel": channel},
    )


def context() -> dict[str, str]:
    """The fields bound here now."""
    return dict(_context.get())


def _clean(fields: Mapping[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in fields.items() if v is not None}


class ContextFilter(logging.Filter):
    """Copies the bound fields onto each record (a field given in ``extra`` wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _context.get().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


# -- Formats -------------------------------------------------------------------------------


class JsonLineFormatter(JsonFormatter):
    """One JSON object a line: level, logger, message, time, the context and any ``extra``."""

    def __init__(self) -> None:
        super().__init__(
            "%(levelname)s %(name)s %(process)d %(message)s",
            rename_fields={"levelname": "level", "name": "logger", "process": "pid"},
            timestamp="time",
        )

    def process_log_record(self, log_data: dict) -> dict:
        # The time first: it is what people and tools sort and scan by.
        return {"time": log_data.pop("time", None), **log_data}


class AccessJsonFormatter(JsonLineFormatter):
    """Gunicorn's access lines as JSON, with the request's fields and its request id."""

    def add_fields(self, log_data: dict, record: logging.LogRecord, message_dict: dict) -> None:
        super().add_fields(log_data, record, message_dict)
        atoms = record.args if isinstance(record.args, Mapping) else {}
        if not atoms:
            return
        status = str(atoms.get("s") or "")
        log_data.update(
            {
                "remote_addr": atoms.get("h"),
                "method": atoms.get("m"),
                "path": atoms.get("U"),
                "query": atoms.get("q") or None,
                "status": int(status) if status.isdigit() else status,
                "bytes": atoms.get("B"),
                "duration_ms": atoms.get("M"),
                "user_agent": atoms.get("a"),
                "request_id": atoms.get("{x-request-id}o") or atoms.get("{x-request-id}i"),
            }
        )


class TextFormatter(logging.Formatter):
    """``time LEVEL logger [job_id=... step=...] message``, for people."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s%(agentq_context)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        bound_here = [f"{k}={getattr(record, k)}" for k in FIELDS if getattr(record, k, None)]
        values = {
            **record.__dict__,
            "agentq_context": f" [{' '.join(bound_here)}]" * bool(bound_here),
        }
        return self._style._fmt % values


def formatter(fmt: str | None = None) -> logging.Formatter:
    """The formatter of ``fmt`` (``json`` or ``text``; by default ``LOG_FORMAT``)."""
    return TextFormatter() if (fmt or log_format()) == "text" else JsonLineFormatter()


def configure(
    *, level: int | str = logging.INFO, logfile: str | None = None, fmt: str | None = None
) -> logging.Handler:
    """Send the root logger's records, with the context fields, to stderr (or ``logfile``).

    Replaces the handler an earlier call installed; leaves other handlers alone.
    """
    handler: logging.Handler = (
        logging.FileHandler(logfile) if logfile else logging.StreamHandler(sys.stderr)
    )
    handler.setFormatter(formatter(fmt))
    handler.addFilter(ContextFilter())
    handler._agentq = True  # type: ignore[attr-defined]
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_agentq", False)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level)
    # Python's warnings go through logging too, so they come out in the same format.
    logging.captureWarnings(True)
    return handler


# -- Web -------------------------------------------------------------------------------------


class GunicornLogger(_GunicornBaseLogger):
    """Gunicorn's logger, writing its error and access logs and the app's records in LOG_FORMAT.

    Honours gunicorn's own options (``--error-logfile``, ``--access-logfile``,
    ``--log-level``): only the formats change.
    """

    def setup(self, cfg) -> None:
        super().setup(cfg)
        fmt = log_format()
        for handler in self.error_log.handlers:
            handler.setFormatter(formatter(fmt))
            handler.addFilter(ContextFilter())
        if fmt == "json":
            for handler in self.access_log.handlers:
                handler.setFormatter(AccessJsonFormatter())
        configure(level=self.loglevel, fmt=fmt)


def request_id() -> str | None:
    """The current request's id (None outside a request)."""
    return g.get("request_id")


def init_app(app: Flask) -> None:
    """Give every request an id, bind it to its log lines and send it back in the response.

    Call it before other extensions add ``before_request`` hooks: one of those may
    answer the request itself, and its lines should carry the id too.
    """

    @app.before_request
    def _bind_request_id() -> None:
        incoming = request.headers.get(REQUEST_ID_HEADER, "")
        g.request_id = incoming if REQUEST_ID.match(incoming) else uuid.uuid4().hex
        g.log_context_token = _context.set(MappingProxyType({"request_id": g.request_id}))

    @app.after_request
    def _send_request_id(response):
        if g.get("request_id"):
            response.headers[REQUEST_ID_HEADER] = g.request_id
        return response

    @app.teardown_request
    def _unbind(_exc) -> None:
        token = g.pop("log_context_token", None)
        if token is not None:
            try:
                _context.reset(token)
            except ValueError:  # set in another context (a copied one): nothing to undo here
                pass


# -- Worker and beat -----------------------------------------------------------------------


#: Celery's own line for each task received and each task succeeded: the step runner logs
#: one line per step attempt with more in it (job, step, attempt, outcome, duration), so
#: these say only what that line says. Their warnings and errors still come through.
PER_TASK_LOGGERS = ("celery.app.trace", "celery.worker.strategy")


class SentAtDebug(logging.Filter):
    """Beat's line for each task it sends (``Scheduler: Sending due task``), made DEBUG: beat
    sends only the sweep, every ``SWEEP_INTERVAL`` seconds, and the sweep says itself, at
    INFO, when it acted. ``agentq beat --loglevel DEBUG`` shows them again."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO and str(record.msg).startswith("Scheduler: Sending"):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


@signals.setup_logging.connect
def _celery_logging(loglevel=logging.INFO, logfile=None, **_kwargs) -> None:
    """Celery's worker and beat log through ``configure``; connected, Celery adds no handler."""
    configure(level=loglevel or logging.INFO, logfile=logfile or None)
    for name in PER_TASK_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    beat = logging.getLogger("celery.beat")
    if not any(isinstance(f, SentAtDebug) for f in beat.filters):
        beat.addFilter(SentAtDebug())


@signals.celeryd_init.connect
def _worker_init(instance=None, options=None, **_kwargs) -> None:
    """Log in LOG_FORMAT from the worker's start, and leave out its banner in JSON.

    Runs before Celery sets up logging: what it warns about while starting (running as
    root, for one) comes out in the same format. The banner is plain text on stdout;
    Celery logs ``<hostname> ready.`` once it consumes, which says the same to a machine.
    """
    level = (options or {}).get("loglevel") or logging.INFO
    configure(level=level.upper() if isinstance(level, str) else level)
    if log_format() == "json" and instance is not None:
        instance.quiet = True
