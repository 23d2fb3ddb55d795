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
return sooner the messages whose holder is gone (``worker.sweeps``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

import redis as redis_py
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
class Taken:
    """A message a worker took and has not acked."""

    tag: str
    task: str
    args: list
    #: When it was to run (a retry's countdown), or None to run at once.
    eta: datetime | None


def taken_before(channel: Channel, seconds: float) -> list[Taken]:
    """The Celery task messages workers took more than ``seconds`` ago and still hold."""
    client = channel.client
    tags = client.zrange(channel.unacked_index_key, 0, time.time() - seconds, byscore=True)
    if not tags:
        return []
    taken = []
    for tag, raw in zip(tags, client.hmget(channel.unacked_key, tags), strict=True):
        if raw is None:  # acked meanwhile
            continue
        payload, _exchange, _routing_key = loads(raw)
        headers = payload.get("headers") or {}
        if "task" not in headers:
            continue
        args, _kwargs, _embed = channel.Message(payload, channel=channel).decode()
        eta = headers.get("eta")
        taken.append(
            Taken(
                tag=tag.decode() if isinstance(tag, bytes) else tag,
                task=headers["task"],
                args=args,
                eta=datetime.fromisoformat(eta) if eta else None,
            )
        )
    return taken


def put_back(channel: Channel, tags: list[str]) -> None:
    """Return taken messages to the front of their queues, marked redelivered (as kombu does
    after the visibility timeout; a tag acked meanwhile is only forgotten)."""
    for tag in tags:
        channel.qos.restore_by_tag(tag)
