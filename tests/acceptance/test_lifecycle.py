"""The job lifecycle end to end: the HTTP API, a real Celery worker, Postgres and Redis.

Each seed handler is driven the way a client and a reviewer drive it: enqueue through
the API, watch the job through the API, approve or reject its checkpoints as an admin,
and look at what ended up on disk in the job's workspace.
"""

from pathlib import Path

import pytest

from tests.conftest import wait_until

pytestmark = [pytest.mark.acceptance, pytest.mark.lifecycle]

PROPOSAL = [
    {"path": "README.md", "content": "# hello\n"},
    {"path": "src/app/main.py", "content": "print('hello')\n"},
]
RECORDS = [
    {"name": "ada lovelace", "lang": "en", "year": 1843},
    {"name": "grace hopper", "lang": "cobol", "year": 1959},
]
UPPERCASED = [
    {"name": "ADA LOVELACE", "lang": "EN", "year": 1843},
    {"name": "GRACE HOPPER", "lang": "COBOL", "year": 1959},
]


def workspace(app, job_id: str) -> Path:
    """The job's workspace directory: ``<WORKSPACE_ROOT>/<job id>``."""
    return Path(app.config["WORKSPACE_ROOT"]).resolve() / job_id


def files_under(directory: Path) -> dict[str, str]:
    """Every file below ``directory`` (relative POSIX path → content); {} if it is absent."""
    if not directory.exists():
        return {}
    return {
        p.relative_to(directory).as_posix(): p.read_text()
        for p in sorted(directory.rglob("*"))
        if p.is_file() or p.is_symlink()
    }


def pending_list(admin) -> list[dict]:
    """The admin's list of pending checkpoints."""
    response = admin.request("GET", "/api/admin/agent-checkpoints")
    assert response.status_code == 200, response.get_json()
    return response.get_json()["checkpoints"]


def attempts(job: dict) -> list[tuple[str, int, str]]:
    """The job's step ledger as (step, attempt, status), in the order the steps ran."""
    return [(s["step"], s["attempt"], s["status"]) for s in job["steps"]]


def drain(user) -> None:
    """Run a lowest-priority job to completion: the worker has taken what was queued before it.

    Used before asserting that something did *not* happen (a step that must not run).
    """
    sentinel = user.enqueue("simple-task", {}, priority=0, description="drain the queue")
    user.wait_for(sentinel["id"], "COMPLETED")


def approve_ok(admin, checkpoint_id: str, **body) -> dict:
    """Approve as ``admin``; returns the decided checkpoint."""
    response = admin.approve(checkpoint_id, **body)
    assert response.status_code == 200, response.get_json()
    return response.get_json()["checkpoint"]


# -- simple-task -----------------------------------------------------------------------------


def test_simple_task_logs_its_work_and_completes(worker, user, admin):
    """Given a simple-task job, when the worker runs it, then it completes without a review.

    Its logs show the work in order, its INFO checkpoint is recorded but never pending
    (the admin's pending list stays empty throughout), its result is what the step
    returned, and its ledger shows one successful attempt of ``run``.
    """
    job = user.enqueue("simple-task", {"topic": "queues", "depth": 2}, description="Summarise")

    def completed_and_never_pending():
        assert pending_list(admin) == []
        current = user.job(job["id"])
        return current if current["status"] in ("COMPLETED", "FAILED") else None

    done = wait_until(completed_and_never_pending, message="the simple task to finish")

    assert done["status"] == "COMPLETED", done
    assert done["error"] is None
    assert done["result"] == {"success": True, "inputKeys": ["depth", "topic"]}
    assert done["completedAt"] is not None
    assert [(log["kind"], log["message"]) for log in done["logs"]] == [
        ("queued", "Job queued at priority 5"),
        ("thinking", "Working on: Summarise"),
        ("completed", "Task completed"),
        ("checkpoint", "INFO checkpoint: Input received"),
        ("completed", "Job completed"),
    ]
    [checkpoint] = done["checkpoints"]
    assert checkpoint["type"] == "INFO"
    assert checkpoint["status"] == "RECORDED"
    assert checkpoint["title"] == "Input received"
    assert checkpoint["data"] == {"keys": ["depth", "topic"]}
    assert checkpoint["decision"] is None
    assert pending_list(admin) == []
    assert attempts(done) == [("run", 1, "succeeded")]
    assert done["steps"][0]["output"] == done["result"]
    assert done["steps"][0]["finishedAt"] is not None


# -- code-generation -------------------------------------------------------------------------


def test_code_generation_writes_files_only_after_approval(worker, app, user, admin):
    """Given a code-generation job proposing two files, when it runs, then it waits for review.

    The pending checkpoint shows the proposal and is in the admin's pending list with
    its job; nothing is in the workspace yet. When the admin approves, the job
    completes with the written paths, the files hold the proposed content, and the
    checkpoint carries the decision: who, from where, with which client, and when.
    """
    job = user.enqueue("code-generation", {"files": PROPOSAL})
    waiting = user.wait_for(job["id"], "WAITING_APPROVAL", "FAILED")
    assert waiting["status"] == "WAITING_APPROVAL", waiting

    checkpoint = user.pending_checkpoint(job["id"])
    assert checkpoint["type"] == "APPROVAL_REQUIRED"
    assert checkpoint["title"] == "Review file changes"
    assert checkpoint["data"]["files"] == PROPOSAL
    assert checkpoint["decision"] is None

    [listed] = pending_list(admin)
    assert listed["id"] == checkpoint["id"]
    assert listed["job"]["id"] == job["id"]
    assert listed["job"]["status"] == "WAITING_APPROVAL"
    assert listed["job"]["jobType"] == "code-generation"
    assert listed["job"]["owner"] == user.name

    drain(user)
    assert files_under(workspace(app, job["id"])) == {}
    assert user.job(job["id"])["status"] == "WAITING_APPROVAL"

    response = admin.request(
        "POST",
        f"/api/admin/agent-checkpoints/{checkpoint['id']}",
        json={"reason": "looks right"},
        headers={"User-Agent": "reviewer-cli/1.0"},
    )
    assert response.status_code == 200, response.get_json()
    done = user.wait_for(job["id"], "COMPLETED", "FAILED")

    assert done["status"] == "COMPLETED", done
    assert done["result"]["written"] == ["README.md", "src/app/main.py"]
    assert files_under(workspace(app, job["id"])) == {
        "README.md": "# hello\n",
        "src/app/main.py": "print('hello')\n",
    }
    [decided] = done["checkpoints"]
    assert decided["status"] == "APPROVED"
    assert decided["decidedAt"] is not None
    decision = decided["decision"]
    assert decision["outcome"] == "APPROVED"
    assert decision["decidedBy"] == admin.name
    assert decision["reason"] == "looks right"
    assert decision["data"] is None
    assert decision["ip"] == "127.0.0.1"
    assert decision["userAgent"] == "reviewer-cli/1.0"
    assert decision["createdAt"] is not None
    assert attempts(done) == [("propose", 1, "succeeded"), ("write", 1, "succeeded")]
    assert pending_list(admin) == []


def test_rejected_code_generation_fails_with_the_reason(worker, app, user, admin):
    """Given a code-generation job waiting for review, when the admin rejects it with a reason,
    then the job fails carrying that reason, the decision keeps it, and no file is written.
    """
    job = user.enqueue("code-generation", {"files": PROPOSAL})
    user.wait_for(job["id"], "WAITING_APPROVAL")
    checkpoint = user.pending_checkpoint(job["id"])

    response = admin.reject(checkpoint["id"], "touches the wrong module")
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["checkpoint"]["status"] == "REJECTED"

    drain(user)
    failed = user.job(job["id"])
    assert failed["status"] == "FAILED"
    assert "touches the wrong module" in failed["error"]
    [decided] = failed["checkpoints"]
    assert decided["status"] == "REJECTED"
    assert decided["decision"]["outcome"] == "REJECTED"
    assert decided["decision"]["reason"] == "touches the wrong module"
    assert decided["decision"]["decidedBy"] == admin.name
    assert attempts(failed) == [("propose", 1, "succeeded")]
    assert files_under(workspace(app, job["id"])) == {}
    assert pending_list(admin) == []


def test_approval_with_edited_files_writes_the_edit(worker, app, user, admin):
    """Given a code-generation job waiting for review, when the admin approves it with one
    file's content edited, then the workspace holds the edit (and the other file as
    proposed), and the job shows both what was proposed and what was approved.
    """
    job = user.enqueue("code-generation", {"files": PROPOSAL})
    user.wait_for(job["id"], "WAITING_APPROVAL")
    checkpoint = user.pending_checkpoint(job["id"])
    edited = [PROPOSAL[0], {"path": "src/app/main.py", "content": "print('reviewed')\n"}]

    decided = approve_ok(admin, checkpoint["id"], data={"files": edited}, reason="small fix")
    assert decided["decision"]["data"] == {"files": edited}
    done = user.wait_for(job["id"], "COMPLETED", "FAILED")

    assert done["status"] == "COMPLETED", done
    assert files_under(workspace(app, job["id"])) == {
        "README.md": "# hello\n",
        "src/app/main.py": "print('reviewed')\n",
    }
    [shown] = done["checkpoints"]
    assert shown["status"] == "APPROVED"
    assert shown["data"] == {"files": PROPOSAL}
    assert shown["decision"]["data"] == {"files": edited}
    assert shown["decision"]["reason"] == "small fix"


# -- data-processing -------------------------------------------------------------------------


def test_data_processing_passes_two_reviews_and_completes(worker, user, admin):
    """Given a data-processing job, when the admin approves the validated input and then the
    transformed output, then the job completes having processed every record.

    The second review shows the upper-cased records; both checkpoints end APPROVED, in
    order; each of validate, transform and complete ran and succeeded exactly once.
    """
    job = user.enqueue("data-processing", {"records": RECORDS})
    user.wait_for(job["id"], "WAITING_APPROVAL")
    first = user.pending_checkpoint(job["id"])
    assert first["step"] == "validate"
    assert first["data"] == {"records": RECORDS, "columns": ["lang", "name", "year"]}

    approve_ok(admin, first["id"])
    user.wait_for(job["id"], "WAITING_APPROVAL")
    second = user.pending_checkpoint(job["id"])
    assert second["id"] != first["id"]
    assert second["step"] == "transform"
    assert second["data"] == {"records": UPPERCASED}

    approve_ok(admin, second["id"])
    done = user.wait_for(job["id"], "COMPLETED", "FAILED")

    assert done["status"] == "COMPLETED", done
    assert done["result"]["processed"] == len(RECORDS)
    assert done["result"]["records"] == UPPERCASED
    assert [(c["id"], c["status"]) for c in done["checkpoints"]] == [
        (first["id"], "APPROVED"),
        (second["id"], "APPROVED"),
    ]
    assert [c["decision"]["outcome"] for c in done["checkpoints"]] == ["APPROVED", "APPROVED"]
    assert attempts(done) == [
        ("validate", 1, "succeeded"),
        ("transform", 1, "succeeded"),
        ("complete", 1, "succeeded"),
    ]


def test_job_checkpoints_endpoint_lists_oldest_first_with_decisions(
    worker, user, other_user, admin
):
    """Given a data-processing job whose first review was approved and second rejected, when
    its owner asks for its checkpoints, then both come back oldest first with their decisions
    (and another user gets 404).
    """
    job = user.enqueue("data-processing", {"records": RECORDS})
    user.wait_for(job["id"], "WAITING_APPROVAL")
    approve_ok(admin, user.pending_checkpoint(job["id"])["id"], reason="input is fine")
    user.wait_for(job["id"], "WAITING_APPROVAL")
    response = admin.reject(user.pending_checkpoint(job["id"])["id"], "output looks wrong")
    assert response.status_code == 200, response.get_json()
    assert user.job(job["id"])["status"] == "FAILED"

    response = user.request("GET", f"/api/agent-jobs/{job['id']}/checkpoints")

    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["success"] is True
    checkpoints = body["checkpoints"]
    assert [(c["step"], c["status"]) for c in checkpoints] == [
        ("validate", "APPROVED"),
        ("transform", "REJECTED"),
    ]
    assert checkpoints[0]["createdAt"] <= checkpoints[1]["createdAt"]
    assert [(c["decision"]["outcome"], c["decision"]["reason"]) for c in checkpoints] == [
        ("APPROVED", "input is fine"),
        ("REJECTED", "output looks wrong"),
    ]
    assert all(c["decision"]["decidedBy"] == admin.name for c in checkpoints)
    assert checkpoints == user.job(job["id"])["checkpoints"]
    other = other_user.request("GET", f"/api/agent-jobs/{job['id']}/checkpoints")
    assert other.status_code == 404


# -- the workspace boundary ------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad_path",
    ["../evil.txt", "notes/../../evil.txt", "ABSOLUTE"],
    ids=["parent", "nested-parent", "absolute"],
)
def test_proposal_escaping_the_workspace_is_refused(app, user, tmp_path, bad_path):
    """Given a code-generation proposal with a path that leaves the workspace, when it is
    submitted, then it is refused with a 422 naming the file's path field, and no job is
    created.
    """
    if bad_path == "ABSOLUTE":
        bad_path = str(tmp_path / "evil.txt")
    proposal = [PROPOSAL[0], {"path": bad_path, "content": "pwned\n"}]

    response = user.request(
        "POST",
        "/api/agent-jobs",
        json={
            "jobType": "code-generation",
            "taskDescription": "escape",
            "inputData": {"files": proposal},
        },
    )

    assert response.status_code == 422
    error = response.get_json()["error"]
    assert "inputData.files.1.path" in error["message"]
    assert repr(bad_path) in error["message"]
    assert user.request("GET", "/api/agent-jobs").get_json()["jobs"] == []


def test_an_edited_path_escaping_the_workspace_is_refused_at_approval(worker, app, user, admin):
    """Given a code-generation job waiting for review, when the reviewer approves it with a
    path edited to leave the workspace, then the approval is a 422 naming that path, the
    checkpoint stays pending and nothing runs; approved as proposed, it completes, and
    nothing is written outside its workspace. (The write step refuses such a path too: the
    workspace's unit tests.)
    """
    job = user.enqueue("code-generation", {"files": PROPOSAL})
    user.wait_for(job["id"], "WAITING_APPROVAL")
    checkpoint = user.pending_checkpoint(job["id"])
    edited = [PROPOSAL[0], {"path": "../evil.txt", "content": "pwned\n"}]

    refused = admin.approve(checkpoint["id"], data={"files": edited})

    assert refused.status_code == 422, refused.get_json()
    assert "data.files.1.path" in refused.get_json()["error"]["details"]
    assert user.pending_checkpoint(job["id"])["id"] == checkpoint["id"]
    approve_ok(admin, checkpoint["id"])
    done = user.wait_for(job["id"], "COMPLETED", "FAILED")
    assert done["status"] == "COMPLETED", done["error"]
    assert attempts(done) == [("propose", 1, "succeeded"), ("write", 1, "succeeded")]
    assert not (Path(app.config["WORKSPACE_ROOT"]).resolve() / "evil.txt").exists()


def test_symlink_out_of_the_workspace_is_not_followed(worker, app, user, admin, tmp_path):
    """Given a proposal for ``link/evil.txt`` and, by the time of approval, a ``link`` in the
    workspace that points outside it, when the admin approves, then the write step fails
    the job naming the path and the directory the link points to stays empty.
    """
    outside = tmp_path / "outside"
    outside.mkdir()
    job = user.enqueue("code-generation", {"files": [{"path": "link/evil.txt", "content": "x"}]})
    user.wait_for(job["id"], "WAITING_APPROVAL")
    ws = workspace(app, job["id"])
    ws.mkdir(parents=True)
    (ws / "link").symlink_to(outside, target_is_directory=True)

    approve_ok(admin, user.pending_checkpoint(job["id"])["id"])
    failed = user.wait_for(job["id"], "FAILED", "COMPLETED")

    assert failed["status"] == "FAILED", failed
    assert failed["error"].startswith("write: PermanentError")
    assert "'link/evil.txt'" in failed["error"]
    assert list(outside.iterdir()) == []
