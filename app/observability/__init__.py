"""What operators see: structured logs, Sentry, Prometheus metrics of events and of the
database, the scrape endpoint, and the multiprocess plumbing of gunicorn and the worker.

Nothing in the domain imports this package: the state machine announces what happened
(``app.events``), and ``instruments`` turns those announcements into metrics.
"""
