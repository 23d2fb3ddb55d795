"""Celery's consumer, trying a lost broker again every second or two.

Celery's consumer reconnects with kombu's default intervals: 2 s, then 4, 6, 8 ... up to
30 s apart. A worker found a Redis that was back after a 20 s outage up to 10 s late, and
after an outage of minutes up to 30 s late, while the jobs the API had accepted meanwhile
waited. Celery has no setting for these intervals (it passes none to kombu's
``Connection.ensure_connection``): this consumer, which ``worker_consumer`` names, passes
``RECONNECT``. ``broker_connection_max_retries`` stays None: it tries for as long as it takes.
"""

from __future__ import annotations

import functools

from celery.worker import consumer

#: kombu's retry intervals while the broker is away: 1 s, then every 2 s.
RECONNECT = {"interval_start": 1, "interval_step": 1, "interval_max": 2}


class Consumer(consumer.Consumer):
    def ensure_connected(self, conn):
        # Each connection is new (``connect`` makes one per attempt to reconnect); Celery calls
        # its ``ensure_connection`` with no intervals, so the ones given here apply.
        conn.ensure_connection = functools.partial(conn.ensure_connection, **RECONNECT)
        return super().ensure_connected(conn)
