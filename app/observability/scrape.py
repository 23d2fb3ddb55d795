"""``/api/metrics``: the web side of agentq's Prometheus metrics.

One scrape of ``/api/metrics`` returns

- counts of states, read from Postgres at scrape time so that every process agrees:
  the guide's ``agent_jobs_total{status}``, ``agent_checkpoints_pending`` and
  ``agent_worker_active_jobs``, ``agentq_checkpoint_oldest_pending_age_seconds`` (what
  an alert on a checkpoint waiting too long needs), ``agentq_outbox_backlog`` and
  ``agentq_outbox_oldest_age_seconds``;
- ``agentq_queue_depth{queue}``, the messages waiting in each Celery queue (``app.broker``);
- the event metrics (``app.observability.instruments``) and HTTP metrics
  (prometheus-flask-exporter, ``flask_http_request_*`` by ``url_rule``) of the web
  processes: of every gunicorn worker, summed through the multiprocess directory that
  ``app.observability.gunicorn_conf`` sets up,
  or of this process alone when there is none (tests, ``flask run``).

Each Celery worker serves its own processes' event metrics on a port of its own
(``app.observability.worker_metrics``): workers may run on machines that share no
filesystem with the web.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable
from collections.abc import Iterator

from flask import Flask
from flask import Response
from flask import current_app
from flask import request
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.core import Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_flask_exporter import PrometheusMetrics

from app import broker
from app import queries
from app import routing
from app.extensions import db
from app.observability import instruments
from app.observability import multiproc
from app.status import JobStatus

log = logging.getLogger(__name__)


class ScrapeCollector:
    """Figures read at scrape time from Postgres and the broker.

    A part that cannot be read (database or broker down) is left out of the scrape and
    logged; the rest is still served.
    """

    def collect(self) -> Iterator[Metric]:
        for part in (self._jobs, self._outbox, self._queues):
            try:
                yield from list(part())
            except Exception:  # the scrape goes on without this part; its absence alerts
                log.exception("metrics: reading %s failed", part.__name__.lstrip("_"))
                with contextlib.suppress(Exception):  # a failed query aborts the transaction
                    db.session.rollback()

    def _jobs(self) -> Iterable[Metric]:
        jobs = GaugeMetricFamily(
            "agent_jobs_total", "Total number of agent jobs by status", labels=["status"]
        )
        counts = queries.job_counts()
        for status, n in counts.items():
            jobs.add_metric([status], n)
        yield jobs
        yield GaugeMetricFamily(
            "agent_checkpoints_pending",
            "Number of pending checkpoints",
            value=queries.pending_checkpoint_count(),
        )
        yield GaugeMetricFamily(
            "agentq_checkpoint_oldest_pending_age_seconds",
            "Seconds since the oldest pending checkpoint was created (0 when none is pending)",
            value=queries.oldest_pending_checkpoint_age(),
        )
        yield GaugeMetricFamily(
            "agent_worker_active_jobs", "Currently active jobs", value=counts[JobStatus.RUNNING]
        )

    def _outbox(self) -> Iterable[Metric]:
        row = queries.outbox_backlog()
        yield GaugeMetricFamily(
            "agentq_outbox_backlog",
            "Dispatch intents (outbox rows) still unpublished a second after they were written",
            value=row.backlog,
        )
        yield GaugeMetricFamily(
            "agentq_outbox_oldest_age_seconds",
            "Seconds since the oldest outbox row was written (0 when there is none)",
            value=row.oldest_age,
        )

    def _queues(self) -> Iterable[Metric]:
        depth = GaugeMetricFamily(
            "agentq_queue_depth",
            "Messages waiting in a Celery queue (on Redis every priority level summed)",
            labels=["queue"],
        )
        with current_app.extensions["celery"].connection_for_read() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
            for queue in (*routing.step_queues(current_app.config), routing.SWEEPS_QUEUE):
                depth.add_metric([queue], broker.waiting(conn, queue))
        yield depth


class _Registries:
    """Several registries served as one."""

    def __init__(self, *registries: CollectorRegistry) -> None:
        self.registries = registries

    def collect(self) -> Iterator[Metric]:
        for registry in self.registries:
            yield from registry.collect()


def init_app(app: Flask) -> None:
    """Instrument the app's requests and serve ``/api/metrics``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ScrapeCollector())
    # Each app gets its own exporter registry: a second PrometheusMetrics on a shared
    # registry finds its metrics already there and silently instruments nothing.
    http = CollectorRegistry(auto_describe=True)
    if app.config.get("HTTP_METRICS", True):
        PrometheusMetrics(app, path=None, group_by="url_rule", registry=http)
    directory = multiproc.current()
    if directory:
        MultiProcessCollector(registry, path=directory)
    else:
        registry.register(_Registries(instruments.REGISTRY, http))

    @app.get("/api/metrics")
    @PrometheusMetrics.do_not_track()
    def metrics():
        """Prometheus text format."""
        encode, content_type = choose_encoder(request.headers.get("Accept"))
        return Response(encode(registry), headers={"Content-Type": content_type})
