"""kombu's Redis transport with room for agentq's eleven priority levels, a Redis
client kept per connection pool, and a look at the messages workers have taken.

kombu caps message priorities at 9 on Redis; agentq priorities run 0..10, so its
channel accepts 0..10 and ``priority_steps`` (``app.config``) gives each level its
own list. Lower numbers are served first: agentq sends ``10 - priority``.

kombu builds a new ``redis.Redis`` around the channel's connection pool for every
command it sends outside the consumer's loop (each publish, each ack); redis-py 8
takes about a millisecond of CPU to build one. The channel keeps one per pool instead
(a ``redis.Redis`` is safe to share: each command takes a connection from the pool).

A worker that takes a message with late acks leaves it in kombu's ``unacked`` hash
until it acks; if the worker dies, kombu hands the message out again only after the
visibility timeout (an hour and more). ``taken_before`` and ``put_back`` let the sweep
return sooner the messages whose holder is gone (``worker.sweeps``). A worker killed
between popping a message off its queue and recording it as taken loses it altogether
(kombu pops with ``BRPOP``); ``messages`` lets the sweep see that no message for a job
is left anywhere.

On RabbitMQ (``BROKER_URL=amqp://``) the broker hands a message out again as soon as the
connection of the worker holding it closes, and loses none between delivery and ack, so
``taken_before`` finds none to put back. A RabbitMQ queue cannot be read without taking
its messages, only counted: ``messages`` finds none when the step queues are empty, and
cannot tell (None) when messages wait, so the sweep then waits ``STALL_SECONDS``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

import redis as redis_py
from amqp.exceptions import NotFound
from kombu.transport import redis
from kombu.utils.json import loads

from app.config import MAX_PRIORITY


class Channel(redis.Channel):
    max_priority = MAX_PRIORITY
    _kept_client = None

    def _connparams(self, asynchronous=False):
        # When Redis goes away, Celery collects the lost connection (which detaches the
        # transport from it: ``client`` None) and then closes it; closing the channel again
        # tries to put back the messages it had taken, and kombu would read the detached
        # client's host for a new pool: an AttributeError that no one ignores, and the
        # worker exited ("Unrecoverable error"). Say what it is, a lost connection, which
        # the close ignores; the messages come back once Redis does (visibility timeout).
        if self.connection.client is None:
            raise redis_py.ConnectionError("the connection to Redis was lost and closed")
        return super()._connparams(asynchronous=asynchronous)

    def _create_client(self, asynchronous=False):
        if asynchronous:
            return super()._create_client(asynchronous=True)
        client = self._kept_client
        # A new pool (after a fork, or a reconnection) gets a client of its own.
        if client is None or client.connection_pool is not self.pool:
            client = self._kept_client = super()._create_client()
        return client


class Transport(redis.Transport):
    Channel = Channel


@dataclass(frozen=True)
class Message:
    """A Celery task message in Redis: queued, or taken by a worker and not acked."""

    task: str
    args: list
    #: When it was to run (a retry's countdown), or None to run at once.
    eta: datetime | None
    #: Its delivery tag, when a worker took it.
    tag: str | None = None


def _message(channel: Channel, payload: dict, tag: str | None = None) -> Message | None:
    headers = payload.get("headers") or {}
    if "task" not in headers:
        return None
    args, _kwargs, _embed = channel.Message(payload, channel=channel).decode()
    eta = headers.get("eta")
    return Message(headers["task"], args, datetime.fromisoformat(eta) if eta else None, tag)


def taken_before(channel: Channel, seconds: float) -> list[Message]:
    """The Celery task messages workers took more than ``seconds`` ago and still hold (on
    RabbitMQ, none that the broker would not hand out again by itself)."""
    if not isinstance(channel, Channel):
        return []
    client = channel.client
    tags = client.zrange(channel.unacked_index_key, 0, time.time() - seconds, byscore=True)
    if not tags:
        return []
    taken = []
    for tag, raw in zip(tags, client.hmget(channel.unacked_key, tags), strict=True):
        if raw is None:  # acked meanwhile
            continue
        payload, _exchange, _routing_key = loads(raw)
        message = _message(channel, payload, tag.decode() if isinstance(tag, bytes) else tag)
        if message is not None:
            taken.append(message)
    return taken


def messages(channel: Channel, queues: list[str], limit: int) -> list[Message] | None:
    """Every task message waiting in ``queues`` (all their priority lists) or taken by a
    worker; None when more than ``limit`` wait (too many to read on every sweep). On
    RabbitMQ, which cannot show a queue's messages without taking them: none when no message
    waits in ``queues`` (a worker holds only those it runs, claimed within milliseconds),
    else None."""
    if not isinstance(channel, Channel):
        return [] if _ready(channel, queues) == 0 else None
    client = channel.client
    keys = [channel._q_for_pri(q, pri) for q in queues for pri in channel.priority_steps]
    with client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.llen(key)
        if sum(pipe.execute()) > limit:
            return None
        for key in keys:
            pipe.lrange(key, 0, -1)
        lists = pipe.execute()
    # Queued first, then taken: a message that moves between the two reads may be missed,
    # and the job is dispatched once more (the claim drops the duplicate); never the reverse.
    found = [_message(channel, loads(raw)) for items in lists for raw in items]
    found += [_message(channel, loads(raw)[0]) for raw in client.hvals(channel.unacked_key)]
    return [message for message in found if message is not None]


def _ready(channel, queues: list[str]) -> int:
    """The messages waiting in RabbitMQ ``queues``, as passive declarations count them."""
    total = 0
    for queue in queues:
        try:
            total += channel.queue_declare(queue, passive=True).message_count
        except NotFound:  # never declared: nothing was sent to it (py-amqp reopens the channel)
            continue
    return total


def put_back(channel: Channel, tags: list[str]) -> None:
    """Return taken messages to the front of their queues, marked redelivered (as kombu does
    after the visibility timeout; a tag acked meanwhile is only forgotten)."""
    for tag in tags:
        channel.qos.restore_by_tag(tag)
