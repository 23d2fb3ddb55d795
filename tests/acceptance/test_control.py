"""Controlling jobs and the fleet: cancel, retry, decisions, priorities, pause and resume.

Everything runs against the real worker subprocess (concurrency 1). Where a test
needs to know that the worker "has had its chance" at a message, it enqueues a
second job behind it and waits for that one to finish: with one process, the
earlier message was handled first.
"""

import socket
import threading

import pytest
import sqlalchemy as sa

from tests.conftest import answers
from tests.conftest import wait_until

pytestmark = [pytest.mark.acceptance]

FLEET = "/api/admin/agent-worker"
CHECKPOINTS = "/api/admin/agent-checkpoints"
FILES = [{"path": "hello.txt", "content": "hello from the job\n"}]


# -- helpers -------------------------------------------------------------------------------


def fleet(admin) -> dict:
    response = admin.request("GET", FLEET)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def worker_name(worker) -> str:
    """The node name the worker fixture gave the worker (``--hostname test-xxxxxx@%h``)."""
    args = worker.argv
    return args[args.index("--hostname") + 1].replace("%h", socket.gethostname())


def our_worker(body: dict, worker) -> dict | None:
    """Our worker's entry in a fleet answer, or None when it did not answer."""
    return next((w for w in body["workers"] if w["name"] == worker_name(worker)), None)


def pause(admin, worker) -> dict:
    """Pause consuming and wait until the fleet shows our worker not consuming."""
    response = admin.request("DELETE", FLEET)
    assert response.status_code == 200, response.get_json()

    def paused():
        body = fleet(admin)
        w = our_worker(body, worker)
        return body if w is not None and not w["consuming"] else None

    return wait_until(paused, 30, "the worker to stop consuming")


def resume(admin, worker) -> dict:
    """Resume consuming and wait until the fleet shows our worker consuming again."""
    response = admin.request("POST", FLEET)
    assert response.status_code == 200, response.get_json()

    def consuming():
        body = fleet(admin)
        w = our_worker(body, worker)
        return body if w is not None and w["consuming"] else None

    return wait_until(consuming, 30, "the worker to consume again")


def wait_published(app) -> None:
    """Wait until every dispatch intent has been published to Redis (the outbox is empty)."""
    from app.extensions import db
    from app.models import Outbox

    def empty():
        with app.app_context():
            return db.session.scalar(sa.select(sa.func.count()).select_from(Outbox)) == 0

    wait_until(empty, 30, "the outbox to be published")


def steps_of(job: dict, name: str) -> list[dict]:
    return [s for s in job["steps"] if s["step"] == name]


def complete_a_job_behind(user) -> None:
    """Enqueue a simple task and wait for it: the worker has handled what came before it."""
    job = user.enqueue("simple-task", {"behind": True})
    assert user.wait_for(job["id"], "COMPLETED", "FAILED")["status"] == "COMPLETED"


# -- cancel --------------------------------------------------------------------------------


@pytest.mark.lifecycle
def test_cancel_pending_job_never_runs(worker, app, user, admin, files):
    """Given a paused fleet and a queued job, when its owner cancels it and the fleet
    resumes, then the job stays CANCELLED and none of its steps ever runs."""
    try:
        pause(admin, worker)
        job = user.enqueue("test-gated", files.input())
        wait_published(app)  # its message is in Redis, waiting for a consumer

        response = user.patch(job["id"], "cancel")

        assert response.status_code == 200, response.get_json()
        assert response.get_json()["job"]["status"] == "CANCELLED"
        resume(admin, worker)
    finally:
        admin.request("POST", FLEET)
    complete_a_job_behind(user)

    after = user.job(job["id"])
    assert after["status"] == "CANCELLED"
    assert after["steps"] == []
    assert files.runs() == []
    assert [log["kind"] for log in after["logs"]] == ["queued", "cancelled"]


@pytest.mark.lifecycle
def test_cancel_running_job_discards_the_late_result(worker, user, files):
    """Given a job whose `wait` step is running, when its owner cancels it and the step
    then returns, then the result changes nothing: the job stays CANCELLED, `last` never
    runs, the attempt is recorded as cancelled and nothing is logged after the cancel."""
    job = user.enqueue("test-gated", files.input())

    def wait_running():
        current = user.job(job["id"])
        running = [s for s in steps_of(current, "wait") if s["status"] == "running"]
        return running if "wait" in files.runs() and running else None

    wait_until(wait_running, 30, "the wait step to run")

    response = user.patch(job["id"], "cancel")

    assert response.status_code == 200, response.get_json()
    assert response.get_json()["job"]["status"] == "CANCELLED"
    files.gate.touch()
    complete_a_job_behind(user)  # the wait step has returned by now

    after = user.job(job["id"])
    assert after["status"] == "CANCELLED"
    assert after["result"] is None
    assert files.runs() == ["first", "wait"]
    assert steps_of(after, "last") == []

    def wait_attempt_finished():
        attempts = steps_of(user.job(job["id"]), "wait")
        return attempts if attempts and attempts[-1]["finishedAt"] else None

    attempts = wait_until(wait_attempt_finished, 30, "the wait attempt to finish")
    assert [a["status"] for a in attempts] == ["cancelled"]
    assert after["logs"][-1]["kind"] == "cancelled"
    assert after["logs"][-1]["message"] == "Job cancelled by user"
    assert [log for log in after["logs"] if log["step"] == "last"] == []


@pytest.mark.lifecycle
def test_cancel_waiting_job_cancels_its_checkpoint(worker, user, admin):
    """Given a code-generation job waiting for approval, when its owner cancels it, then
    the job and its checkpoint are CANCELLED, approving it answers 409 and nothing is
    pending any more."""
    job = user.enqueue("code-generation", {"files": FILES})
    user.wait_for(job["id"], "WAITING_APPROVAL")
    checkpoint = user.pending_checkpoint(job["id"])

    response = user.patch(job["id"], "cancel")

    assert response.status_code == 200, response.get_json()
    assert response.get_json()["job"]["status"] == "CANCELLED"
    after = user.job(job["id"])
    assert [(c["id"], c["status"]) for c in after["checkpoints"]] == [
        (checkpoint["id"], "CANCELLED")
    ]
    late = admin.approve(checkpoint["id"], reason="too late")
    assert late.status_code == 409, late.get_json()
    assert late.get_json()["success"] is False
    pending = admin.request("GET", CHECKPOINTS)
    assert pending.status_code == 200
    assert pending.get_json()["checkpoints"] == []
    assert user.job(job["id"])["status"] == "CANCELLED"
    assert steps_of(user.job(job["id"]), "write") == []


@pytest.mark.lifecycle
def test_cancel_completed_job_is_a_conflict(worker, user):
    """Given a completed job, when its owner cancels it, then the API answers 409 with the
    error body and the job stays COMPLETED."""
    job = user.enqueue("simple-task", {"a": 1})
    user.wait_for(job["id"], "COMPLETED")

    response = user.patch(job["id"], "cancel")

    assert response.status_code == 409
    body = response.get_json()
    assert body["success"] is False
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"]
    assert "COMPLETED" in body["error"]["message"]
    assert user.job(job["id"])["status"] == "COMPLETED"


# -- retry ---------------------------------------------------------------------------------


@pytest.mark.lifecycle
def test_retry_resumes_at_the_failed_step(worker, user, files):
    """Given a flaky job whose `break` step fails three times, when the cause is removed
    and its owner retries it, then it completes without running `prepare` again."""
    files.broken.touch()
    job = user.enqueue("test-flaky", files.input())

    failed = user.wait_for(job["id"], "FAILED", "COMPLETED")

    assert failed["status"] == "FAILED"
    assert "break" in failed["error"]
    assert "the broken file is there" in failed["error"]
    errors = [log["message"] for log in failed["logs"] if log["kind"] == "error"]
    assert len(errors) == 3, errors
    assert "attempt 1 of 3" in errors[0] and "retrying" in errors[0]
    assert "attempt 2 of 3" in errors[1] and "retrying" in errors[1]
    assert "the broken file is there" in errors[2] and "retrying" not in errors[2]
    breaks = steps_of(failed, "break")
    assert [(s["attempt"], s["status"]) for s in breaks] == [
        (1, "failed"),
        (2, "failed"),
        (3, "failed"),
    ]
    assert all("the broken file is there" in s["error"] for s in breaks)
    assert files.runs() == ["prepare", "break", "break", "break"]

    files.broken.unlink()
    response = user.patch(job["id"], "retry")

    assert response.status_code == 200, response.get_json()
    retried = response.get_json()["job"]
    # Queued again and published before the answer: the worker may already be at it.
    assert retried["status"] in ("PENDING", "RUNNING", "COMPLETED")
    assert retried["error"] is None
    done = user.wait_for(job["id"], "COMPLETED", "FAILED")
    assert done["status"] == "COMPLETED"
    assert done["error"] is None
    assert done["result"] == {"finished": True, "prepared": True}
    runs = files.runs()
    assert runs.count("prepare") == 1
    assert runs.count("break") == 4
    assert runs == ["prepare", "break", "break", "break", "break", "finish"]
    assert [(s["attempt"], s["status"]) for s in steps_of(done, "break")][-1] == (4, "succeeded")
    assert len(steps_of(done, "prepare")) == 1
    assert any(log["kind"] == "retried" for log in done["logs"])


@pytest.mark.lifecycle
def test_retry_after_reject_reopens_the_review(worker, app, user, admin):
    """Given a rejected code-generation job, when its owner retries it, then `propose`
    runs again with a new pending checkpoint, the rejected one keeps its decision, and
    approving the new one completes the job."""
    job = user.enqueue("code-generation", {"files": FILES})
    user.wait_for(job["id"], "WAITING_APPROVAL")
    first = user.pending_checkpoint(job["id"])
    rejected = admin.reject(first["id"], "not yet")
    assert rejected.status_code == 200, rejected.get_json()
    failed = user.wait_for(job["id"], "FAILED")
    assert "not yet" in failed["error"]

    response = user.patch(job["id"], "retry")

    assert response.status_code == 200, response.get_json()
    user.wait_for(job["id"], "WAITING_APPROVAL")
    second = user.pending_checkpoint(job["id"])
    assert second["id"] != first["id"]
    waiting = user.job(job["id"])
    old = next(c for c in waiting["checkpoints"] if c["id"] == first["id"])
    assert old["status"] == "REJECTED"
    assert old["decision"]["outcome"] == "REJECTED"
    assert old["decision"]["reason"] == "not yet"
    assert old["decision"]["decidedBy"] == "admin"
    assert [(s["attempt"], s["status"]) for s in steps_of(waiting, "propose")] == [
        (1, "succeeded"),
        (2, "succeeded"),
    ]

    approved = admin.approve(second["id"], reason="now")
    assert approved.status_code == 200, approved.get_json()
    done = user.wait_for(job["id"], "COMPLETED", "FAILED")
    assert done["status"] == "COMPLETED"
    assert done["result"]["written"] == ["hello.txt"]
    written = app.config["WORKSPACE_ROOT"] + f"/{job['id']}/hello.txt"
    with open(written) as f:
        assert f.read() == FILES[0]["content"]


@pytest.mark.lifecycle
def test_an_approved_edit_stays_in_force_after_a_later_rejection(worker, user, admin):
    """Given a data-processing job whose records an admin edited at the first checkpoint,
    when the second checkpoint is rejected and the job retried, then `transform` proposes
    the edited records again, and the job completes with them."""
    records = [{"name": "ada", "city": "london"}, {"name": "grace", "city": "nyc"}]
    edited = [{"name": "ada", "city": "cambridge"}]
    job = user.enqueue("data-processing", {"records": records})
    user.wait_for(job["id"], "WAITING_APPROVAL")
    first = user.pending_checkpoint(job["id"])
    approved = admin.approve(first["id"], data={"records": edited})
    assert approved.status_code == 200, approved.get_json()
    user.wait_for(job["id"], "WAITING_APPROVAL")
    second = user.pending_checkpoint(job["id"])
    assert second["data"] == {"records": [{"name": "ADA", "city": "CAMBRIDGE"}]}
    assert admin.reject(second["id"], "one more look").status_code == 200
    user.wait_for(job["id"], "FAILED")

    assert user.patch(job["id"], "retry").status_code == 200

    user.wait_for(job["id"], "WAITING_APPROVAL")
    third = user.pending_checkpoint(job["id"])
    assert third["id"] != second["id"]
    assert third["data"] == {"records": [{"name": "ADA", "city": "CAMBRIDGE"}]}
    assert admin.approve(third["id"]).status_code == 200
    done = user.wait_for(job["id"], "COMPLETED", "FAILED")
    assert done["status"] == "COMPLETED"
    assert done["result"] == {
        "processed": 1,
        "records": [{"name": "ADA", "city": "CAMBRIDGE"}],
    }


# -- decisions -----------------------------------------------------------------------------


@pytest.mark.lifecycle
def test_second_decision_answers_409_with_the_first(worker, user, admin):
    """Given an approved checkpoint, when an admin rejects it afterwards, then the API
    answers 409 and the body carries the first decision."""
    job = user.enqueue("code-generation", {"files": FILES})
    user.wait_for(job["id"], "WAITING_APPROVAL")
    checkpoint = user.pending_checkpoint(job["id"])
    first = admin.approve(checkpoint["id"], reason="looks right")
    assert first.status_code == 200, first.get_json()

    second = admin.reject(checkpoint["id"], "changed my mind")

    assert second.status_code == 409
    body = second.get_json()
    assert body["success"] is False
    decision = body["error"]["details"]["checkpoint"]["decision"]
    assert decision["outcome"] == "APPROVED"
    assert decision["reason"] == "looks right"
    assert decision["decidedBy"] == "admin"
    assert decision == first.get_json()["checkpoint"]["decision"]
    assert user.wait_for(job["id"], "COMPLETED", "FAILED")["status"] == "COMPLETED"


@pytest.mark.lifecycle
def test_concurrent_decisions_exactly_one_wins(worker, app, user, admin):
    """Given a pending checkpoint, when 20 admins approve or reject it at the same moment,
    then exactly one wins, the 19 others get 409 with the winner's decision, and the job
    ends as the winner decided (the continuation running once on approval)."""
    job = user.enqueue("code-generation", {"files": FILES})
    user.wait_for(job["id"], "WAITING_APPROVAL")
    checkpoint = user.pending_checkpoint(job["id"])
    path = f"{CHECKPOINTS}/{checkpoint['id']}"
    headers = {"Authorization": f"Bearer {admin.token}"}
    barrier = threading.Barrier(20)
    results: list = [None] * 20

    def decide(i: int) -> None:
        client = app.test_client()
        approve = i % 2 == 0
        body = {"reason": f"approver {i}"} if approve else {"reason": f"rejecter {i}"}
        barrier.wait()
        response = client.open(
            path, method="POST" if approve else "DELETE", json=body, headers=headers
        )
        results[i] = (response.status_code, response.get_json())

    threads = [threading.Thread(target=decide, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(r is not None for r in results), results

    statuses = sorted(code for code, _ in results)
    assert statuses == [200] + [409] * 19, statuses
    winner = next(body for code, body in results if code == 200)["checkpoint"]
    losers = [body for code, body in results if code == 409]
    assert all(
        b["error"]["details"]["checkpoint"]["decision"] == winner["decision"] for b in losers
    )
    assert all(b["error"]["details"]["checkpoint"]["status"] == winner["status"] for b in losers)
    if winner["decision"]["outcome"] == "APPROVED":
        done = user.wait_for(job["id"], "COMPLETED", "FAILED")
        assert done["status"] == "COMPLETED"
        assert len(steps_of(done, "write")) == 1
    else:
        done = user.wait_for(job["id"], "FAILED", "COMPLETED")
        assert done["status"] == "FAILED"
        assert steps_of(done, "write") == []
    decided = [c for c in done["checkpoints"] if c["id"] == checkpoint["id"]]
    assert decided[0]["decision"] == winner["decision"]


# -- priority ------------------------------------------------------------------------------


def test_higher_priority_runs_first(worker, app, user, admin):
    """Given a paused fleet, when a priority 1 job and then a priority 9 job are queued
    and the fleet resumes, then the priority 9 job starts first."""
    try:
        pause(admin, worker)
        low = user.enqueue("simple-task", {"which": "low"}, priority=1)
        high = user.enqueue("simple-task", {"which": "high"}, priority=9)
        wait_published(app)
        resume(admin, worker)
    finally:
        admin.request("POST", FLEET)

    low_done = user.wait_for(low["id"], "COMPLETED", "FAILED")
    high_done = user.wait_for(high["id"], "COMPLETED", "FAILED")

    assert (low_done["status"], high_done["status"]) == ("COMPLETED", "COMPLETED")
    assert high_done["steps"][0]["startedAt"] < low_done["steps"][0]["startedAt"]


# -- fleet ---------------------------------------------------------------------------------


def test_fleet_status_is_admin_only(worker, client, user, admin):
    """Given a running worker and a completed job, when an admin asks for the fleet, then
    it shows the worker consuming and job counts by status; a user gets 403, nobody 401."""
    job = user.enqueue("simple-task", {})
    user.wait_for(job["id"], "COMPLETED")

    def answered():
        body = fleet(admin)
        return body if our_worker(body, worker) else None

    body = wait_until(answered, 30, "the worker to answer the fleet query")

    assert body["success"] is True
    assert body["worker"]["isRunning"] is True
    assert body["worker"]["maxConcurrentJobs"] >= 1
    assert our_worker(body, worker)["consuming"] is True
    assert body["jobs"] == {
        "pending": 0,
        "running": 0,
        "waiting_approval": 0,
        "completed": 1,
        "failed": 0,
        "cancelled": 0,
    }
    forbidden = user.request("GET", FLEET)
    assert forbidden.status_code == 403
    assert forbidden.get_json()["success"] is False
    anonymous = client.get(FLEET)
    assert anonymous.status_code == 401
    assert anonymous.get_json()["success"] is False


def test_worker_started_during_pause_stays_paused(worker, app, user, admin):
    """Given a paused fleet, when the worker restarts, then it comes back paused: a new
    job stays PENDING until an admin resumes the fleet, and then it completes."""
    try:
        body = pause(admin, worker)
        assert body["worker"]["isRunning"] is False
        assert body["worker"]["paused"] is True

        worker.stop()
        worker.start()
        celery = app.extensions["celery"]
        wait_until(lambda: answers(celery), 60, "the worker to answer a ping")
        job = user.enqueue("simple-task", {"during": "pause"})
        wait_published(app)

        def restarted_and_paused():
            body = fleet(admin)
            w = our_worker(body, worker)
            return body if w and w["pid"] == worker.proc.pid and not w["consuming"] else None

        body = wait_until(restarted_and_paused, 30, "the restarted worker in the fleet")
        assert body["worker"]["isRunning"] is False
        assert body["jobs"]["pending"] == 1
        assert user.job(job["id"])["status"] == "PENDING"
        assert user.job(job["id"])["steps"] == []

        body = resume(admin, worker)
        assert body["worker"]["isRunning"] is True
        assert body["worker"]["paused"] is False
    finally:
        admin.request("POST", FLEET)
    assert user.wait_for(job["id"], "COMPLETED", "FAILED")["status"] == "COMPLETED"
