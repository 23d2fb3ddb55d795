"""What operators see: structured logs, Sentry, Prometheus metrics of events and of the
database, the scrape endpoint, and the multiprocess plumbing of gunicorn and the worker.

The state machine imports none of it: it announces what happened (``app.events``), and
``instruments`` turns those announcements into metrics. This module imports nothing:
prometheus_client must not be loaded before a worker chose its multiprocess directory
(``worker_metrics``), and ``sentry`` is imported early by the outbox.
"""
