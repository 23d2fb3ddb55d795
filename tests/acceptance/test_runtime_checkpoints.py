"""Approval checkpoints that steps decide at run time, and checkpoints that expire."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.acceptance]


def test_undeclared_approval_stops_the_chain(worker, user, admin, files):
    """Given a chain plan -> review whose first step opens an approval nobody declared,
    when it runs, then the rest of the chain does not run until the approval, and
    approval runs it."""
    job = user.enqueue("test-runtime-approval", {**files.input(), "ask_in_plan": True})

    waiting = user.wait_for(job["id"], "WAITING_APPROVAL", "COMPLETED", "FAILED")
    assert waiting["status"] == "WAITING_APPROVAL"
    assert waiting["currentStep"] == "review"
    # Another job run to completion behind it proves the worker is idle, not slow.
    user.wait_for(user.enqueue("simple-task")["id"], "COMPLETED")
    assert files.runs() == ["plan"]

    approved = admin.approve(user.pending_checkpoint(job["id"])["id"])
    assert approved.status_code == 200
    done = user.wait_for(job["id"], "COMPLETED", "FAILED")

    assert done["status"] == "COMPLETED"
    assert files.runs() == ["plan", "review", "apply"]
    assert done["result"] == {"applied": True}


def test_declared_approval_that_opens_none_goes_on(worker, user, files):
    """Given a step declared as an approval step (so its chain ends there) that opens no
    checkpoint, when it returns, then the next step is dispatched all the same."""
    job = user.enqueue("test-runtime-approval", files.input())

    done = user.wait_for(job["id"], "COMPLETED", "FAILED", "WAITING_APPROVAL")

    assert done["status"] == "COMPLETED"
    assert files.runs() == ["plan", "review", "apply"]
    assert done["checkpoints"] == []


def test_unanswered_checkpoint_is_rejected_at_its_deadline_and_fails_the_job(
    worker, user, admin, files
):
    """Given an approval checkpoint opened with expires_in, when nobody decides in time,
    then the sweep rejects it as system:timeout (the default onTimeout), the job fails
    saying so, and a late approval is refused."""
    job = user.enqueue(
        "test-runtime-approval", {**files.input(), "ask_in_review": True, "expires_in": 1}
    )

    failed = user.wait_for(job["id"], "FAILED", "COMPLETED")

    assert failed["error"] == "Checkpoint rejected: no decision within 1s"
    [checkpoint] = failed["checkpoints"]
    assert checkpoint["status"] == "REJECTED"
    assert checkpoint["decision"]["decidedBy"] == "system:timeout"
    assert checkpoint["expiresAt"] is not None
    late = admin.approve(checkpoint["id"])
    assert late.status_code == 409
    assert late.get_json()["error"]["code"] == "already_decided"
    assert "apply" not in files.runs()
