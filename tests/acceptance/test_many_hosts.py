"""agentq spread over hosts: a database host and three worker hosts on one network.

The hosts are Linux network namespaces on a bridge (``tests/acceptance/netns.py``), on
10.231.0.0/24, named ``aq<pid>-...`` so that runs at once do not meet; making them needs
root, so elsewhere the tests are skipped, saying why (under ``CI`` they fail instead).
Nothing they send reaches the machine's interfaces or its own Postgres, Redis or RabbitMQ.

- ``db`` (10.231.0.1): Postgres on :5432 and Redis on :6379 (the embedded servers, bound
  to the host's address), the web (gunicorn on :8000) and beat. The test's own calls, to
  the API and to the step ledger in Postgres, are made from a thread inside this host.
- ``host1`` to ``host3`` (10.231.0.2 to .4): one ``agentq worker`` each, one process,
  named ``worker@hostN``, with ``DATABASE_URL`` and ``REDIS_URL`` naming the db host and
  its metrics on :9808 of its own address.

The tests share the hosts; each leaves every host on the network and the fleet running.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from app import processes
from app.config import sqlalchemy_url
from app.dev.embedded import EmbeddedPostgres
from app.dev.embedded import EmbeddedRedis
from tests.acceptance import netns
from tests.conftest import ROOT
from tests.conftest import TMP
from tests.conftest import Process
from tests.conftest import wait_until

pytestmark = [pytest.mark.acceptance, pytest.mark.slow]

FLEET = "/api/admin/agent-worker"
HOSTS = ("host1", "host2", "host3")
WORKERS = {f"worker@{name}" for name in HOSTS}
METRICS_PORT = 9808
FILES = [{"path": "hello.txt", "content": "written on another host\n"}]

#: The step ledger of a job, in the order the attempts started.
LEDGER = sa.text(
    "SELECT step, attempt, status, worker FROM job_steps WHERE job_id = :job_id "
    "ORDER BY started_at, attempt"
)
OUTBOX = sa.text("SELECT count(*) FROM outbox")
SUCCEEDED = sa.text(
    "SELECT count(*) FROM job_steps WHERE worker = :worker AND status = 'succeeded'"
)


class Gate:
    """Files the ``test-gated`` handler's steps use: its ``wait`` step runs until ``open``."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True)
        self.marks = directory / "marks"
        self.gate = directory / "gate"
        self.broken = directory / "broken"

    def input(self) -> dict:
        return {"marks": str(self.marks), "gate": str(self.gate), "broken": str(self.broken)}

    def open(self) -> None:
        self.gate.touch()

    def runs(self) -> list[str]:
        return self.marks.read_text().split() if self.marks.exists() else []


class Cluster:
    """The hosts, and an admin's calls to the web and reads of the ledger, made on ``db``;
    jobs are submitted by another user (``submitter``'s token), since their submitter
    may not decide them."""

    def __init__(
        self,
        db: netns.Host,
        hosts: list[netns.Host],
        token: str,
        submitter: str,
        database_url: str,
    ) -> None:
        self.db = db
        self.hosts = {f"worker@{host.name}": host for host in hosts}
        self.web = f"http://{db.address}:8000"
        self.headers = {"Authorization": f"Bearer {token}"}
        self.submitter = {"Authorization": f"Bearer {submitter}"}
        self.engine = sa.create_engine(sqlalchemy_url(database_url), poolclass=sa.pool.NullPool)

    def request(self, method: str, path: str, headers=None, **kwargs) -> requests.Response:
        return self.db.call(
            requests.request,
            method,
            self.web + path,
            headers=headers or self.headers,
            timeout=10,
            **kwargs,
        )

    def enqueue(self, job_type: str, input_data: dict) -> dict:
        body = {"jobType": job_type, "taskDescription": "on many hosts", "inputData": input_data}
        response = self.request("POST", "/api/agent-jobs", headers=self.submitter, json=body)
        assert response.status_code == 201, response.text
        return response.json()["job"]

    def job(self, job_id: str) -> dict:
        response = self.request("GET", f"/api/agent-jobs/{job_id}")
        assert response.status_code == 200, response.text
        return response.json()["job"]

    def wait_for(self, job_id: str, *statuses: str, timeout: float = 60) -> dict:
        return wait_until(
            lambda: (job := self.job(job_id))["status"] in statuses and job,
            timeout,
            f"job {job_id} to be {'/'.join(statuses)}",
        )

    def fleet(self) -> dict:
        response = self.request("GET", FLEET)
        assert response.status_code == 200, response.text
        return response.json()

    def consuming(self) -> set[str]:
        """The workers that answered the fleet query and consume their queues."""
        return {w["name"] for w in self.fleet()["workers"] if w["consuming"]}

    def _read(self, statement, **params) -> list:
        with self.engine.connect() as conn:
            return list(conn.execute(statement, params))

    def ledger(self, job_id: str) -> list[tuple[str, int, str, str]]:
        """The job's rows in ``job_steps``: (step, attempt, status, worker)."""
        return [tuple(row) for row in self.db.call(self._read, LEDGER, job_id=job_id)]

    def outbox(self) -> int:
        """Dispatch intents not yet published to Redis."""
        return self.db.call(self._read, OUTBOX)[0][0]

    def succeeded(self, worker: str) -> int:
        """Step attempts the ledger says the worker ran to success."""
        return self.db.call(self._read, SUCCEEDED, worker=worker)[0][0]

    def steps_run(self, worker: str) -> float:
        """Steps the worker ran to success, from its own metrics endpoint on its host."""
        host = self.hosts[worker]
        url = f"http://{host.address}:{METRICS_PORT}/metrics"
        text = self.db.call(requests.get, url, timeout=10).text
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "agentq_step_duration_seconds_count"
            and sample.labels.get("outcome") == "succeeded"
        )


def worker_of(ledger: list[tuple], step: str) -> str:
    """The worker of the step's only attempt."""
    (worker,) = [row[3] for row in ledger if row[0] == step]
    return worker


def holds(predicate, seconds: float, message: str) -> None:
    """Poll ``predicate`` for ``seconds``; fail as soon as it is false."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert predicate(), message
        time.sleep(0.2)


def agentq(env: dict[str, str], *args: str) -> str:
    """``agentq *args`` with ``env``; its output, the test failing when it fails."""
    done = subprocess.run(
        [str(Path(sys.executable).parent / "agentq"), *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def cluster():
    reason = netns.unavailable()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    # Not under pytest's basetemp: pytest makes its parent 0700 again whenever a session
    # starts, and the Postgres server's user must reach its data directory.
    tmp = TMP / "many-hosts"
    network = netns.Network(f"aq{os.getpid()}")
    pg = redis = None
    try:
        db = network.add("db")
        hosts = [network.add(name) for name in HOSTS]
        pg = EmbeddedPostgres(tmp / "postgres", host=db.address, port=5432, durable=False)
        redis = EmbeddedRedis(tmp / "redis", host=db.address, port=6379)
        redis_url = db.call(redis.start)
        env = {
            "DATABASE_URL": db.call(pg.start),
            "REDIS_URL": redis_url,
            # The broker too, whatever the session's is (a RabbitMQ on the machine's loopback).
            "BROKER_URL": redis_url,
            "AGENTQ_HOME": str(tmp / "home"),
            "WORKSPACE_ROOT": str(tmp / "workspaces"),
        }
        db.call(agentq, env, "db", "upgrade")
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("AGENTQ_HOME", env["AGENTQ_HOME"])  # beat's schedule file
            beat = processes.beat_argv()
        db.start(Process("hosts-web", processes.web_argv(f"{db.address}:8000"), env))
        db.start(Process("hosts-beat", beat, env))
        for host in hosts:
            argv = processes.worker_argv(
                *("--concurrency", "1", "--hostname", f"worker@{host.name}"),
                *("--without-mingle", "--without-gossip"),
            )
            port = str(METRICS_PORT)
            worker_env = {**env, "WORKER_METRICS_HOST": host.address, "WORKER_METRICS_PORT": port}
            host.start(Process(f"hosts-worker-{host.name}", argv, worker_env))
        # While they start.
        token = db.call(agentq, env, "users", "create", "admin", "--admin").split()[-1]
        submitter = db.call(agentq, env, "users", "create", "agent").split()[-1]
        cluster = Cluster(db, hosts, token, submitter, env["DATABASE_URL"])
        wait_until(lambda: _answers(cluster), 90, "the web to answer on the db host")
        wait_until(lambda: cluster.consuming() == WORKERS, 90, "three workers consuming")
        yield cluster
    finally:
        network.stop()
        for server in (redis, pg):
            if server is not None:
                server.stop()
        network.close()


def _answers(cluster: Cluster) -> bool:
    for host in cluster.db, *cluster.hosts.values():
        for process in host.processes:
            process.alive()
    try:
        return cluster.request("GET", "/api/health").ok
    except requests.ConnectionError:
        return False


@pytest.fixture(autouse=True)
def whole(cluster):
    """After each test: every host on the network, the fleet resumed, all three consuming."""
    yield
    for host in cluster.hosts.values():
        host.rejoin()
    cluster.request("POST", FLEET)
    wait_until(lambda: cluster.consuming() == WORKERS, 90, "three workers consuming again")


def run_one_on_each_host(cluster: Cluster, gate: Gate) -> list[dict]:
    """Submit three ``test-gated`` jobs and wait until their ``wait`` steps hold all three
    workers (one process each: a busy worker takes no second message); open the gate and
    wait until they complete. Returns the jobs as completed."""
    jobs = [cluster.enqueue("test-gated", gate.input()) for _ in HOSTS]

    def waiting_on() -> set[str] | None:
        workers = {
            worker
            for job in jobs
            for step, _attempt, status, worker in cluster.ledger(job["id"])
            if step == "wait" and status == "running"
        }
        return workers if len(workers) == len(HOSTS) else None

    assert wait_until(waiting_on, 60, "a wait step running on each host") == WORKERS
    gate.open()
    done = [cluster.wait_for(job["id"], "COMPLETED", "FAILED") for job in jobs]
    assert [job["status"] for job in done] == ["COMPLETED"] * len(HOSTS)
    return done


def test_jobs_spread_over_every_host(cluster, tmp_path):
    """Given three worker hosts of one process each, when three jobs whose middle step waits
    on a gate are submitted, then one runs on each host (the ledger's worker column names all
    three), every step of each job succeeds once, and each host's metrics endpoint, on its
    own address, counts the steps the ledger says it ran."""
    done = run_one_on_each_host(cluster, Gate(tmp_path / "spread"))

    for job in done:
        ledger = cluster.ledger(job["id"])
        assert [(step, status) for step, _attempt, status, _worker in ledger] == [
            ("first", "succeeded"),
            ("wait", "succeeded"),
            ("last", "succeeded"),
        ]
        assert {row[3] for row in ledger} <= WORKERS
    for worker in WORKERS:
        ran = cluster.succeeded(worker)
        wait_until(lambda w=worker, n=ran: cluster.steps_run(w) == n, 30, f"{worker}'s metrics")


def test_a_continuation_runs_on_another_host(cluster):
    """Given a code-generation job parked at its approval after ``propose`` ran on one host,
    when that host is cut off from the network and an admin approves, then the continuation
    (``write``) runs on another host and the job completes; the host rejoins afterwards.

    Cutting the first chain's host off is what makes "another host" certain: on the network,
    any of the three idle workers may take the continuation, that one too. Cut off, its
    worker can neither take the message from Redis nor claim the step in Postgres. (Had
    Redis handed the message to its connection just before the cut, the job would be left
    with no message, which the stall sweep dispatches again after a lease.)
    """
    job = cluster.enqueue("code-generation", {"files": FILES})
    parked = cluster.wait_for(job["id"], "WAITING_APPROVAL")
    first = worker_of(cluster.ledger(job["id"]), "propose")
    (checkpoint,) = [c for c in parked["checkpoints"] if c["status"] == "PENDING"]
    host = cluster.hosts[first]

    host.cut()
    try:
        # The cut-off worker no longer answers the fleet query; the other two do.
        wait_until(lambda: cluster.consuming() == WORKERS - {first}, 30, f"{first} to drop out")
        response = cluster.request(
            "POST", f"/api/admin/agent-checkpoints/{checkpoint['id']}", json={"reason": "ship it"}
        )
        assert response.status_code == 200, response.text
        done = cluster.wait_for(job["id"], "COMPLETED", "FAILED")
    finally:
        host.rejoin()

    assert done["status"] == "COMPLETED", done["error"]
    assert done["result"]["written"] == ["hello.txt"]
    assert (Path(done["result"]["workspace"]) / "hello.txt").read_text() == FILES[0]["content"]
    ledger = cluster.ledger(job["id"])
    assert [(step, status) for step, _attempt, status, _worker in ledger] == [
        ("propose", "succeeded"),
        ("write", "succeeded"),
    ]
    assert worker_of(ledger, "write") in WORKERS - {first}


def test_pausing_the_fleet_pauses_every_host(cluster):
    """Given three consuming workers, when an admin pauses the fleet, then the fleet shows
    all three answering and none consuming, and a job submitted then stays PENDING with no
    step run while its message waits in Redis; when the admin resumes, all three consume
    again and the job completes."""
    response = cluster.request("DELETE", FLEET)
    assert response.status_code == 200, response.text

    def all_paused() -> dict | None:
        body = cluster.fleet()
        names = {w["name"] for w in body["workers"]}
        consuming = any(w["consuming"] for w in body["workers"])
        return body if names == WORKERS and not consuming else None

    body = wait_until(all_paused, 30, "all three workers to stop consuming")
    assert body["worker"]["paused"] is True
    assert body["worker"]["isRunning"] is False

    job = cluster.enqueue("simple-task", {"while": "paused"})
    wait_until(lambda: cluster.outbox() == 0, 30, "the job's message to be in Redis")
    # Longer than a worker's check of the paused flag (every 3 s) and several sweeps.
    holds(
        lambda: cluster.job(job["id"])["status"] == "PENDING" and cluster.ledger(job["id"]) == [],
        4,
        "a job ran while the fleet was paused",
    )

    response = cluster.request("POST", FLEET)
    assert response.status_code == 200, response.text
    wait_until(lambda: cluster.consuming() == WORKERS, 30, "all three workers to consume again")
    done = cluster.wait_for(job["id"], "COMPLETED", "FAILED")
    assert done["status"] == "COMPLETED", done["error"]
    assert worker_of(cluster.ledger(job["id"]), "run") in WORKERS


def test_a_host_cut_off_mid_step_loses_nothing_and_rejoins(cluster, tmp_path):
    """Given a job whose ``wait`` step runs on one host, when that host is cut off from the
    network, then its claim's lease lapses and another host takes the step; when the host
    comes back, its worker finds that its attempt, still running, lost its claim; the other
    host finishes the step and the job completes with each step advanced once, the stale
    attempt's result is discarded, and the host's worker takes new work.

    The gate stays shut until the host is back, so that its attempt ends after it can reach
    Postgres again, as a step outlasting an outage does. (One that ends while its host is
    still cut off cannot record anything: its task fails with the database unreachable.)
    """
    gate = Gate(tmp_path / "cut")
    job = cluster.enqueue("test-gated", gate.input())

    def running_wait() -> str | None:
        rows = [r for r in cluster.ledger(job["id"]) if r[0] == "wait" and r[2] == "running"]
        return rows[0][3] if rows and "wait" in gate.runs() else None

    cut = wait_until(running_wait, 60, "the wait step to run")
    host = cluster.hosts[cut]
    worker = host.processes[0]
    host.cut()
    try:

        def taken_over() -> list | None:
            rows = [(r[2], r[3]) for r in cluster.ledger(job["id"]) if r[0] == "wait"]
            return rows if len(rows) == 2 and rows[1][0] == "running" else None

        (lost, again) = wait_until(taken_over, 60, "another host to take the wait step")
        assert lost == ("lost", cut)
        assert again[1] in WORKERS - {cut}
    finally:
        host.rejoin()

    lost_claim = f"attempt 1 of step wait of job {job['id']} lost its claim"
    wait_until(lambda: lost_claim in worker.output(), 60, f"{cut} to find its claim lost")
    gate.open()
    done = cluster.wait_for(job["id"], "COMPLETED", "FAILED")
    assert done["status"] == "COMPLETED", done["error"]
    assert done["result"] == {"done": True}
    recovered = [log["message"] for log in done["logs"] if log["kind"] == "recovered"]
    assert recovered == ["Step wait lost its worker; queued again"]
    discarded = f"step wait of job {job['id']}: discarded"
    wait_until(lambda: discarded in worker.output(), 60, f"{cut} to discard its late result")

    # Back on the network, the worker answers and consumes, and runs one of three new jobs.
    wait_until(lambda: cut in cluster.consuming(), 90, f"{cut} to consume again")
    run_one_on_each_host(cluster, Gate(tmp_path / "after"))

    # The stale attempt changed nothing: each step advanced the job once.
    after = cluster.job(job["id"])
    assert (after["status"], after["result"]) == ("COMPLETED", {"done": True})
    ledger = cluster.ledger(job["id"])
    assert [(step, status) for step, _attempt, status, _worker in ledger] == [
        ("first", "succeeded"),
        ("wait", "lost"),
        ("wait", "succeeded"),
        ("last", "succeeded"),
    ]
    assert gate.runs() == ["first", "wait", "wait", "last"]
