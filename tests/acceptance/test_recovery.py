"""Recovery: a worker killed mid-step, and a broker that is down when a job is submitted."""

import threading
import time
import uuid

import pytest
import sqlalchemy as sa

from tests.acceptance.running import Worker
from tests.conftest import answers
from tests.conftest import stop_worker
from tests.conftest import wait_until

pytestmark = [pytest.mark.acceptance]

#: Seconds between the stream's submissions: a flow the worker keeps up with, so that it
#: always holds messages, without a backlog that takes long to drain.
PACE = 0.005


def attempts(job: dict, step: str) -> list[str]:
    """The statuses of ``step``'s attempts in the job's ledger, in attempt order."""
    rows = sorted((s for s in job["steps"] if s["step"] == step), key=lambda s: s["attempt"])
    return [s["status"] for s in rows]


def test_a_worker_killed_mid_step_loses_nothing(worker, user, files):
    """Given a job whose `wait` step is running, when its worker is SIGKILLed and started again,
    then the lease sweep re-queues `wait`, the job completes, and each step advanced it once."""
    job = user.enqueue("test-gated", files.input())
    wait_until(
        lambda: attempts(user.job(job["id"]), "wait") == ["running"] and "wait" in files.runs(),
        30,
        "the wait step to run",
    )

    worker.kill()
    worker.start()
    files.gate.touch()

    done = user.wait_for(job["id"], "COMPLETED", "FAILED", timeout=60)
    assert done["status"] == "COMPLETED", done["error"]
    assert done["result"] == {"done": True}
    assert attempts(done, "first") == ["succeeded"]
    assert attempts(done, "wait") == ["lost", "succeeded"]
    assert attempts(done, "last") == ["succeeded"]
    # The killed attempt ran `wait` once, the recovery once more; `first` and `last` ran once.
    assert files.runs() == ["first", "wait", "wait", "last"]
    # The lease sweep took the step back (not the broker, which holds the killed message
    # unacked until its visibility timeout, hours away).
    recovered = [log["message"] for log in done["logs"] if log["kind"] == "recovered"]
    assert recovered == ["Step wait lost its worker; queued again"]
    lost = next(s for s in done["steps"] if s["step"] == "wait" and s["status"] == "lost")
    assert "lease lapsed" in lost["error"]


def outbox_rows(app, job_id: str) -> int:
    from app.extensions import db

    with app.app_context():
        return db.session.execute(
            sa.text("SELECT count(*) FROM outbox WHERE job_id = :id"), {"id": uuid.UUID(job_id)}
        ).scalar_one()


def test_a_job_submitted_while_redis_is_down_runs_when_it_is_back(app, servers, worker, user):
    """Given Redis is stopped, when a job is submitted, then 201 at once with the job PENDING
    and its dispatch intent in the outbox; when Redis starts again, the job completes."""
    if servers.redis is None:
        pytest.skip("Redis comes from REDIS_URL (external): the test cannot stop and start it")
    servers.redis.stop()
    try:
        started = time.monotonic()
        response = user.request(
            "POST",
            "/api/agent-jobs",
            json={"jobType": "simple-task", "taskDescription": "during an outage", "inputData": {}},
        )
        elapsed = time.monotonic() - started
        assert response.status_code == 201, response.get_json()
        assert elapsed < 1.0, f"POST took {elapsed:.2f}s with Redis down"
        job = response.get_json()["job"]
        assert job["status"] == "PENDING"
        assert user.job(job["id"])["status"] == "PENDING"
        assert outbox_rows(app, job["id"]) == 1
    finally:
        if not servers.redis.is_running():
            servers.redis.start()

    done = user.wait_for(job["id"], "COMPLETED", "FAILED", timeout=90)
    assert done["status"] == "COMPLETED", done["error"]
    # Every dispatch intent of the job was published (or dropped once it had run).
    wait_until(lambda: outbox_rows(app, job["id"]) == 0, 10, "the job's outbox rows to drain")
    # The worker is back on the broker for the tests that follow.
    celery = app.extensions["celery"]
    wait_until(lambda: answers(celery), 60, "the worker to answer a ping")


def sent_jobs(app, user, count: int) -> list[str]:
    """Submit ``count`` simple-task jobs and wait until their messages are in Redis (their
    dispatch intents published and deleted); their ids."""
    jobs = [user.enqueue("simple-task", {"n": i})["id"] for i in range(count)]
    wait_until(lambda: all(outbox_rows(app, j) == 0 for j in jobs), 10, "the outbox to drain")
    return jobs


def queued(servers) -> int:
    """Messages waiting in the steps queue (every priority's list) in Redis."""
    import redis

    client = redis.Redis.from_url(servers.redis_url)
    try:
        return sum(client.llen(key) for key in client.scan_iter("agentq.steps*"))
    finally:
        client.close()


def test_steps_taken_while_postgres_is_down_run_when_it_is_back(app, servers, celery_worker, user):
    """Given ten queued jobs and Postgres stopped, when a worker takes their messages and
    cannot claim them, then no message is lost: once Postgres is back, every job completes
    within seconds, not after the stall sweep's 300 s (this worker's STALL_SECONDS)."""
    if servers.pg is None:
        pytest.skip("Postgres comes from DATABASE_URL (external): the test cannot stop it")
    stop_worker(app, celery_worker)
    jobs = sent_jobs(app, user, 10)
    worker = Worker("worker-postgres-down", {"STALL_SECONDS": "300"})
    servers.pg.stop()
    try:
        worker.start(app.extensions["celery"])
        wait_until(lambda: queued(servers) == 0, 60, "the worker to take every message")
        # Longer than the first claim retries (0.5, 1, 2 s): they go on.
        time.sleep(4)
    finally:
        servers.pg.start()
    try:
        for job_id in jobs:
            done = user.wait_for(job_id, "COMPLETED", "FAILED", timeout=60)
            assert done["status"] == "COMPLETED", done["error"]
            assert attempts(done, "run") == ["succeeded"]
        assert "the database is unreachable" in worker.output()
    finally:
        worker.stop()


def test_a_busy_worker_outlives_redis_restarts(app, servers, celery_worker, user, monkeypatch):
    """Given a stream of jobs, when Redis restarts three times while the worker runs their
    steps, then the worker reconnects each time and stays up (no "Unrecoverable error" from
    putting back the messages it held), and every job completes."""
    if servers.redis is None:
        pytest.skip("Redis comes from REDIS_URL (external): the test cannot stop and start it")
    monkeypatch.setitem(app.config, "RATE_LIMIT_JOBS", "")  # as fast as the client goes
    stop_worker(app, celery_worker)
    # Two pool processes, as by default on two cores: messages held unacked at a restart.
    worker = Worker("worker-redis-restarts", {}, concurrency=2)
    worker.start(app.extensions["celery"])
    jobs: list[str] = []
    stop = threading.Event()

    def submit() -> None:
        client = app.test_client()
        while not stop.is_set():
            response = client.post(
                "/api/agent-jobs",
                json={"jobType": "simple-task", "taskDescription": "stream", "inputData": {}},
                headers=user.headers(),
            )
            assert response.status_code == 201, response.get_json()
            jobs.append(response.get_json()["job"]["id"])
            stop.wait(PACE)

    feeder = threading.Thread(target=submit, name="feeder")
    feeder.start()
    try:
        for _restart in range(3):
            time.sleep(1.0)
            servers.redis.stop()
            time.sleep(1.0)
            servers.redis.start()
    finally:
        stop.set()
        feeder.join(30)
        if not servers.redis.is_running():
            servers.redis.start()

    try:
        assert worker.running(), worker.output()[-3000:]
        for job_id in jobs:
            done = user.wait_for(job_id, "COMPLETED", "FAILED", timeout=120)
            assert done["status"] == "COMPLETED", done["error"]
        assert "Unrecoverable error" not in worker.output()
        assert len(jobs) > 50
    finally:
        worker.stop()


def test_messages_held_by_a_killed_worker_run_within_seconds(app, servers, celery_worker, user):
    """Given ten jobs whose claims wait for Postgres in a worker (their messages taken and
    unacked), when that worker is SIGKILLed and Postgres comes back, then a new worker runs
    them within seconds: the sweep puts back messages taken longer than a lease ago that no
    live claim holds (the broker would wait for its visibility timeout, the stall sweep for
    this worker's STALL_SECONDS of 300 s)."""
    if servers.pg is None:
        pytest.skip("Postgres comes from DATABASE_URL (external): the test cannot stop it")
    stop_worker(app, celery_worker)
    jobs = sent_jobs(app, user, 10)
    doomed = Worker("worker-killed-holding", {"STALL_SECONDS": "300"})
    servers.pg.stop()
    try:
        doomed.start(app.extensions["celery"])
        wait_until(lambda: queued(servers) == 0, 60, "the worker to take every message")
        wait_until(
            lambda: doomed.output().count("the database is unreachable") >= 10,
            30,
            "every claim to wait for the database",
        )
        doomed.kill()
    finally:
        servers.pg.start()
    worker = Worker("worker-after-the-kill", {"STALL_SECONDS": "300"})
    worker.start(app.extensions["celery"])
    try:
        for job_id in jobs:
            done = user.wait_for(job_id, "COMPLETED", "FAILED", timeout=45)
            assert done["status"] == "COMPLETED", done["error"]
            assert attempts(done, "run") == ["succeeded"]
    finally:
        worker.stop()


def test_a_chain_whose_next_message_was_never_sent_goes_on(
    app, celery_worker, user, files, tmp_path
):
    """Given a job of two steps, when the worker's pool process dies after `one`'s result was
    committed but before the message of `two` was sent, then the job completes within
    seconds: `one`'s message comes back (its worker was lost), its claim finds `one` done
    and `two` waiting with nobody on it, and sends `two` (not after STALL_SECONDS); each
    step advanced the job once."""
    stop_worker(app, celery_worker)
    worker = Worker("worker-dies-sending", {"STALL_SECONDS": "300"})
    worker.start(app.extensions["celery"])
    die = tmp_path / "die"
    die.touch()
    try:
        job = user.enqueue("test-dies-sending", {**files.input(), "die": str(die)})
        done = user.wait_for(job["id"], "COMPLETED", "FAILED", timeout=30)
        assert done["status"] == "COMPLETED", done["error"]
        assert not die.exists(), "the pool process was not killed as it sent `two`"
        assert attempts(done, "one") == ["succeeded"]
        assert attempts(done, "two") == ["succeeded"]
        assert files.runs() == ["one", "two"]
    finally:
        worker.stop()


def test_a_job_whose_message_vanished_runs_within_a_lease(app, servers, celery_worker, user):
    """Given a queued job whose message is gone from Redis (as when a worker is killed between
    popping it and recording it as taken), when a worker runs, then the sweep finds the job
    unclaimed for a lease with no message for it anywhere in Redis and dispatches it again:
    the job completes within seconds, not after this worker's STALL_SECONDS of 300 s."""
    stop_worker(app, celery_worker)
    [job_id] = sent_jobs(app, user, 1)
    app.extensions["celery"].control.purge()
    assert queued(servers) == 0
    worker = Worker("worker-message-vanished", {"STALL_SECONDS": "300"})
    worker.start(app.extensions["celery"])
    try:
        done = user.wait_for(job_id, "COMPLETED", "FAILED", timeout=30)
        assert done["status"] == "COMPLETED", done["error"]
        recovered = [log["message"] for log in done["logs"] if log["kind"] == "recovered"]
        assert recovered == ["Step run was not dispatched; queued again"]
    finally:
        worker.stop()
