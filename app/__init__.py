"""agentq: durable jobs for AI agents, with human approval checkpoints.

``create_app`` builds the Flask app of every process: web (gunicorn), worker and
beat (through ``worker.celery_app``) and the ``agentq`` CLI.

The layers, each importing only those below it: ``status`` (the vocabulary), then
``config``, ``errors``, ``extensions``, ``models``, ``sql``; the handler framework
(``framework``); the domain (``queries``, ``joblog``, ``outbox``, ``state``, ``events``,
``review``, ``fleet``, ``paging``, ``health``); then the faces: ``api``, ``admin``, ``cli``.
``observability`` listens to the domain's events and is wired in here; ``dev`` is
tooling; ``worker`` (the Celery runtime) and ``handlers`` (the job types) sit on top.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from app import admin
from app import api
from app import broker
from app import limits
from app import outbox
from app import sql
from app.config import Config
from app.errors import ConfigError
from app.extensions import db
from app.extensions import migrate
from app.framework.registry import load_handlers
from app.observability import logs
from app.observability import sentry

MIGRATIONS = str(Path(__file__).resolve().parent.parent / "migrations")


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build the app from the environment, overridden by ``config`` (tests pass a mapping).

    :raises ConfigError: when no database or broker is configured.
    """
    app = Flask(__name__)
    app.json.sort_keys = False
    app.config.from_mapping(Config().as_dict())
    if config:
        config = dict(config)
        celery_overrides = config.pop("CELERY", None)
        app.config.from_mapping(config)
        if celery_overrides:
            app.config["CELERY"].update(celery_overrides)
    for key, variable in (
        ("SQLALCHEMY_DATABASE_URI", "DATABASE_URL"),
        ("BROKER_URL", "REDIS_URL (or BROKER_URL)"),
    ):
        if not app.config.get(key):
            raise ConfigError(
                f"{variable} is not set, and no `agentq dev` is running in this directory "
                f"(it would have written var/dev.json): start `agentq dev` or set {variable}"
            )
    app.config["CELERY"]["broker_url"] = app.config["BROKER_URL"]
    if app.config.get("PROXY_FIX_HOPS"):
        hops = int(app.config["PROXY_FIX_HOPS"])
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)

    load_handlers(app.config["HANDLER_MODULES"])
    db.init_app(app)
    sql.init_app(app)
    migrate.init_app(app, db, directory=MIGRATIONS)

    # Imported here, not at the top: prometheus_client picks its multiprocess mode when it
    # is first imported, and a worker must set its directory first (``worker.celery_app``).
    from app.observability import instruments
    from app.observability import scrape

    # Logs first: the request id is bound before any other hook may answer a request.
    logs.init_app(app)
    sentry.init_app(app)
    instruments.listen()
    broker.init_app(app)
    outbox.init_app(app)
    limits.init_app(app)
    api.init_app(app)
    admin.init_app(app)
    scrape.init_app(app)
    return app
