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

import redis as redis_py
from kombu.transport import redis

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
