"""The Celery app: one per Flask app, configured from ``app.config["CELERY"]``.

As in Flask's ``examples/celery``, every task runs inside the Flask app context
(``FlaskTask``) and the Celery app lives in ``app.extensions["celery"]``. The web
process only publishes; ``worker_celery()`` also registers the step and sweep
tasks and the worker's signal receivers.
"""

from __future__ import annotations

import functools

from celery import Celery
from celery import Task
from celery import signals
from flask import Flask

from app.extensions import db


def init_app(flask_app: Flask) -> Celery:
    """Create the Celery app of ``flask_app`` and store it in its extensions."""

    class FlaskTask(Task):
        def __call__(self, *args, **kwargs):
            with flask_app.app_context():
                return self.run(*args, **kwargs)

    celery = Celery(flask_app.import_name, task_cls=FlaskTask)
    celery.config_from_object(flask_app.config["CELERY"])
    celery.flask_app = flask_app
    flask_app.extensions["celery"] = celery
    return celery


@functools.cache
def worker_celery() -> Celery:
    """The Celery app of the worker and beat processes, with every task registered."""
    from app.observability import worker_metrics

    if worker_metrics.is_worker_command():
        # Before anything imports prometheus_client; the pool children inherit it.
        worker_metrics.prepare()

    from app import create_app
    from worker import fleet
    from worker import steps
    from worker import sweeps

    # No HTTP metrics: a worker answers no requests.
    flask_app = create_app({"HTTP_METRICS": False})
    celery = flask_app.extensions["celery"]
    steps.register(celery)
    sweeps.register(celery)
    fleet.register(celery)
    celery.set_default()
    return celery


@signals.worker_process_init.connect
def _fresh_connections(**_kwargs) -> None:
    """Drop database connections inherited from the parent over fork; the child opens its own."""
    from celery import current_app

    flask_app = getattr(current_app, "flask_app", None)
    if flask_app is not None:
        with flask_app.app_context():
            db.engine.dispose(close=False)
