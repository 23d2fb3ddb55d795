"""A checkpoint's reminders, escalation and deadline as the real beat and workers apply
them, on the real clock (seconds apart): with two beat processes sending sweeps and two
workers running them at the same time, each fires once and the deadline decides once."""

from __future__ import annotations

import uuid

from tests.conftest import celery_process
from tests.conftest import wait_until
from tests.integration.test_review_policies import admins
from tests.integration.test_review_policies import lines
from tests.integration.test_review_policies import parked
from tests.integration.test_review_policies import shown


def test_two_beats_and_two_workers_remind_escalate_and_time_out_once_each(
    app, client, user, worker, tmp_path
):
    """Given a second beat and a second worker consuming the sweeps beside the suite's,
    when a checkpoint opens with expiresIn 6, remindAt [4, 2], escalateAfter 3, then its
    job's timeline holds two reminders and one escalation, and system:timeout rejects it
    once: one vote, the job FAILED."""
    beat = celery_process(
        "beat", "--schedule", str(tmp_path / "second-beat-schedule"), name="second-beat"
    )
    sweeper = celery_process(
        "worker",
        "--concurrency",
        "2",
        "--without-mingle",
        "--without-gossip",
        "--queues",
        "agentq.sweeps",
        "--hostname",
        f"sweeper-{uuid.uuid4().hex[:6]}@%h",
        name="second-worker",
    )
    beat.start()
    sweeper.start()
    try:
        [alice] = admins(app, client, "alice")
        checkpoint = parked(
            user,
            {
                "approvers": ["alice"],
                "expiresIn": 6,
                "remindAt": [4, 2],
                "escalateTo": ["carol"],
                "escalateAfter": 3,
            },
        )
        job = wait_until(
            lambda: (j := user.job(checkpoint["jobId"]))["status"] == "FAILED" and j,
            30,
            "the deadline to reject the checkpoint",
        )
    finally:
        sweeper.stop()
        beat.stop()

    assert len(lines(job, "reminder")) == 2, job["logs"]
    assert lines(job, "escalation") == [
        'Escalated: carol may now decide checkpoint "Review the proposal"'
    ]
    decided = shown(alice, checkpoint["id"])
    assert decided["status"] == "REJECTED"
    assert [(v["decidedBy"], v["outcome"]) for v in decided["votes"]] == [
        ("system:timeout", "REJECTED")
    ]
    assert decided["approvers"] == ["alice", "carol"]
    assert job["error"] == "Checkpoint rejected: no decision within 6s"
