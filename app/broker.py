"""The Celery app of every process, configured from ``app.config["CELERY"]``.

As in Flask's ``examples/celery``, every task runs inside the Flask app context
(``FlaskTask``) and the Celery app lives in ``app.extensions["celery"]``. The web
process and the CLI only publish (the outbox) and broadcast (the fleet) with it; the
worker and beat processes register the step and sweep tasks on it (``worker.celery_app``).
"""

from __future__ import annotations

from celery import Celery
from celery import Task
from flask import Flask

from app import routing


def init_app(flask_app: Flask) -> Celery:
    """Create the Celery app of ``flask_app`` and store it in its extensions."""

    class FlaskTask(Task):
        def __call__(self, *args, **kwargs):
            with flask_app.app_context():
                return self.run(*args, **kwargs)

    celery = Celery(flask_app.import_name, task_cls=FlaskTask)
    celery.config_from_object(flask_app.config["CELERY"])
    # Known only now that the handlers are loaded: a queue per job type (``app.routing``).
    celery.conf.task_queues = routing.declarations(flask_app.config)
    celery.flask_app = flask_app
    flask_app.extensions["celery"] = celery
    return celery
