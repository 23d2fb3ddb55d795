"""kombu's Redis transport with room for agentq's eleven priority levels.

kombu caps message priorities at 9 on Redis; agentq priorities run 0..10, so its
channel accepts 0..10 and ``priority_steps`` (``app.config``) gives each level its
own list. Lower numbers are served first: agentq sends ``10 - priority``.
"""

from __future__ import annotations

from kombu.transport import redis

from app.config import MAX_PRIORITY


class Channel(redis.Channel):
    max_priority = MAX_PRIORITY


class Transport(redis.Transport):
    Channel = Channel
