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
from kombu import Connection

from app import routing
from app.config import MAX_PRIORITY
from app.config import is_amqp


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


def message_priority(celery: Celery, priority: int) -> int:
    """The priority a step's message carries for agentq's ``priority`` (0..10, higher runs
    first): the same on RabbitMQ, whose priority queues serve higher numbers first;
    ``10 - priority`` on Redis, where kombu serves lower numbers first (``worker.transport``).
    """
    return priority if is_amqp(celery.conf.broker_url) else MAX_PRIORITY - priority


def waiting(conn: Connection, queue: str) -> int:
    """Messages waiting in ``queue`` for a worker. On Redis, kombu keeps one list per priority
    level, and its channel knows the levels and key names agentq's transport uses
    (``worker.transport``); on RabbitMQ, the queue's ready messages as a passive declaration
    reports them (not those workers hold unacknowledged), 0 for a queue never declared."""
    channel = conn.default_channel
    if conn.transport.driver_type != "amqp":
        return channel._size(queue)
    try:
        return channel.queue_declare(queue, passive=True).message_count
    except conn.channel_errors:  # 404: no worker or publisher has declared it yet
        return 0
