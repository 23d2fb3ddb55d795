"""The Celery app to run Flower on: ``celery -A worker.flower flower``.

Flower counts queue lengths with a Redis client of its own, chosen by the scheme of
the broker URL. agentq's broker transport is a kombu class (``worker.transport``, for
eleven priority levels), and kombu names such a transport in the URL:
``worker.transport:Transport://host:6379/0``. Given ``-A worker``, Flower answers
``/api/queues/length`` (and its Broker page) with 404 "'redis' broker is not supported".

This app has agentq's Celery settings less that class, so its URL reads ``redis://``,
and Flower takes ``sep`` (":") and ``priority_steps`` (0..10) from the same
``broker_transport_options``: it sums a queue's eleven Redis lists as kombu fills
them. Flower uses the app to receive events and send control commands, which the
transport class does not change. It registers no tasks: Flower learns task names from
events. Do not publish steps through it (Flower's "apply" API): kombu's own Redis
channel caps priorities at 9.

On RabbitMQ (``BROKER_URL=amqp://``) this is the same app on kombu's amqp transport;
Flower reads queue lengths there from RabbitMQ's management plugin (HTTP, port 15672, or
``--broker_api``), and without it shows none, while workers, tasks and control work.
"""

from __future__ import annotations

import functools
from typing import Any

from celery import Celery

from app.config import Config


@functools.cache
def flower_celery() -> Celery:
    """agentq's Celery settings on kombu's own Redis transport."""
    settings = Config().as_dict()["CELERY"]
    settings.pop("broker_transport", None)  # absent on RabbitMQ: kombu's own amqp transport
    settings.pop("beat_schedule")
    celery = Celery("agentq")
    celery.config_from_object(settings)
    return celery


def __getattr__(name: str) -> Any:
    # Built on first access (PEP 562), as worker.celery is.
    if name == "celery":
        return flower_celery()
    raise AttributeError(f"module 'worker.flower' has no attribute {name!r}")
