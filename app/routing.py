"""Which queue each message goes to: the routing table, written once.

- Each job type's steps have a queue of their own, ``agentq.steps.<job type>``, unless
  ``QUEUE_ROUTES`` maps the type elsewhere (``data-processing=agentq.bulk``: several types
  may share a queue). A worker on several queues takes from each in turn (kombu's round
  robin), so a flood of one type waits behind itself, not in front of the others.
- The chain that continues a job after an approval goes to the fast lane,
  ``CONTINUATIONS_QUEUE``: a reviewer who approves sees the work continue at the next
  free worker process even while a flood of new jobs waits.
- The beat sweeps go to ``agentq.sweeps``, which workers consume even while the fleet
  is paused.

Priorities hold across queues: a worker takes the highest priority waiting on any of its
queues first, and only among equal priorities does it take the queues in turn. On
RabbitMQ, priorities order each queue, and a worker takes its queues in turn.

A worker consumes every queue unless started for some (``agentq worker --queues``);
pausing the fleet stops the step queues (all but the sweeps) on every worker.
"""

from __future__ import annotations

from collections.abc import Mapping

from kombu import Exchange
from kombu import Queue

from app.errors import ConfigError
from app.framework.registry import registry

#: Queue of the beat sweeps; always consumed, so a paused fleet still sweeps.
SWEEPS_QUEUE = "agentq.sweeps"
#: A job type's steps go to this prefix and its name, unless ``QUEUE_ROUTES`` maps it.
STEPS_PREFIX = "agentq.steps."
#: The fast lane's default name (``CONTINUATIONS_QUEUE``).
CONTINUATIONS_QUEUE = "agentq.continuations"


def parse_routes(text: str) -> dict[str, str]:
    """``QUEUE_ROUTES``: comma-separated ``job-type=queue`` pairs, as a mapping.

    :raises ConfigError: for a pair without ``=`` or with an empty side.
    """
    routes = {}
    for pair in filter(None, (p.strip() for p in text.split(","))):
        job_type, _, queue = (part.strip() for part in pair.partition("="))
        if not job_type or not queue:
            raise ConfigError(f"QUEUE_ROUTES: {pair!r} is not job-type=queue")
        routes[job_type] = queue
    return routes


def step_queue(config: Mapping, job_type: str, *, continuation: bool = False) -> str:
    """The queue of a step of ``job_type``; the fast lane for a continuation."""
    if continuation:
        return config["CONTINUATIONS_QUEUE"]
    return config["QUEUE_ROUTES"].get(job_type) or STEPS_PREFIX + job_type


def step_queues(config: Mapping) -> list[str]:
    """Every queue a step of a registered job type may be sent to: the ones pausing stops."""
    queues = {step_queue(config, job_type) for job_type in registry.names()}
    return sorted(queues | {config["CONTINUATIONS_QUEUE"]})


def declarations(config: Mapping) -> list[Queue]:
    """The queues Celery declares and a worker consumes unless told otherwise.

    On RabbitMQ with ``RABBITMQ_QUEUE_TYPE=quorum`` each is a quorum queue, bound to a topic
    exchange of its name (Celery's native delayed delivery, which holds a countdown's
    message in the broker, routes to topic exchanges only); else Celery's defaults, with
    ``x-max-priority`` on RabbitMQ (``app.config.rabbitmq_settings``).
    """
    names = (*step_queues(config), SWEEPS_QUEUE)
    if config["CELERY"].get("task_default_queue_type") == "quorum":
        return [
            Queue(
                name,
                Exchange(name, type="topic"),
                routing_key=name,
                queue_arguments={"x-queue-type": "quorum"},
            )
            for name in names
        ]
    return [Queue(name) for name in names]
