"""Configuration from the environment, with local defaults.

Every setting is an environment variable of the same name. ``DATABASE_URL`` and
``REDIS_URL`` fall back to the servers that ``agentq dev`` started for this
project (recorded in ``$AGENTQ_HOME/dev.json``, ``./var/dev.json`` by default),
so every ``agentq`` command run in the project finds them. ``BROKER_URL`` falls back to
``REDIS_URL``: Redis is the broker unless ``BROKER_URL`` names a RabbitMQ (``amqp://``).
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from app.errors import ConfigError
from app.policy import Policy
from app.routing import CONTINUATIONS_QUEUE
from app.routing import SWEEPS_QUEUE
from app.routing import parse_routes

#: agentq priorities run from 0 (lowest) to 10 (highest).
MAX_PRIORITY = 10
#: URL schemes of a RabbitMQ broker (kombu's py-amqp transport).
AMQP_SCHEMES = ("amqp", "amqps", "pyamqp")
#: The kinds of RabbitMQ queue agentq can declare (``RABBITMQ_QUEUE_TYPE``).
QUEUE_TYPES = ("classic", "quorum")


def is_amqp(url: str | None) -> bool:
    """Whether ``url`` names a RabbitMQ broker (``amqp://``) rather than Redis."""
    return (url or "").partition("://")[0] in AMQP_SCHEMES


def home() -> Path:
    """The directory holding local state: the embedded servers' data and dev.json."""
    return Path(os.environ.get("AGENTQ_HOME") or Path.cwd() / "var").resolve()


def dev_state() -> dict:
    """What ``agentq dev`` recorded about the servers it runs, or ``{}``."""
    try:
        return json.loads((home() / "dev.json").read_text())
    except (FileNotFoundError, ValueError):
        return {}


def sqlalchemy_url(url: str | None) -> str | None:
    """``postgresql://`` (or Heroku's ``postgres://``) as SQLAlchemy's psycopg2 URL.

    SQLAlchemy 2.1 maps a bare ``postgresql://`` to psycopg 3; agentq uses psycopg2.
    """
    if url:
        for scheme in ("postgres://", "postgresql://"):
            if url.startswith(scheme):
                return "postgresql+psycopg2://" + url[len(scheme) :]
    return url


def local_secret_key() -> str:
    """A secret key kept in ``$AGENTQ_HOME/secret_key``, made on first use.

    Shared by every process on this machine, so sessions and CSRF tokens made by one
    gunicorn worker hold in the others. Several machines must share ``SECRET_KEY``.
    """
    path = home() / "secret_key"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(32))
        return path.read_text().strip()


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name) or default)


def _env_bool(name: str) -> bool:
    return (os.environ.get(name) or "").strip().lower() in ("1", "true", "yes", "on")


def _env_float(name: str, default: float) -> float:
    return float(os.environ.get(name) or default)


def _env_rate_limit(name: str, default: str) -> str:
    """A rate limit in flask-limiter's syntax (``"600/minute"``, ``"10/minute;100/day"``);
    set empty or ``0``: no limit (``""``)."""
    value = os.environ.get(name, default).strip()
    return "" if value in ("", "0") else value


def review_defaults() -> Policy:
    """The system's layer of every checkpoint's review policy (``app.policy``), from
    ``REVIEW_ALLOW_SELF_APPROVAL``, ``REVIEW_MIN_APPROVALS``, ``REVIEW_EXPIRES_IN`` (seconds)
    and ``REVIEW_ON_TIMEOUT`` (approve, reject or fail); an unset one leaves the built-in
    default.

    :raises ConfigError: for a value that is not a number, or out of its range.
    """
    try:
        said = {
            "allowSelfApproval": os.environ.get("REVIEW_ALLOW_SELF_APPROVAL")
            and _env_bool("REVIEW_ALLOW_SELF_APPROVAL"),
            "minApprovals": os.environ.get("REVIEW_MIN_APPROVALS")
            and _env_int("REVIEW_MIN_APPROVALS", 1),
            "expiresIn": os.environ.get("REVIEW_EXPIRES_IN") and _env_float("REVIEW_EXPIRES_IN", 0),
            "onTimeout": os.environ.get("REVIEW_ON_TIMEOUT") or None,
        }
        return Policy.from_json({k: v for k, v in said.items() if v not in (None, "")})
    except ValueError as exc:
        raise ConfigError(f"REVIEW_* settings: {exc}") from None


def celery_settings(
    broker_url: str,
    *,
    lease_seconds: int,
    sweep_interval: float,
    task_events: bool = False,
    queue_type: str = "classic",
) -> dict:
    """The Celery settings, chosen for long, idempotent, database-claimed steps, on Redis or,
    when ``broker_url`` is ``amqp://``, on RabbitMQ (``queue_type``: its queues' kind).

    Each choice answers a trap listed in shared/notes (celery-redis-postgres-facts):

    - ``task_acks_late`` + ``task_reject_on_worker_lost``: a step whose process dies
      (OOM, SIGKILL) goes back to the queue instead of being acked and lost. Steps
      are idempotent and claim the job in Postgres, so a second delivery is safe;
      the database counts attempts, so a poison step cannot loop forever.
    - ``worker_prefetch_multiplier = 1`` and ``worker_disable_prefetch``: with late
      acks a worker reserves nothing beyond what its free processes can run, so a
      long step does not hold other jobs hostage and priorities are honoured at the
      moment a process frees up.
    - ``visibility_timeout`` above every step's hard time limit: Redis re-delivers a
      message that is not acked within it, even while the first copy still runs.
      A dead worker's steps are re-dispatched by the lease sweep within seconds, so
      this long timeout is only the broker's last resort.
    - ``socket_timeout`` / ``socket_connect_timeout``: without them a publish to a
      Redis that accepts but never answers blocks forever.
    - ``worker_cancel_long_running_tasks_on_connection_loss``: a step whose broker
      connection dropped will be re-delivered anyway; cancel the first copy.
    - ``broker_connection_retry_on_startup``: set explicitly; a worker started before
      Redis keeps trying instead of exiting, and ``worker_consumer`` tries a lost broker
      again every second or two instead of up to 30 s apart (``worker.consumer``).
    - Priorities: kombu serves LOWER numbers first and caps them at 9; agentq uses
      a transport whose channel accepts 0..10 (``worker.transport``) with one list
      per level, and sends ``10 - priority`` so higher agentq priorities run first;
      ``task_inherit_parent_priority`` keeps a chain's later steps at its priority.
    - Task events only when asked for (``task_events``, ``CELERY_TASK_EVENTS=1``): they
      cost each task 3 to 4 Redis PUBLISHes. Flower turns them on in running workers
      by itself (it sends ``enable_events``), and so does ``celery control enable_events``.

    On RabbitMQ (``rabbitmq_settings``) the same settings hold but for the Redis transport's.
    """
    hard_limit = _env_int("STEP_TIME_LIMIT", 3600)
    settings = {
        "broker_url": broker_url,
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        "worker_consumer": "worker.consumer:Consumer",
        "task_ignore_result": True,
        "result_backend": None,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_time_limit": hard_limit,
        "task_soft_time_limit": hard_limit - 60,
        "worker_prefetch_multiplier": 1,
        "task_inherit_parent_priority": True,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "worker_send_task_events": task_events,
        "task_send_sent_event": task_events,
        "task_default_priority": MAX_PRIORITY - 5,
        "task_routes": {"agentq.sweep": {"queue": SWEEPS_QUEUE}},
        "task_serializer": "json",
        "accept_content": ["json"],
        "worker_hijack_root_logger": False,
        "beat_schedule": {
            "agentq-sweep": {
                "task": "agentq.sweep",
                "schedule": sweep_interval,
                "options": {"queue": SWEEPS_QUEUE, "expires": sweep_interval * 2},
            }
        },
    }
    if is_amqp(broker_url):
        settings.update(rabbitmq_settings(queue_type))
    else:
        settings.update(
            {
                "broker_transport": "worker.transport:Transport",
                "broker_transport_options": {
                    "visibility_timeout": hard_limit + 600,
                    "socket_timeout": 5,
                    "socket_connect_timeout": 3,
                    "priority_steps": list(range(MAX_PRIORITY + 1)),
                    "sep": ":",
                    # Among messages of equal priority, take a worker's queues in turn
                    # (``app.routing``).
                    "queue_order_strategy": "round_robin",
                },
                # Celery's Redis consumer only: it fetches a message when a process is free.
                "worker_disable_prefetch": True,
            }
        )
    return settings


def rabbitmq_settings(queue_type: str) -> dict:
    """The Celery settings that differ on RabbitMQ, for queues of ``queue_type``.

    - ``confirm_publish``: an AMQP publish returns before the broker has the message;
      with publisher confirms it returns once the broker has taken it (a round trip), so
      an outbox row is deleted only for a message the broker holds.
    - No visibility timeout: RabbitMQ hands a message out again when the connection
      of the worker holding it closes (a process or machine that died, once heartbeats
      stop), never while the worker lives. It does close a channel whose delivery stays
      unacknowledged beyond its ``consumer_timeout`` (30 minutes by default): raise it
      above ``STEP_TIME_LIMIT`` on the broker (README, RabbitMQ or Redis).
    - ``classic``: durable classic queues with ``x-max-priority`` 10
      (``task_queue_max_priority``, every queue Celery declares), so RabbitMQ serves
      agentq's priorities 0..10 as they are, higher first (``app.broker.message_priority``).
    - ``quorum``: replicated quorum queues (``app.routing.declarations`` declares them,
      on topic exchanges so that Celery's native delayed delivery can route a countdown
      to them). RabbitMQ 3.x refuses ``x-max-priority`` on them and keeps no priorities
      (4.x keeps two: 0..4 and 5..10); Celery detects them and sets prefetch per consumer.

    :raises ConfigError: for a ``queue_type`` other than ``classic`` or ``quorum``.
    """
    if queue_type not in QUEUE_TYPES:
        raise ConfigError(f"RABBITMQ_QUEUE_TYPE is {queue_type!r}: classic or quorum")
    settings: dict = {"broker_transport_options": {"confirm_publish": True}}
    if queue_type == "quorum":
        settings.update(
            {
                "task_default_queue_type": "quorum",
                "task_create_missing_queue_type": "quorum",
                "task_create_missing_queue_exchange_type": "topic",
            }
        )
    else:
        settings["task_queue_max_priority"] = MAX_PRIORITY
    return settings


class Config:
    """Settings read from the environment when the app is created."""

    def __init__(self) -> None:
        dev = dev_state()
        self.SQLALCHEMY_DATABASE_URI = sqlalchemy_url(
            os.environ.get("DATABASE_URL") or dev.get("database_url")
        )
        #: Redis: the broker unless ``BROKER_URL`` says otherwise, and the rate limits' store.
        self.REDIS_URL = os.environ.get("REDIS_URL") or dev.get("redis_url")
        #: The Celery broker: Redis (``redis://``, by default ``REDIS_URL``) or RabbitMQ
        #: (``amqp://``).
        self.BROKER_URL = os.environ.get("BROKER_URL") or self.REDIS_URL
        #: The kind of queue agentq declares on RabbitMQ: ``classic`` (priorities 0..10) or
        #: ``quorum`` (replicated; RabbitMQ 3.x keeps no priorities in them).
        self.RABBITMQ_QUEUE_TYPE = (os.environ.get("RABBITMQ_QUEUE_TYPE") or "classic").strip()
        self.SECRET_KEY = (
            os.environ.get("SECRET_KEY") or dev.get("secret_key") or local_secret_key()
        )
        # No ping on every checkout (a round trip each time): app.sql pings connections
        # that idled, and retries a statement once on a connection the server dropped.
        # The most recently used connection first: the others idle, and are pinged or
        # dropped, instead of every connection taking turns.
        self.SQLALCHEMY_ENGINE_OPTIONS = {"pool_use_lifo": True}
        #: Largest request body accepted, in bytes (413 above it).
        self.MAX_CONTENT_LENGTH = _env_int("MAX_BODY_BYTES", 1024 * 1024)
        #: Directory under which each job gets its own workspace directory.
        self.WORKSPACE_ROOT = os.environ.get("WORKSPACE_ROOT") or str(home() / "workspaces")
        #: Seconds a running step's claim lasts without renewal; renewed every third of it.
        self.STEP_LEASE_SECONDS = _env_int("STEP_LEASE_SECONDS", 30)
        #: Seconds after which a runnable job that nobody runs is dispatched again when the
        #: step queues are too long to look for its message (``worker.sweeps.SCAN_LIMIT``), or
        #: on RabbitMQ hold any (``worker.transport.messages``).
        self.STALL_SECONDS = _env_float("STALL_SECONDS", 300.0)
        #: Seconds a pooled database connection may idle before it is pinged at checkout
        #: (0: at every checkout, a round trip each; for networks that drop idle ones sooner).
        self.DATABASE_IDLE_PING_SECONDS = _env_float("DATABASE_IDLE_PING_SECONDS", 10.0)
        #: Job types whose steps go to a queue other than their own, ``type=queue,...``.
        self.QUEUE_ROUTES = parse_routes(os.environ.get("QUEUE_ROUTES") or "")
        #: The fast lane: the queue of the chains that continue jobs after an approval.
        self.CONTINUATIONS_QUEUE = os.environ.get("CONTINUATIONS_QUEUE") or CONTINUATIONS_QUEUE
        #: Celery task events from every worker and publisher (Flower turns them on anyway).
        self.CELERY_TASK_EVENTS = _env_bool("CELERY_TASK_EVENTS")
        #: Seconds between beat sweeps.
        self.SWEEP_INTERVAL = _env_float("SWEEP_INTERVAL", 2.0)
        #: Seconds an outbox row may wait for its after-commit publish before the sweep takes it.
        self.OUTBOX_GRACE_SECONDS = _env_float("OUTBOX_GRACE_SECONDS", 3.0)
        #: Seconds the fleet endpoint waits for workers to answer.
        self.FLEET_TIMEOUT = _env_float("FLEET_TIMEOUT", 1.0)
        #: Job submissions per API token (``app.limits``); "": no limit.
        self.RATE_LIMIT_JOBS = _env_rate_limit("RATE_LIMIT_JOBS", "600/minute")
        #: Decisions (approve or reject) per API token, and per admin on the admin pages.
        self.RATE_LIMIT_DECISIONS = _env_rate_limit("RATE_LIMIT_DECISIONS", "600/minute")
        #: Admin sign-in attempts per user name, and per client address.
        self.LOGIN_RATE_LIMIT = _env_rate_limit("LOGIN_RATE_LIMIT", "10/minute")
        #: The system's defaults of every checkpoint's review policy (``REVIEW_*``).
        self.REVIEW_DEFAULTS = review_defaults()
        #: Reverse proxies in front of the web process whose X-Forwarded-* headers to trust.
        self.PROXY_FIX_HOPS = _env_int("PROXY_FIX_HOPS", 0)
        #: Port on which each Celery worker serves its processes' metrics (0: none).
        self.WORKER_METRICS_PORT = _env_int("WORKER_METRICS_PORT", 9808)
        #: Address the worker's metrics port listens on (``agentq dev``: 127.0.0.1).
        self.WORKER_METRICS_HOST = os.environ.get("WORKER_METRICS_HOST") or "0.0.0.0"
        #: Sentry's DSN; unset: no Sentry at all (``app.observability.sentry``).
        self.SENTRY_DSN = os.environ.get("SENTRY_DSN") or None
        #: The environment Sentry files events under (production, staging, ...).
        self.SENTRY_ENVIRONMENT = os.environ.get("SENTRY_ENVIRONMENT") or None
        #: Share of requests and steps traced for Sentry's performance view, 0 to 1; unset: none.
        self.SENTRY_TRACES_SAMPLE_RATE = (
            float(os.environ["SENTRY_TRACES_SAMPLE_RATE"])
            if os.environ.get("SENTRY_TRACES_SAMPLE_RATE")
            else None
        )
        #: Extra handler modules to register, comma-separated (``handlers/`` is always loaded).
        self.HANDLER_MODULES = [
            m.strip()
            for m in (os.environ.get("AGENTQ_HANDLER_MODULES") or "").split(",")
            if m.strip()
        ]
        self.API_TITLE = "agentq"
        self.API_VERSION = "1.0"
        self.OPENAPI_VERSION = "3.0.3"
        self.OPENAPI_URL_PREFIX = "/api"
        self.OPENAPI_JSON_PATH = "openapi.json"
        self.OPENAPI_SWAGGER_UI_PATH = "docs"
        self.OPENAPI_SWAGGER_UI_URL = "/api/docs/static/"

    def as_dict(self) -> dict:
        """The settings as a mapping, with the Celery settings under ``CELERY``."""
        settings = {k: v for k, v in vars(self).items() if k.isupper()}
        settings["CELERY"] = celery_settings(
            self.BROKER_URL or "",
            lease_seconds=self.STEP_LEASE_SECONDS,
            sweep_interval=self.SWEEP_INTERVAL,
            task_events=self.CELERY_TASK_EVENTS,
            queue_type=self.RABBITMQ_QUEUE_TYPE,
        )
        return settings
