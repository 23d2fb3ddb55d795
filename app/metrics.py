"""``/api/metrics``: the guide's gauges, counted from Postgres at scrape time."""

from __future__ import annotations

from flask import Flask
from flask import Response
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client import CollectorRegistry
from prometheus_client import generate_latest
from prometheus_client.core import GaugeMetricFamily

from app import queries


class DatabaseCollector:
    """Counts of states, read from Postgres on every scrape, so every process agrees."""

    def collect(self):
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
            "agent_worker_active_jobs", "Currently active jobs", value=counts["RUNNING"]
        )


def init_app(app: Flask) -> None:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector())

    @app.get("/api/metrics")
    def metrics():
        """Prometheus text format."""
        return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)
