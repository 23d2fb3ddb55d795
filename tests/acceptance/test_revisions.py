"""The revision loop of the seed handlers end to end: a reviewer requests changes, the step
runs again with the feedback on a real worker and proposes the next version of its
checkpoint, and a decision on a version the reviewer has not seen is refused.

A non-admin ``user`` submits and an ``admin`` reviews: a job's submitter may not decide
its checkpoints.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = [pytest.mark.acceptance]

PROPOSAL = [
    {"path": "README.md", "content": "# hello\n"},
    {"path": "src/app/main.py", "content": "print('hello')\n"},
]
EDITED = [PROPOSAL[0], {"path": "src/app/main.py", "content": "print('reviewed')\n"}]
RECORDS = [{"name": "ada lovelace"}, {"name": "grace hoper"}]
FIXED = [{"name": "ada lovelace"}, {"name": "grace hopper"}]


def request_changes(admin, checkpoint_id: str, **body):
    return admin.request(
        "POST", f"/api/admin/agent-checkpoints/{checkpoint_id}/request-changes", json=body
    )


def sent_back(admin, checkpoint_id: str, **body) -> dict:
    """Request changes as ``admin``; returns the checkpoint sent back."""
    response = request_changes(admin, checkpoint_id, **body)
    assert response.status_code == 200, response.get_json()
    return response.get_json()["checkpoint"]


def approved(admin, checkpoint_id: str, **body) -> dict:
    response = admin.approve(checkpoint_id, **body)
    assert response.status_code == 200, response.get_json()
    return response.get_json()["checkpoint"]


def next_proposal(user, job_id: str) -> dict:
    """The pending checkpoint the job waits at once its step has run again."""
    user.wait_for(job_id, "WAITING_APPROVAL")
    return user.pending_checkpoint(job_id)


def submit(user, job_type: str, input_data: dict, **extra) -> dict:
    response = user.request(
        "POST",
        "/api/agent-jobs",
        json={"jobType": job_type, "taskDescription": "revise", "inputData": input_data, **extra},
    )
    assert response.status_code == 201, response.get_json()
    return response.get_json()["job"]


def files_under(directory: Path) -> dict[str, str]:
    return {
        p.relative_to(directory).as_posix(): p.read_text()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def test_code_generation_revises_to_version_3_and_refuses_a_stale_approval(
    worker, app, user, admin
):
    """Given a code-generation job waiting for review, when the admin requests changes with
    edited files, then propose runs again and proposes them as version 2, carrying the
    feedback; when the admin requests changes again without files, version 3 proposes
    version 2's files; an approval of version 2 is refused with version 3 in the answer;
    approving version 3 writes its files, and the checkpoint lists the three versions with
    the feedback between them."""
    job = submit(user, "code-generation", {"files": PROPOSAL})
    v1 = next_proposal(user, job["id"])
    assert (v1["version"], v1["data"]) == (1, {"files": PROPOSAL})
    assert v1["policy"]["maxRevisions"] == 5

    first = sent_back(admin, v1["id"], feedback="print reviewed", data={"files": EDITED}, version=1)
    assert first["status"] == "CHANGES_REQUESTED"
    v2 = next_proposal(user, job["id"])
    assert v2["version"] == 2 and v2["id"] != v1["id"]
    assert v2["data"] == {
        "files": EDITED,
        "revision": {"version": 2, "feedback": "print reviewed", "by": "admin"},
    }

    sent_back(admin, v2["id"], feedback="keep the README too", version=2)
    v3 = next_proposal(user, job["id"])
    assert v3["version"] == 3
    assert v3["data"] == {
        "files": EDITED,
        "revision": {"version": 3, "feedback": "keep the README too", "by": "admin"},
    }

    for stale in (admin.approve(v3["id"], version=2), admin.approve(v2["id"], version=2)):
        assert stale.status_code == 409, stale.get_json()
        error = stale.get_json()["error"]
        assert error["code"] == "stale_version"
        assert (
            error["details"]["checkpoint"]["id"],
            error["details"]["checkpoint"]["version"],
        ) == (
            v3["id"],
            3,
        )
    assert user.pending_checkpoint(job["id"])["id"] == v3["id"]

    approved(admin, v3["id"], version=3, reason="good now")
    done = user.wait_for(job["id"], "COMPLETED", "FAILED")
    assert done["status"] == "COMPLETED", done
    workspace = Path(app.config["WORKSPACE_ROOT"]).resolve() / job["id"]
    assert files_under(workspace) == {f["path"]: f["content"] for f in EDITED}
    revising = [log["message"] for log in done["logs"] if log["kind"] == "revision"]
    assert revising == [
        "Revising after feedback from admin: print reviewed",
        "Revising after feedback from admin: keep the README too",
    ]

    shown = admin.request("GET", f"/api/admin/agent-checkpoints/{v3['id']}").get_json()
    versions = shown["versions"]
    assert [(v["version"], v["status"]) for v in versions] == [
        (1, "CHANGES_REQUESTED"),
        (2, "CHANGES_REQUESTED"),
        (3, "APPROVED"),
    ]
    votes = [
        [(vote["outcome"], vote["reason"], vote["data"], vote["decidedBy"]) for vote in v["votes"]]
        for v in versions
    ]
    assert votes == [
        [("CHANGES_REQUESTED", "print reviewed", {"files": EDITED}, "admin")],
        [("CHANGES_REQUESTED", "keep the README too", None, "admin")],
        [("APPROVED", "good now", None, "admin")],
    ]


def test_max_revisions_from_the_submission_refuses_the_second_request(worker, user, admin):
    """Given a code-generation job submitted with ``review: {"maxRevisions": 1}``, when the
    admin requests changes twice, then the first sends version 1 back and the second is
    refused with 409 revisions_exhausted, version 2 still waiting for a decision."""
    job = submit(user, "code-generation", {"files": PROPOSAL}, review={"maxRevisions": 1})
    v1 = next_proposal(user, job["id"])
    assert v1["policy"]["maxRevisions"] == 1

    sent_back(admin, v1["id"], feedback="once")
    v2 = next_proposal(user, job["id"])
    refused = request_changes(admin, v2["id"], feedback="twice")

    assert refused.status_code == 409, refused.get_json()
    assert refused.get_json()["error"]["code"] == "revisions_exhausted"
    assert user.job(job["id"])["status"] == "WAITING_APPROVAL"
    assert user.pending_checkpoint(job["id"])["id"] == v2["id"]


def test_data_processing_revises_its_input_and_its_output(worker, user, admin):
    """Given a data-processing job, when the admin sends the validated input back with
    fixed records, then validate proposes them as version 2 and the transform works on
    them; when the admin sends the transformed output back with feedback alone, transform
    proposes the same output again as version 2, which completes the job once approved."""
    job = submit(user, "data-processing", {"records": RECORDS})
    v1 = next_proposal(user, job["id"])

    sent_back(admin, v1["id"], feedback="typo in hopper", data={"records": FIXED})
    v2 = next_proposal(user, job["id"])
    assert (v2["step"], v2["version"]) == ("validate", 2)
    assert v2["data"] == {
        "records": FIXED,
        "columns": ["name"],
        "revision": {"version": 2, "feedback": "typo in hopper", "by": "admin"},
    }
    approved(admin, v2["id"])

    output = next_proposal(user, job["id"])
    uppercased = [{"name": "ADA LOVELACE"}, {"name": "GRACE HOPPER"}]
    assert (output["step"], output["version"], output["data"]) == (
        "transform",
        1,
        {"records": uppercased},
    )
    sent_back(admin, output["id"], feedback="check it again")
    again = next_proposal(user, job["id"])
    assert (again["step"], again["version"]) == ("transform", 2)
    assert again["data"] == {
        "records": uppercased,
        "revision": {"version": 2, "feedback": "check it again", "by": "admin"},
    }
    approved(admin, again["id"])

    done = user.wait_for(job["id"], "COMPLETED", "FAILED")
    assert done["status"] == "COMPLETED", done
    assert done["result"] == {"processed": 2, "records": uppercased}
