"""Flower (PyPI ``flower``) against the test broker, through its HTTP API.

Flower learns about tasks from Celery's events, which travel over Redis pub/sub and
are lost while nobody listens: Flower is started, and seen to receive the worker's
heartbeats, before any job runs. It runs on ``worker.flower`` (agentq's settings on
kombu's own Redis transport; see that module for why ``-A worker`` cannot count queues).

Task events are off by default; as the README tells Flower's users, the worker and
the publisher here run with ``CELERY_TASK_EVENTS=1``.
"""

from __future__ import annotations

import os
import sys
import uuid

import pytest
import redis
import requests

from app import routing
from app.dev.embedded import free_port
from tests.conftest import ApiUser
from tests.conftest import Process
from tests.conftest import celery_process
from tests.conftest import stop_worker
from tests.conftest import wait_until

pytestmark = [pytest.mark.acceptance, pytest.mark.slow]

PROPOSAL = [{"path": "hello.py", "content": "print('hello')\n"}]


class Flower:
    """``celery -A worker.flower flower`` on a loopback port, its output in a log file."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        argv = [sys.executable, "-m", "celery", "-A", "worker.flower", "flower"]
        argv += [f"--port={self.port}", "--address=127.0.0.1"]
        self.process = Process("flower", argv, {"FLOWER_UNAUTHENTICATED_API": "1"})

    def start(self) -> None:
        self.process.start()
        wait_until(self.answers, 30, f"Flower to answer on {self.url} (log: {self.process.log})")

    def answers(self) -> bool:
        self.process.alive()
        try:
            return requests.get(f"{self.url}/healthcheck", timeout=2).text == "OK"
        except requests.ConnectionError:
            return False

    def get(self, path: str, **params):
        response = requests.get(f"{self.url}{path}", params=params, timeout=10)
        assert response.status_code == 200, (path, response.status_code, response.text)
        return response.json()

    def stop(self) -> None:
        self.process.stop(timeout=10)


@pytest.fixture(scope="module")
def flower(servers):
    flower = Flower()
    flower.start()
    yield flower
    flower.stop()


#: What the README says to set on web and workers for Flower.
EVENTS = {"CELERY_TASK_EVENTS": "1"}


@pytest.fixture(scope="module")
def events_worker(app, celery_worker):
    """The session's worker stopped, and one with task events on in its place."""
    stop_worker(app, celery_worker)
    name = f"flower-{uuid.uuid4().hex[:6]}"
    worker = celery_process(
        "worker",
        *("--concurrency", "1", "--hostname", f"{name}@%h"),
        *("--without-mingle", "--without-gossip"),
        name="events-worker",
        env=EVENTS,
    )
    worker.start()
    yield worker
    worker.stop()


@pytest.fixture
def events_app(servers, monkeypatch_module):
    """An app of the web whose publishing sends task-sent events; one per test, so that its
    pool holds no connection to an earlier test's database."""
    from app import create_app

    for name, value in EVENTS.items():
        monkeypatch_module.setenv(name, value)
    return create_app({"TESTING": True, "HTTP_METRICS": False})


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture
def users(events_app, user, admin):
    """``user`` and ``admin`` calling the events app."""
    client = events_app.test_client()
    return (
        ApiUser(client, user.name, user.token, user.id),
        ApiUser(client, admin.name, admin.token, admin.id),
    )


@pytest.fixture
def worker_name(events_worker, app, flower) -> str:
    """The events worker's name, once Flower receives its heartbeats (so it sees what
    follows)."""
    prefix = events_worker.argv[events_worker.argv.index("--hostname") + 1].split("@")[0]

    def heard():
        workers = flower.get("/api/workers", status=1)
        return next((n for n, up in workers.items() if n.startswith(prefix + "@") and up), None)

    return wait_until(heard, 60, f"Flower to receive the heartbeats of {prefix}")


#: The queue of simple-task's steps (``app.routing``).
SIMPLE = routing.STEPS_PREFIX + "simple-task"


def steps_in_redis() -> dict[str, int]:
    """simple-task's queue as kombu stores it: one Redis list per priority level."""
    r = redis.Redis.from_url(os.environ["REDIS_URL"])
    lengths = {}
    for key in r.scan_iter(match=f"{SIMPLE}*"):
        if r.type(key) == b"list":
            lengths[key.decode()] = r.llen(key)
    return lengths


def test_flower_shows_the_worker_and_the_steps_of_a_finished_job(flower, worker_name, users, app):
    """Given Flower listening, when a code-generation job is approved and completes,
    then Flower lists the worker with the queues it consumes (every queue) and agentq's
    tasks, and each step task of the job under its readable name, succeeded on that
    worker, sent to code-generation's queue before the approval and to the fast lane after.
    """
    user, admin = users
    job = user.enqueue("code-generation", {"files": PROPOSAL})
    user.wait_for(job["id"], "WAITING_APPROVAL")
    response = admin.approve(user.pending_checkpoint(job["id"])["id"], reason="fine")
    assert response.status_code == 200, response.get_json()
    user.wait_for(job["id"], "COMPLETED")

    workers = flower.get("/api/workers", refresh=1)
    assert worker_name in workers, workers.keys()
    info = workers[worker_name]
    assert {q["name"] for q in info["active_queues"]} == {
        *routing.step_queues(app.config),
        routing.SWEEPS_QUEUE,
    }
    assert {"agentq.steps.code-generation", "agentq.continuations"} <= set(
        routing.step_queues(app.config)
    )
    assert {"agentq.code-generation.propose", "agentq.code-generation.write"} <= set(
        info["registered"]
    )

    queues = {"propose": "agentq.steps.code-generation", "write": "agentq.continuations"}
    for step, queue in queues.items():
        name = f"agentq.code-generation.{step}"

        def of_the_job(name=name):
            tasks = flower.get("/api/tasks", taskname=name, state="SUCCESS")
            return [t for t in tasks.values() if job["id"] in (t["args"] or "")]

        [task] = wait_until(of_the_job, 30, f"Flower to list {name} of job {job['id']}")
        assert task["worker"] == worker_name
        # task_send_sent_event: Flower saw each step published, and the queue it went to.
        assert task["sent"] is not None
        assert task["routing_key"] == queue
        assert task["received"] <= task["started"] <= task["succeeded"]


def test_flower_counts_a_queue_across_its_priority_lists(flower, worker_name, users):
    """Given the fleet paused, when jobs of five priorities wait in simple-task's queue, then
    Flower's queue length is the sum of every priority list kombu filled in Redis;
    after resuming, the jobs complete and Flower counts an empty queue.
    """
    user, admin = users
    # Flower lists the queues its workers consumed when it last asked them: ask now,
    # before the pause takes the step queues off the worker's queues.
    assert any(
        q["name"] == SIMPLE
        for q in flower.get("/api/workers", refresh=1)[worker_name]["active_queues"]
    )
    response = admin.request("DELETE", "/api/admin/agent-worker")
    assert response.status_code == 200, response.get_json()
    try:
        wait_until(
            lambda: (
                not admin.request("GET", "/api/admin/agent-worker").get_json()["workers"][0][
                    "consuming"
                ]
            ),
            30,
            "the worker to stop consuming its step queues",
        )
        priorities = [0, 3, 5, 5, 10]
        jobs = [user.enqueue("simple-task", {"n": i}, priority=p) for i, p in enumerate(priorities)]
        lists = wait_until(
            lambda: (d := steps_in_redis()) and sum(d.values()) == len(jobs) and d,
            30,
            f"{len(jobs)} step messages in Redis",
        )
        # kombu keeps one list per level; agentq priority p is kombu priority 10 - p.
        assert lists == {SIMPLE: 1, f"{SIMPLE}:5": 2, f"{SIMPLE}:7": 1, f"{SIMPLE}:10": 1}

        queues = {
            q["name"]: q["messages"] for q in flower.get("/api/queues/length")["active_queues"]
        }
        assert queues[SIMPLE] == len(jobs)
    finally:
        response = admin.request("POST", "/api/admin/agent-worker")
        assert response.status_code == 200, response.get_json()

    for job in jobs:
        user.wait_for(job["id"], "COMPLETED")
    wait_until(
        lambda: (
            {
                q["name"]: q["messages"] for q in flower.get("/api/queues/length")["active_queues"]
            }.get(SIMPLE)
            == 0
        ),
        30,
        "Flower to count an empty simple-task queue",
    )
