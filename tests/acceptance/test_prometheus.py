"""A real Prometheus scrapes agentq: the shipped configuration, alerts and dashboard.

Needs Debian's ``prometheus`` package (``prometheus`` and ``promtool``): without it the
tests are skipped, saying why, and under CI they fail (``.ci/run`` installs it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
import requests

from app import processes
from app.dev.embedded import free_port
from tests.conftest import ROOT
from tests.conftest import Process
from tests.conftest import celery_process
from tests.conftest import wait_until

DEPLOY = ROOT / "deploy"
SCRIPT = DEPLOY / "prometheus" / "run-prometheus.sh"
DASHBOARD = DEPLOY / "grafana" / "agentq.json"

#: The metric names agreed for issue #5 (README "Monitoring"), as Prometheus stores them.
METRICS = {
    "up",
    "agent_jobs_total",
    "agent_checkpoints_pending",
    "agent_worker_active_jobs",
    "agentq_queue_depth",
    "agentq_outbox_backlog",
    "agentq_outbox_oldest_age_seconds",
    "agentq_checkpoint_oldest_pending_age_seconds",
    "agentq_jobs_created_total",
    "agentq_checkpoints_decided_total",
    "agentq_step_retries_total",
    "flask_http_request_total",
    *(
        f"{histogram}_{suffix}"
        for histogram in (
            "agentq_checkpoint_wait_seconds",
            "agentq_job_duration_seconds",
            "agentq_step_duration_seconds",
            "flask_http_request_duration_seconds",
        )
        for suffix in ("bucket", "count", "sum")
    ),
}


def binary(name: str) -> str:
    """The path of Debian's ``name`` (package prometheus): skip without it, fail in CI."""
    path = shutil.which(name)
    if path is None:
        reason = (
            f"no {name} on PATH: install Debian's prometheus package "
            "(`apt-get install prometheus`, which .ci/run does as root) to run this test"
        )
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return path


def promtool(*args: str) -> str:
    done = subprocess.run(
        [binary("promtool"), *args], cwd=SCRIPT.parent, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every query of the Grafana dashboard."""
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (agentq's, the exporter's and up)."""
    return set(re.findall(r"\b(?:agentq?_[a-z_]+|flask_[a-z_]+|up)\b(?=\s*[{\[)])", expr))


# -- the shipped files, checked with promtool ------------------------------------------------


def test_promtool_accepts_the_configuration_and_the_rules():
    assert "SUCCESS" in promtool("check", "config", "prometheus.yml")
    assert "SUCCESS: 6 rules found" in promtool("check", "rules", "alerts.yml")


def test_the_alerts_fire_when_they_should_and_only_then():
    """promtool's unit tests of alerts.yml (alerts_test.yml): each alert against made-up series."""
    promtool("test", "rules", "alerts_test.yml")


def test_the_dashboard_is_an_importable_grafana_dashboard_on_the_agreed_metrics():
    """The dashboard asks for its Prometheus as an input, its panels do not overlap, every
    query reads metrics agentq serves, and every metric agentq serves is on a panel."""
    dashboard = json.loads(DASHBOARD.read_text())
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    assert dashboard["uid"] == "agentq"
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells = set()
    for panel in panels:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        mine = {
            (x, y)
            for x in range(pos["x"], pos["x"] + pos["w"])
            for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not cells & mine, f"{panel['title']} overlaps another panel"
        cells |= mine
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
    used = set()
    for title, expr in dashboard_queries():
        names = metric_names(expr)
        assert names, f"{title}: no metric in {expr}"
        assert names <= METRICS, f"{title}: unknown {names - METRICS}"
        used |= names
    # A histogram is on a panel when one of its series is.
    shown = {re.sub(r"_(bucket|count|sum)$", "", m) for m in used}
    assert {re.sub(r"_(bucket|count|sum)$", "", m) for m in METRICS} == shown


# -- end to end: web, worker, Prometheus -------------------------------------------------------


def answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=5).status_code == 200
    except (requests.ConnectionError, requests.Timeout):  # not listening, or still booting
        return False


@pytest.fixture
def web(servers):
    """gunicorn with agentq's config (multiprocess metrics), two workers, on a free port."""
    port = free_port()
    argv = processes.web_argv(f"127.0.0.1:{port}", "--workers", "2")
    gunicorn = Process("prometheus-web", argv)
    gunicorn.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: gunicorn.alive() and answers(f"{url}/api/ready"), 60, "gunicorn")
        yield url
    finally:
        gunicorn.stop()


@pytest.fixture
def metrics_worker(no_worker, app):
    """A Celery worker (two processes) serving its metrics on a free loopback port.

    The session's worker is stopped (``no_worker``), so this one runs every step.
    """
    port = free_port()
    name = f"prometheus-{uuid.uuid4().hex[:6]}@%h"
    worker = celery_process(
        "worker",
        *("--concurrency", "2", "--without-mingle", "--without-gossip", "--hostname", name),
        name="prometheus-worker",
        env={"WORKER_METRICS_PORT": str(port), "WORKER_METRICS_HOST": "127.0.0.1"},
    )
    worker.start()
    try:
        wait_until(
            lambda: worker.running() and answers(f"http://127.0.0.1:{port}/metrics"),
            60,
            f"the worker's metrics port (log: {worker.log})",
        )
        yield f"127.0.0.1:{port}"
    finally:
        worker.stop()


@pytest.fixture
def prometheus_binary() -> str:
    """Checked first, so that a machine without it skips before starting anything."""
    return binary("prometheus")


class Prometheus:
    """deploy/prometheus/run-prometheus.sh, scraping every second, and its HTTP API."""

    def __init__(self, binary: str, directory: Path, web: str, workers: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            "PROMETHEUS": binary,
            "PROMETHEUS_DIR": str(directory),
            "PROMETHEUS_PORT": str(self.port),
            "PROMETHEUS_SCRAPE_INTERVAL": "1s",
            "AGENTQ_WEB_TARGETS": web,
            "AGENTQ_WORKER_TARGETS": workers,
        }
        self.process = Process("prometheus", ["bash", str(SCRIPT)], env)
        self.process.start()

    def api(self, path: str, **params) -> dict:
        response = requests.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
        body = response.json()
        assert body["status"] == "success", (path, params, body)
        return body["data"]

    def targets_up(self) -> dict[str, str] | None:
        """{job: health} once every target has been scraped, else None."""
        if not (self.process.alive() and answers(f"{self.url}/-/ready")):
            return None
        targets = self.api("targets")["activeTargets"]
        health = {t["labels"]["job"]: t["health"] for t in targets}
        return health if "unknown" not in health.values() else None

    def query(self, expr: str, by: str | None = None):
        """The value of a scalar-like query, or {label value: value} when ``by`` is given."""
        result = self.api("query", query=expr)["result"]
        if by is None:
            return float(result[0]["value"][1]) if result else None
        return {r["metric"][by]: float(r["value"][1]) for r in result}


@pytest.mark.acceptance
@pytest.mark.slow
def test_prometheus_scrapes_web_and_workers_and_answers_with_agentqs_figures(
    prometheus_binary, web, metrics_worker, user, admin, files, tmp_path
):
    """Given the web under gunicorn and a worker with its metrics port, when four jobs run
    (one approved, one waiting for approval, one that completes, one that fails after two
    retries) and run-prometheus.sh scrapes both with the shipped configuration, then
    Prometheus finds both jobs of targets up and answers agent_jobs_total and agentq's
    event metrics with the right figures, every dashboard query evaluates, and the
    alerting rules load and run without error.
    """

    def post(path: str, who, body: dict) -> dict:
        headers = {"Authorization": f"Bearer {who.token}"}
        response = requests.post(f"{web}{path}", json=body, headers=headers, timeout=10)
        assert response.status_code in (200, 201), response.text
        return response.json()

    def enqueue(job_type: str, input_data: dict) -> str:
        body = {"jobType": job_type, "taskDescription": "scraped", "inputData": input_data}
        return post("/api/agent-jobs", user, body)["job"]["id"]

    files.broken.touch()
    flaky = enqueue("test-flaky", files.input())
    simple = enqueue("simple-task", {"n": 1})
    proposal = {"files": [{"path": "a.py", "content": "a = 1\n"}]}
    generated = enqueue("code-generation", proposal)
    waiting = enqueue("code-generation", proposal)
    user.wait_for(generated, "WAITING_APPROVAL")
    checkpoint = user.pending_checkpoint(generated)["id"]
    post(f"/api/admin/agent-checkpoints/{checkpoint}", admin, {"reason": "fine"})
    for job_id in (simple, generated):
        user.wait_for(job_id, "COMPLETED")
    user.wait_for(flaky, "FAILED")
    user.wait_for(waiting, "WAITING_APPROVAL")
    assert files.runs() == ["prepare", "break", "break", "break"]

    prometheus = Prometheus(
        prometheus_binary, tmp_path / "prometheus", web.removeprefix("http://"), metrics_worker
    )
    try:
        health = wait_until(prometheus.targets_up, 60, "Prometheus to scrape every target")
        assert health == {"agentq-web": "up", "agentq-workers": "up"}, health

        expected = {"COMPLETED": 2, "FAILED": 1, "PENDING": 0, "RUNNING": 0}
        expected |= {"WAITING_APPROVAL": 1, "CANCELLED": 0}
        jobs = wait_until(
            lambda: (j := prometheus.query("agent_jobs_total", by="status")) == expected and j,
            30,
            "agent_jobs_total to reach Prometheus",
        )
        assert jobs == expected
        assert prometheus.query('agent_jobs_total{job="agentq-web"}', by="status") == expected
        assert prometheus.query("agent_checkpoints_pending") == 1
        assert prometheus.query("agentq_checkpoint_oldest_pending_age_seconds") > 0
        assert prometheus.query("agentq_outbox_backlog") == 0
        assert prometheus.query('sum(agentq_queue_depth{queue!="agentq.sweeps"})') == 0
        assert prometheus.query("agent_worker_active_jobs") == 0

        # Event metrics, from both jobs of targets: summed, as the dashboard does.
        def by(expr: str, label: str) -> dict:
            return prometheus.query(f"sum by ({label}) ({expr})", by=label)

        assert by("agentq_jobs_created_total", "job_type") == {
            "test-flaky": 1,
            "simple-task": 1,
            "code-generation": 2,
        }
        assert by("agentq_checkpoints_decided_total", "outcome") == {"approved": 1}
        assert by("agentq_checkpoint_wait_seconds_count", "outcome") == {"approved": 1}
        assert by("agentq_job_duration_seconds_count", "outcome") == {"completed": 2, "failed": 1}
        assert by("agentq_step_duration_seconds_count", "job_type") == {
            "code-generation": 3,
            "simple-task": 1,
            "test-flaky": 4,
        }
        assert by("agentq_step_retries_total", "step") == {"break": 2}
        assert prometheus.query('sum(flask_http_request_total{method="POST"})') == 5
        assert prometheus.query('sum(up{job="agentq-workers"})') == 1

        # Every dashboard query is valid PromQL on these series, and the metrics it reads exist.
        names = set(prometheus.api("label/__name__/values"))
        for title, expr in dashboard_queries():
            expr = expr.replace("$__rate_interval", "1m").replace("$job_type", ".*")
            prometheus.api("query", query=expr)
            missing = metric_names(expr) - names
            assert not missing, f"{title}: Prometheus has no {missing}"

        def evaluated():
            rules = [r for g in prometheus.api("rules")["groups"] for r in g["rules"]]
            return all(r["health"] != "unknown" for r in rules) and rules

        rules = wait_until(evaluated, 30, "the alerting rules to be evaluated")
        assert len(rules) == 6
        assert all(r["health"] == "ok" for r in rules), rules
    finally:
        prometheus.process.stop()
