"""Recovery: a worker killed mid-step, and a broker that is down when a job is submitted."""

import time
import uuid

import pytest
import sqlalchemy as sa

from tests.conftest import wait_until

pytestmark = [pytest.mark.acceptance]


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
    wait_until(lambda: celery.control.ping(timeout=0.5), 60, "the worker to answer a ping")
