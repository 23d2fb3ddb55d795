"""agentq on RabbitMQ (``BROKER_URL=amqp://...``) with no Redis at all: web, worker and beat
run on the machine's RabbitMQ (127.0.0.1:5672, guest/guest), in a virtual host of their own,
with classic queues and then again with quorum queues (``RABBITMQ_QUEUE_TYPE``): a job's
lifecycle, the fleet paused and resumed, priorities, the queue depth metric, and Flower.

The session's worker is stopped while these tests run, so only the RabbitMQ worker runs
their jobs. Without RabbitMQ on :5672 the tests are skipped, saying why; in CI they fail
instead, and ``.ci/run`` leaves them out when nothing answers there.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import uuid
from datetime import UTC
from datetime import datetime
from datetime import timedelta

import pytest
import requests
from amqp.exceptions import PreconditionFailed
from celery import Celery
from kombu import Connection
from kombu import Exchange
from kombu import Queue
from prometheus_client.parser import text_string_to_metric_families

from app import routing
from tests.acceptance.running import Gunicorn
from tests.acceptance.running import Worker
from tests.acceptance.test_flower import Flower
from tests.conftest import ApiUser
from tests.conftest import celery_process
from tests.conftest import stop_worker
from tests.conftest import wait_until

pytestmark = [pytest.mark.acceptance, pytest.mark.slow, pytest.mark.rabbitmq]

FLEET = "/api/admin/agent-worker"
#: Job submissions a token may make a minute on the RabbitMQ system.
LIMIT = 15
FILES = [{"path": "hello.txt", "content": "hello from RabbitMQ\n"}]


def unavailable(reason: str):
    """Skip, or in CI fail: ``.ci/run`` deselects these tests when RabbitMQ is not there."""
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def rabbitmqctl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True, timeout=60)


class VirtualHosts:
    """Virtual hosts of this module's own, made with ``rabbitmqctl`` and deleted after."""

    def __init__(self) -> None:
        self.made: list[str] = []

    def new(self) -> str:
        """A new virtual host that guest may use; its URL."""
        vhost = f"agentq_test_{uuid.uuid4().hex[:8]}"
        made = rabbitmqctl("add_vhost", vhost)
        if made.returncode != 0:
            unavailable(f"rabbitmqctl add_vhost failed (run as root?): {made.stderr.strip()}")
        self.made.append(vhost)
        allowed = rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        assert allowed.returncode == 0, allowed.stderr
        return f"amqp://guest:guest@127.0.0.1:5672/{vhost}"

    def delete(self) -> None:
        for vhost in self.made:
            rabbitmqctl("delete_vhost", vhost)


@pytest.fixture(scope="module")
def vhosts():
    try:
        socket.create_connection(("127.0.0.1", 5672), 2).close()
    except OSError:
        unavailable("no RabbitMQ answers on 127.0.0.1:5672")
    if shutil.which("rabbitmqctl") is None:
        unavailable("RabbitMQ answers on :5672, but there is no rabbitmqctl to add a vhost with")
    hosts = VirtualHosts()
    yield hosts
    hosts.delete()


class HttpClient:
    """The test client's ``open`` over real HTTP, so that ``ApiUser`` calls the web process."""

    def __init__(self, url: str) -> None:
        self.url = url

    def open(self, path: str, method: str = "GET", headers=None, json=None):
        response = requests.request(method, self.url + path, headers=headers, json=json, timeout=30)
        response.get_json = response.json
        return response


class RabbitSystem:
    """gunicorn, a worker (one process) and beat on RabbitMQ, with ``REDIS_URL`` unset, their
    queues of ``queue_type`` (``RABBITMQ_QUEUE_TYPE``)."""

    def __init__(self, url: str, queue_type: str) -> None:
        self.amqp_url = url
        self.queue_type = queue_type
        self.env = env = {
            "BROKER_URL": url,
            "RABBITMQ_QUEUE_TYPE": queue_type,
            "REDIS_URL": "",
            # The processes outlive each test's database: connections are pinged before use.
            "DATABASE_IDLE_PING_SECONDS": "0",
            # Longer than any test here: a stalled job comes back after a lease or not at all.
            "STALL_SECONDS": "600",
            # Above the submissions of any one test's token but the rate limit's own.
            "RATE_LIMIT_JOBS": f"{LIMIT}/minute",
            # For Flower, as the README says (on RabbitMQ Flower's own enable_events did not
            # bring it the task events of a job in this test's 30 s; this does).
            "CELERY_TASK_EVENTS": "1",
        }
        self.web = Gunicorn("rabbitmq-web", env)
        self.worker = Worker("rabbitmq-worker", env)
        self.beat = celery_process("beat", name="rabbitmq-beat", env=env)
        self.control = Celery("rabbitmq-tests", broker=url)

    def start(self) -> None:
        self.web.start()
        self.worker.start(self.control)
        self.beat.start()

    def stop(self) -> None:
        for process in (self.beat, self.worker, self.web):
            process.stop()
        self.control.close()

    def worker_name(self) -> str:
        return self.worker.hostname.replace("%h", socket.gethostname())

    def as_http(self, person: ApiUser) -> ApiUser:
        """``person`` calling the web process on RabbitMQ."""
        return ApiUser(HttpClient(self.web.url), person.name, person.token, person.id)


@pytest.fixture(scope="module", params=["classic", "quorum"])
def rabbit(request, servers, app, celery_worker, vhosts):
    """The system on RabbitMQ, with classic queues, then with quorum queues; the session's
    worker stopped meanwhile (the ``worker`` fixture starts it again for later tests)."""
    stop_worker(app, celery_worker)
    system = RabbitSystem(vhosts.new(), request.param)
    try:
        system.start()
        yield system
    finally:
        system.stop()


def queue_depths(rabbit: RabbitSystem) -> dict[str, float]:
    response = requests.get(f"{rabbit.web.url}/api/metrics", timeout=10)
    assert response.status_code == 200, response.text
    return {
        sample.labels["queue"]: sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if sample.name == "agentq_queue_depth"
    }


def declare(url: str, name: str, arguments: dict, exchange_type: str = "direct") -> None:
    """Declare queue ``name`` with ``arguments`` on an exchange of its name; RabbitMQ refuses
    (406) when they exist otherwise, so an accepted declaration says what they are."""
    exchange = Exchange(name, type=exchange_type)
    with Connection(url) as conn:
        Queue(name, exchange, name, queue_arguments=arguments).bind(conn.channel()).declare()


def test_a_job_runs_its_lifecycle_on_rabbitmq_without_redis(rabbit, user, admin):
    """Given web, worker and beat on RabbitMQ with no REDIS_URL, when a code-generation job is
    submitted and approved, then it completes, and /api/ready names the broker ready; the
    step queues are classic queues with eleven priority levels (0..10), or quorum queues,
    which RabbitMQ 3.x gives no priorities."""
    user, admin = rabbit.as_http(user), rabbit.as_http(admin)
    ready = requests.get(f"{rabbit.web.url}/api/ready", timeout=10)
    assert ready.status_code == 200, ready.text

    job = user.enqueue("code-generation", {"files": FILES}, priority=7)
    user.wait_for(job["id"], "WAITING_APPROVAL")
    checkpoint = user.pending_checkpoint(job["id"])
    approved = admin.approve(checkpoint["id"], reason="fine on RabbitMQ")
    assert approved.status_code == 200, approved.text
    done = user.wait_for(job["id"], "COMPLETED", "FAILED")

    assert done["status"] == "COMPLETED"
    assert [s["step"] for s in done["steps"]] == ["propose", "write"]
    assert {s["worker"] for s in done["steps"]} == {rabbit.worker_name()}
    for name in (routing.STEPS_PREFIX + "code-generation", routing.CONTINUATIONS_QUEUE):
        if rabbit.queue_type == "classic":
            declare(rabbit.amqp_url, name, {"x-queue-type": "classic", "x-max-priority": 10})
            with pytest.raises(PreconditionFailed, match="inequivalent arg 'x-max-priority'"):
                declare(rabbit.amqp_url, name, {"x-max-priority": 9})
        else:
            declare(rabbit.amqp_url, name, {"x-queue-type": "quorum"}, "topic")
            with pytest.raises(PreconditionFailed, match="inequivalent arg 'x-queue-type'"):
                declare(rabbit.amqp_url, name, {"x-queue-type": "classic"}, "topic")


def test_a_paused_fleet_holds_jobs_and_resumes_them_highest_priority_first(rabbit, user, admin):
    """Given a paused fleet on RabbitMQ, when jobs of priorities 0..10 are queued, then none
    runs, the queue depth metric counts them all; when the fleet resumes, they all run, on
    classic queues one after another from the highest priority to the lowest."""
    user, admin = rabbit.as_http(user), rabbit.as_http(admin)
    priorities = [3, 0, 10, 6, 1, 8, 5, 9, 2, 7, 4]
    try:
        assert admin.request("DELETE", FLEET).status_code == 200

        def not_consuming():
            body = admin.request("GET", FLEET).json()
            ours = [w for w in body["workers"] if w["name"] == rabbit.worker_name()]
            return body if ours and not ours[0]["consuming"] else None

        paused = wait_until(not_consuming, 30, "the worker to stop consuming")
        assert paused["worker"]["paused"] is True
        jobs = {p: user.enqueue("simple-task", {"priority": p}, priority=p) for p in priorities}
        queue = routing.STEPS_PREFIX + "simple-task"
        wait_until(
            lambda: queue_depths(rabbit).get(queue) == len(priorities),
            10,
            f"agentq_queue_depth of {queue} to count {len(priorities)} messages",
        )
        assert all(user.job(j["id"])["steps"] == [] for j in jobs.values())
        assert admin.request("POST", FLEET).status_code == 200
    finally:
        admin.request("POST", FLEET)

    done = {p: user.wait_for(j["id"], "COMPLETED", "FAILED") for p, j in jobs.items()}
    assert {job["status"] for job in done.values()} == {"COMPLETED"}
    assert queue_depths(rabbit)[queue] == 0
    if rabbit.queue_type == "classic":
        started = sorted(done, key=lambda p: done[p]["steps"][0]["startedAt"])
        assert started == sorted(priorities, reverse=True)


def test_the_rate_limit_holds_with_no_redis(rabbit, user):
    """Given the web on RabbitMQ with no REDIS_URL (one gunicorn worker), when a token submits
    one job more than RATE_LIMIT_JOBS allows, then that one is answered 429: the web process
    counts the limit in its own memory."""
    user = rabbit.as_http(user)
    for n in range(LIMIT):
        user.enqueue("simple-task", {"n": n})
    response = user.request(
        "POST",
        "/api/agent-jobs",
        json={"jobType": "simple-task", "taskDescription": "one too many", "inputData": {}},
    )
    assert response.status_code == 429, response.text
    assert response.json()["error"]["code"] == "too_many_requests"


def test_a_job_lost_between_two_steps_is_dispatched_again_after_a_lease(rabbit, app, user):
    """Given RabbitMQ's step queues empty, when a RUNNING job is found that nobody holds and
    no message will bring (its worker died between a step's commit and the chain's next
    publish), then the sweep sends its step again after a lease, not after STALL_SECONDS
    (600 here), and the job completes."""
    from app.extensions import db
    from app.models import Job

    with app.app_context():
        job = Job(
            user_id=user.id,
            job_type="simple-task",
            task_description="lost between two steps",
            input_data={"a": 1},
            priority=5,
            status="RUNNING",
            current_step="run",
            updated_at=datetime.now(UTC) - timedelta(seconds=10),
        )
        db.session.add(job)
        db.session.commit()
        job_id = str(job.id)

    done = rabbit.as_http(user).wait_for(job_id, "COMPLETED", "FAILED")

    assert done["status"] == "COMPLETED"
    assert [s["step"] for s in done["steps"]] == ["run"]
    assert any(
        log["kind"] == "recovered" and "not dispatched" in log["message"] for log in done["logs"]
    )


def test_flower_shows_the_worker_and_the_steps_of_a_job_on_rabbitmq(rabbit, user, admin):
    """Given Flower (``worker.flower``) on the same RabbitMQ, when a code-generation job is
    approved and completes, then Flower lists the worker with the queues it consumes and
    each step task of the job, succeeded on that worker."""
    user, admin = rabbit.as_http(user), rabbit.as_http(admin)
    flower = Flower()
    flower.process.env.update(rabbit.env)
    flower.start()
    try:
        worker = rabbit.worker_name()
        wait_until(
            lambda: flower.get("/api/workers", status=1).get(worker),
            60,
            f"Flower to receive the heartbeats of {worker}",
        )
        job = user.enqueue("code-generation", {"files": FILES})
        user.wait_for(job["id"], "WAITING_APPROVAL")
        response = admin.approve(user.pending_checkpoint(job["id"])["id"], reason="fine")
        assert response.status_code == 200, response.text
        user.wait_for(job["id"], "COMPLETED")

        info = flower.get("/api/workers", refresh=1)[worker]
        assert routing.STEPS_PREFIX + "code-generation" in {
            q["name"] for q in info["active_queues"]
        }
        for step in ("propose", "write"):
            name = f"agentq.code-generation.{step}"

            def of_the_job(name=name):
                tasks = flower.get("/api/tasks", taskname=name, state="SUCCESS")
                return [t for t in tasks.values() if job["id"] in (t["args"] or "")]

            [task] = wait_until(of_the_job, 30, f"Flower to list {name} of job {job['id']}")
            assert task["worker"] == worker
    finally:
        flower.stop()
