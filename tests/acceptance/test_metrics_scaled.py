"""Every metric exact with ``gunicorn -w 3`` and two Celery workers of two processes each.

The arrangement of a real deployment, on the session's Postgres and Redis: gunicorn
with the shipped ``app.observability.gunicorn_conf`` (workers recycled every few dozen
requests), and
two ``celery worker`` processes with distinct names and metrics ports (pool children
recycled every few tasks). A known workload goes through gunicorn's HTTP port; then
``/api/metrics`` is scraped several times (whichever gunicorn worker answers, the
figures are the same) and so is each worker's port, and every figure is checked: the
event metrics summed over web and workers, as Prometheus sums them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.mmap_dict import mmap_key
from prometheus_client.parser import text_string_to_metric_families

from app import processes
from app.dev.embedded import free_port
from tests.conftest import TMP
from tests.conftest import ApiUser
from tests.conftest import Process
from tests.conftest import celery_process
from tests.conftest import stop_worker
from tests.conftest import wait_until

pytestmark = [pytest.mark.acceptance, pytest.mark.slow]

PROPOSAL = [{"path": "hello.py", "content": "print('hello')\n"}]
#: The workload: jobs of each kind.
SIMPLE, APPROVED, REJECTED, CANCELLED, FLAKY, EXPIRING = 4, 3, 2, 1, 2, 2
#: Attempts of test-flaky's ``break`` step before the job fails (the step's max_attempts).
ATTEMPTS = 3
#: The legacy names the guide fixed; promtool may flag them, and nothing else.
LEGACY = ("agent_jobs_total", "agent_checkpoints_pending", "agent_worker_active_jobs")


def answers(process: Process, url: str) -> bool:
    process.alive()
    try:
        return requests.get(url, timeout=5).status_code == 200
    except requests.ConnectionError:
        return False


class Deployment:
    """gunicorn -w 3 and two Celery workers; the URLs to scrape and the directories they use."""

    def __init__(self, base: Path) -> None:
        self.web_dir = base / "web-metrics"
        self.worker_tmp = base / "worker-tmp"
        self.worker_tmp.mkdir(parents=True)
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.web = Process(
            "metrics-gunicorn",
            # Workers are recycled during the workload: what they counted must stay.
            processes.web_argv(f"127.0.0.1:{port}", "--workers", "3", "--max-requests", "50"),
            {
                **os.environ,
                "PROMETHEUS_MULTIPROC_DIR": str(self.web_dir),
                # It outlives each test's database: connections are pinged before use.
                "DATABASE_IDLE_PING_SECONDS": "0",
            },
        )
        self.workers: list[Process] = []
        self.worker_urls: list[str] = []
        for letter in "ab":
            metrics_port = free_port()
            options = ["--concurrency", "2"]
            options += ["--hostname", f"metrics-{letter}-{uuid.uuid4().hex[:6]}@%h"]
            options += ["--without-mingle", "--without-gossip"]
            # Pool children are recycled too: their files stay in the worker's directory.
            options += ["--max-tasks-per-child", "4"]
            env = {
                **os.environ,
                "WORKER_METRICS_PORT": str(metrics_port),
                "WORKER_METRICS_HOST": "127.0.0.1",
                "TMPDIR": str(self.worker_tmp),
            }
            self.workers.append(
                celery_process("worker", *options, name=f"metrics-worker-{letter}", env=env)
            )
            self.worker_urls.append(f"http://127.0.0.1:{metrics_port}/metrics")

    def start(self) -> None:
        self.seed_stale_file()
        self.web.start()
        for worker in self.workers:
            worker.start()
        wait_until(lambda: answers(self.web, f"{self.url}/api/health"), 60, "gunicorn")
        for worker, url in zip(self.workers, self.worker_urls, strict=True):
            wait_until(lambda w=worker, u=url: answers(w, u), 60, f"{worker.name}'s metrics port")

    def seed_stale_file(self) -> None:
        """A file an earlier run left in the web's directory: the start must wipe it."""
        self.web_dir.mkdir(parents=True)
        stale = MmapedDict(str(self.web_dir / "counter_1.db"))
        key = mmap_key(
            "agentq_jobs_created",
            "agentq_jobs_created_total",
            ["job_type"],
            ["simple-task"],
            "Jobs created, by job type",
        )
        stale.write_value(key, 1000.0, 0.0)
        stale.close()

    def stop(self) -> None:
        for process in (*self.workers, self.web):
            process.stop()


@pytest.fixture(scope="module")
def deployment(app, celery_worker):
    """The arrangement, with the session's worker stopped so that only these two run."""
    stop_worker(app, celery_worker)
    base = TMP / f"metrics-scaled-{uuid.uuid4().hex[:6]}"
    deployment = Deployment(base)
    try:
        deployment.start()
        yield deployment
    finally:
        deployment.stop()
    shutil.rmtree(base, ignore_errors=True)


class HttpClient:
    """The test client's ``open`` over real HTTP to gunicorn; counts the requests it sends."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sent = 0
        self._lock = threading.Lock()

    def open(self, path: str, method: str = "GET", headers=None, json=None):
        with self._lock:
            self.sent += 1
        response = requests.request(method, self.url + path, headers=headers, json=json, timeout=30)
        response.get_json = response.json
        return response


def http_user(app, client: HttpClient, name: str, *, admin: bool) -> ApiUser:
    from app.auth import create_user

    with app.app_context():
        user, _row, token = create_user(name, admin=admin)
        return ApiUser(client, name, token, user.id)


# -- scraping --------------------------------------------------------------------------------


def scrape(url: str) -> dict:
    """``{sample name: {labels as a sorted tuple: value}}`` of one scrape."""
    response = requests.get(url, timeout=10)
    assert response.status_code == 200, response.text
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def figures(scrapes: list[dict], name: str, *labels: str) -> dict[tuple, float]:
    """The nonzero values of ``name`` summed over ``scrapes`` by ``labels`` (as Prometheus'
    ``sum by (labels)``)."""
    total: dict[tuple, float] = {}
    for samples in scrapes:
        for key, value in samples.get(name, {}).items():
            by = tuple(dict(key)[label] for label in labels)
            total[by] = total.get(by, 0) + value
    return {by: value for by, value in total.items() if value}


def gauge(samples: dict, name: str, **labels: str) -> float:
    return samples[name][tuple(sorted(labels.items()))]


def sweeps_queued(deployment: Deployment) -> float:
    samples = scrape(f"{deployment.url}/api/metrics")
    return gauge(samples, "agentq_queue_depth", queue="agentq.sweeps")


def event_figures(samples: dict) -> dict:
    """The samples of agentq's event metrics and the HTTP metrics."""
    return {n: v for n, v in samples.items() if n.startswith(("agentq_", "flask_"))}


# -- the test --------------------------------------------------------------------------------


def test_every_figure_is_exact_with_three_web_and_two_worker_processes(
    deployment, app, files, tmp_path
):
    """Given gunicorn -w 3 and two workers of two processes each, when simple jobs complete,
    code-generation jobs are approved, rejected and cancelled, flaky jobs fail after their
    retries and approvals expire, then /api/metrics (scraped six times) and the two worker
    ports give exactly the counts of jobs, decisions, durations, steps and retries that
    happened, the guide's gauges count the jobs by status, nothing is left queued or in the
    outbox, and the HTTP counters cover every request sent.
    """
    client = HttpClient(deployment.url)
    user = http_user(app, client, "metrics-user", admin=False)
    admin = http_user(app, client, "metrics-admin", admin=True)
    files.broken.touch()
    flaky_input = files.input()
    expiring_input = {**files.input(), "ask_in_review": True, "expires_in": 1}
    work = (
        [("simple-task", {"n": i}) for i in range(SIMPLE)]
        + [("code-generation", {"files": PROPOSAL})] * (APPROVED + REJECTED + CANCELLED)
        + [("test-flaky", flaky_input)] * FLAKY
        + [("test-runtime-approval", expiring_input)] * EXPIRING
    )

    # Submitted four at a time, so that several gunicorn workers take them.
    with ThreadPoolExecutor(4) as pool:
        jobs = list(pool.map(lambda w: (w[0], user.enqueue(w[0], w[1])["id"]), work))
    by_type: dict[str, list[str]] = {}
    for job_type, job_id in jobs:
        by_type.setdefault(job_type, []).append(job_id)
    for job_id in by_type["simple-task"]:
        user.wait_for(job_id, "COMPLETED")
    for job_id in by_type["test-flaky"] + by_type["test-runtime-approval"]:
        user.wait_for(job_id, "FAILED")
    waiting = by_type["code-generation"]
    for job_id in waiting:
        user.wait_for(job_id, "WAITING_APPROVAL")

    # While the reviews wait: the guide's gauges, from Postgres.
    web = scrape(f"{deployment.url}/api/metrics")
    assert gauge(web, "agent_jobs_total", status="WAITING_APPROVAL") == len(waiting)
    assert gauge(web, "agent_checkpoints_pending") == len(waiting)
    assert gauge(web, "agentq_checkpoint_oldest_pending_age_seconds") > 0

    approved = waiting[:APPROVED]
    rejected = waiting[APPROVED : APPROVED + REJECTED]
    cancelled = waiting[APPROVED + REJECTED :]
    for job_id in approved:
        response = admin.approve(user.pending_checkpoint(job_id)["id"], reason="fine")
        assert response.status_code == 200, response.get_json()
    for job_id in rejected:
        response = admin.reject(user.pending_checkpoint(job_id)["id"], "no")
        assert response.status_code == 200, response.get_json()
    for job_id in cancelled:
        assert user.patch(job_id, "cancel").status_code == 200
    for job_id in approved:
        user.wait_for(job_id, "COMPLETED")

    def settled():
        samples = scrape(f"{deployment.url}/api/metrics")
        depth = samples["agentq_queue_depth"]
        waiting = sum(v for labels, v in depth.items() if dict(labels)["queue"] != "agentq.sweeps")
        quiet = gauge(samples, "agentq_outbox_backlog") == 0 and waiting == 0
        return samples if quiet else None

    web_scrapes = [wait_until(settled, 30, "an empty outbox and steps queue")]
    web_scrapes += [scrape(f"{deployment.url}/api/metrics") for _ in range(5)]
    workers = [scrape(url) for url in deployment.worker_urls]
    web = web_scrapes[0]

    # Whichever gunicorn worker answered, the same figures (scrapes are not counted).
    for other in web_scrapes[1:]:
        assert event_figures(other) == event_figures(web)
    # The guide's gauges, and the scrape-time gauges: all from the web only.
    codegen = APPROVED + REJECTED + CANCELLED
    assert figures([web], "agent_jobs_total", "status") == {
        ("COMPLETED",): SIMPLE + APPROVED,
        ("FAILED",): REJECTED + FLAKY + EXPIRING,
        ("CANCELLED",): CANCELLED,
    }
    assert gauge(web, "agent_checkpoints_pending") == 0
    assert gauge(web, "agentq_checkpoint_oldest_pending_age_seconds") == 0
    assert gauge(web, "agent_worker_active_jobs") == 0
    assert gauge(web, "agentq_outbox_backlog") == 0
    assert gauge(web, "agentq_outbox_oldest_age_seconds") == 0
    # Beat keeps sending sweeps, which the workers take at once.
    wait_until(lambda: sweeps_queued(deployment) == 0, 30, "the sweeps queue to be empty")
    for samples in workers:
        assert not [n for n in samples if n.startswith(("agent_", "flask_"))], samples.keys()

    # The event metrics, summed over the web and both workers.
    everywhere = [web, *workers]
    assert figures(everywhere, "agentq_jobs_created_total", "job_type") == {
        ("simple-task",): SIMPLE,
        ("code-generation",): codegen,
        ("test-flaky",): FLAKY,
        ("test-runtime-approval",): EXPIRING,
    }
    decisions = {
        ("code-generation", "approved"): APPROVED,
        ("code-generation", "rejected"): REJECTED,
        ("test-runtime-approval", "rejected"): EXPIRING,
    }
    assert figures(everywhere, "agentq_checkpoints_decided_total", "job_type", "outcome") == (
        decisions
    )
    assert figures(everywhere, "agentq_checkpoint_timeouts_total", "job_type", "on_timeout") == {
        ("test-runtime-approval", "reject"): EXPIRING
    }
    assert figures(everywhere, "agentq_checkpoint_wait_seconds_count", "job_type", "outcome") == (
        decisions
    )
    assert figures(everywhere, "agentq_job_duration_seconds_count", "job_type", "outcome") == {
        ("simple-task", "completed"): SIMPLE,
        ("code-generation", "completed"): APPROVED,
        ("code-generation", "failed"): REJECTED,
        ("code-generation", "cancelled"): CANCELLED,
        ("test-flaky", "failed"): FLAKY,
        ("test-runtime-approval", "failed"): EXPIRING,
    }
    assert figures(
        everywhere, "agentq_step_duration_seconds_count", "job_type", "step", "outcome"
    ) == {
        ("simple-task", "run", "succeeded"): SIMPLE,
        ("code-generation", "propose", "succeeded"): codegen,
        ("code-generation", "write", "succeeded"): APPROVED,
        ("test-flaky", "prepare", "succeeded"): FLAKY,
        ("test-flaky", "break", "failed"): FLAKY * ATTEMPTS,
        ("test-runtime-approval", "plan", "succeeded"): EXPIRING,
        ("test-runtime-approval", "review", "succeeded"): EXPIRING,
    }
    assert figures(everywhere, "agentq_step_retries_total", "job_type", "step") == {
        ("test-flaky", "break"): FLAKY * (ATTEMPTS - 1),
    }
    # Histograms agree with themselves: the +Inf bucket is the count.
    for name in ("checkpoint_wait", "job_duration", "step_duration"):
        count = sum(figures(everywhere, f"agentq_{name}_seconds_count").values())
        inf = figures(everywhere, f"agentq_{name}_seconds_bucket", "le")[("+Inf",)]
        assert inf == count

    # HTTP metrics: every request sent is counted, grouped by route, never by job id.
    assert sum(figures([web], "flask_http_request_total").values()) >= client.sent
    duration = figures([web], "flask_http_request_duration_seconds_count", "method", "url_rule")
    assert duration[("POST", "/api/agent-jobs")] == len(work)
    assert duration[("GET", "/api/agent-jobs/<uuid:job_id>")] > 0
    routes = {route for _method, route in duration}
    assert not any(job_id in route for _type, job_id in jobs for route in routes)
    # Several gunicorn processes wrote their figures (workers were recycled by max-requests).
    pids = {p.stem.rsplit("_", 1)[1] for p in deployment.web_dir.glob("*.db")}
    assert len(pids) >= 3, sorted(pids)
    # Each worker keeps its own directory, named after its main process.
    assert {p.name for p in deployment.worker_tmp.glob("agentq-worker-metrics-*")} == {
        f"agentq-worker-metrics-{w.proc.pid}" for w in deployment.workers
    }


def test_promtool_flags_nothing_but_the_legacy_names(deployment, app, files):
    """Given the arrangement after a few jobs, when ``promtool check metrics`` lints
    /api/metrics and a worker's port, then it flags nothing but the guide's legacy names.
    """
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing (Debian package prometheus); .ci/run installs it")
        pytest.skip("promtool is not installed (Debian package prometheus)")
    client = HttpClient(deployment.url)
    user = http_user(app, client, "lint-user", admin=False)
    admin = http_user(app, client, "lint-admin", admin=True)
    user.wait_for(user.enqueue("simple-task")["id"], "COMPLETED")
    job = user.enqueue("code-generation", {"files": PROPOSAL})["id"]
    user.wait_for(job, "WAITING_APPROVAL")
    assert admin.reject(user.pending_checkpoint(job)["id"], "no").status_code == 200

    assert "agentq_jobs_created_total" in requests.get(f"{deployment.url}/api/metrics").text
    for url in (f"{deployment.url}/api/metrics", *deployment.worker_urls):
        text = requests.get(url, timeout=10).text
        done = subprocess.run(
            [promtool, "check", "metrics"], input=text, capture_output=True, text=True
        )
        flagged = {line.split()[0] for line in (done.stdout + done.stderr).splitlines() if line}
        assert flagged <= set(LEGACY), done.stdout + done.stderr
        # promtool exits 3 for lint problems, 1 when it cannot parse the text at all.
        assert done.returncode == (3 if flagged else 0), done.stdout + done.stderr


def test_each_worker_removes_its_directory_when_it_stops(deployment):
    """Given the two workers running, when they stop, then their metrics directories are
    gone (a new worker starts with a new, empty one)."""
    assert len(list(deployment.worker_tmp.glob("agentq-worker-metrics-*"))) == 2
    for worker in deployment.workers:
        worker.stop()
        assert worker.proc.returncode == 0, worker.log.read_text()[-3000:]
    assert list(deployment.worker_tmp.glob("agentq-worker-metrics-*")) == []
