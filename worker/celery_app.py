"""The Celery app of the worker and beat processes: ``celery -A worker worker``.

``worker_celery()`` builds the Flask app (whose Celery app ``app.broker`` makes), then
registers the step and sweep tasks and the fleet's bootstep on it.
"""

from __future__ import annotations

import functools

from celery import Celery
from celery import signals

from app import create_app
from app.extensions import db
from app.observability import worker_metrics


@functools.cache
def worker_celery() -> Celery:
    """The Celery app of the worker and beat processes, with every task registered."""
    if worker_metrics.is_worker_command():
        # Before the app imports prometheus_client; the pool children inherit it.
        worker_metrics.prepare()
    # Imported only now: their imports load prometheus_client (see above).
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
