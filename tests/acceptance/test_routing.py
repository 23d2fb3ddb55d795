"""Queues per concern (``app.routing``): a flood of one job type holds back neither
another type's job nor the continuation of a job a reviewer approves, and a worker
started for some queues runs only their steps.

The session's worker has one process and consumes every queue; a flood step takes
50 ms, so 500 of them take at least 25 s, one after another.
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from app import routing
from tests.conftest import Process
from tests.conftest import answers
from tests.conftest import wait_until

pytestmark = pytest.mark.acceptance

FLOOD = 500


def started(app, job_id: str) -> list:
    """When each step of the job started, from the step ledger, in order."""
    from app.extensions import db

    with app.app_context():
        return (
            db.session.execute(
                sa.text("SELECT started_at FROM job_steps WHERE job_id = :id ORDER BY started_at"),
                {"id": job_id},
            )
            .scalars()
            .all()
        )


def flood_started_between(app, after, before) -> int:
    """How many flood steps started after ``after`` and before ``before``."""
    from app.extensions import db

    with app.app_context():
        return db.session.execute(
            sa.text(
                "SELECT count(*) FROM job_steps s JOIN jobs j ON j.id = s.job_id"
                " WHERE j.job_type = 'test-flood' AND s.started_at > :after"
                " AND s.started_at < :before"
            ),
            {"after": after, "before": before},
        ).scalar_one()


def decided_at(app, job_id: str):
    """When the job's checkpoint was decided."""
    from app.extensions import db

    with app.app_context():
        return db.session.execute(
            sa.text(
                "SELECT d.created_at FROM decisions d"
                " JOIN checkpoints c ON c.id = d.checkpoint_id WHERE c.job_id = :id"
            ),
            {"id": job_id},
        ).scalar_one()


def created_at(app, job_id: str):
    """When the job was submitted."""
    from app.extensions import db

    with app.app_context():
        return db.session.execute(
            sa.text("SELECT created_at FROM jobs WHERE id = :id"), {"id": job_id}
        ).scalar_one()


def test_a_flood_holds_back_neither_another_type_nor_an_approved_continuation(
    app, worker, user, admin
):
    """Given a job parked for approval and 500 jobs of one type queued behind it, when a
    job of another type is submitted and the parked job is approved, then each starts
    after at most a few flood steps (the worker takes its queues in turn) while hundreds
    of the flood still wait, where one shared queue would have run the whole flood first.
    """
    parked = user.enqueue("test-before-after", {"name": "draft"})
    user.wait_for(parked["id"], "WAITING_APPROVAL")
    flood = [user.enqueue("test-flood", {"n": i}) for i in range(FLOOD)]

    other = user.enqueue("simple-task", {"note": "not behind the flood"})
    response = admin.approve(user.pending_checkpoint(parked["id"])["id"])
    assert response.status_code == 200, response.get_json()
    approved_at = decided_at(app, parked["id"])

    user.wait_for(other["id"], "COMPLETED", timeout=20)
    user.wait_for(parked["id"], "COMPLETED", timeout=20)

    [other_start] = started(app, other["id"])
    continuation_start = started(app, parked["id"])[-1]
    ahead_of_other = flood_started_between(app, created_at(app, other["id"]), other_start)
    ahead_of_continuation = flood_started_between(app, approved_at, continuation_start)
    assert ahead_of_other <= 5, f"{ahead_of_other} flood steps started before the other type's"
    assert ahead_of_continuation <= 5, f"{ahead_of_continuation} flood steps went first"

    latest = max(other_start, continuation_start)
    waiting = len(flood) - flood_started_between(app, created_at(app, flood[0]["id"]), latest)
    assert waiting > FLOOD // 2, f"only {waiting} of the flood still waited: nothing was shown"


def test_a_worker_started_for_one_queue_runs_only_its_steps(app, no_worker, user):
    """Given `agentq worker --queues agentq.steps.simple-task`, a simple-task job completes
    while a job of another type stays PENDING, and the worker lists that one queue."""
    queue = routing.step_queue(app.config, "simple-task")
    agentq = str(Path(sys.executable).with_name("agentq"))
    hostname = f"one-queue-{uuid.uuid4().hex[:6]}@%h"
    worker = Process(
        "worker-one-queue",
        [agentq, "worker", "--queues", queue, "--concurrency", "1", "--hostname", hostname],
    )
    worker.start()
    try:
        celery = app.extensions["celery"]
        wait_until(lambda: worker.alive() and answers(celery), 60, "the worker")
        elsewhere = user.enqueue("test-flood", {"n": 0})
        mine = user.enqueue("simple-task")
        user.wait_for(mine["id"], "COMPLETED")
        assert user.job(elsewhere["id"])["status"] == "PENDING"
        [replies] = celery.control.inspect(timeout=1).active_queues().values()
        assert [q["name"] for q in replies] == [queue]
    finally:
        worker.stop()
