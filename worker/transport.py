"""kombu's Redis transport with room for agentq's eleven priority levels, and a Redis
client kept per connection pool.

kombu caps message priorities at 9 on Redis; agentq priorities run 0..10, so its
channel accepts 0..10 and ``priority_steps`` (``app.config``) gives each level its
own list. Lower numbers are served first: agentq sends ``10 - priority``.

kombu builds a new ``redis.Redis`` around the channel's connection pool for every
command it sends outside the consumer's loop (each publish, each ack); redis-py 8
takes about a millisecond of CPU to build one. The channel keeps one per pool instead
(a ``redis.Redis`` is safe to share: each command takes a connection from the pool).
"""

from __future__ import annotations

from kombu.transport import redis

from app.config import MAX_PRIORITY


class Channel(redis.Channel):
    max_priority = MAX_PRIORITY
    _kept_client = None

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
