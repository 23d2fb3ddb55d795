"""Review policies through the API: who may decide, self-approval, quorum (under
concurrency too), deadlines and what they decide, reminders and escalation, named options,
the data schema, a submission's ``review``, bulk decisions, cancel races and the metrics.

Jobs of ``policy-review`` (tests/handlers.py) open their checkpoint under the policy layer
their ``inputData.policy`` says. Most tests let the real worker run the step that opens
it and the continuation after a decision; the tests that must see what is dispatched
before any worker takes it stop the worker and open the checkpoint in this process
(``park_here``). Deadlines, reminders and escalations are driven by calling the sweep's
parts in this process with a ``now`` in the future, not by sleeping.
"""

from __future__ import annotations

import threading
import uuid
from datetime import UTC
from datetime import datetime
from datetime import timedelta

import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ApiUser
from tests.conftest import wait_until
from tests.integration.test_races import at_once

pytestmark = pytest.mark.integration

CHECKPOINTS = "/api/admin/agent-checkpoints"
SCHEMA = {
    "type": "object",
    "required": ["ticket"],
    "properties": {"ticket": {"type": "string"}},
}


# -- helpers ------------------------------------------------------------------------------


def person(app, client, name: str, *, admin: bool = True) -> ApiUser:
    """A user (an admin by default) with an API token."""
    from app.auth import create_user

    with app.app_context():
        user, _row, token = create_user(name, admin=admin)
        return ApiUser(client, name, token, user.id)


def admins(app, client, *names: str) -> list[ApiUser]:
    return [person(app, client, name) for name in names]


def submit(owner: ApiUser, policy: dict | None = None, **body):
    """POST a ``policy-review`` job (unless ``jobType`` says otherwise) whose checkpoint
    opens under ``policy``; the response."""
    marks = body.pop("marks", None)
    input_data = {"policy": policy or {}}
    if marks is not None:
        input_data["marks"] = str(marks)
    return owner.request(
        "POST",
        "/api/agent-jobs",
        json={
            "jobType": "policy-review",
            "taskDescription": "Review under a policy",
            "inputData": input_data,
            "priority": 5,
            **body,
        },
    )


def parked(owner: ApiUser, policy: dict | None = None, **body) -> dict:
    """A job submitted by ``owner`` that the worker parked at its checkpoint; the pending
    checkpoint, as the job shows it."""
    response = submit(owner, policy, **body)
    assert response.status_code == 201, response.get_json()
    job_id = response.get_json()["job"]["id"]
    owner.wait_for(job_id, "WAITING_APPROVAL")
    return owner.pending_checkpoint(job_id)


def park_here(app, owner: ApiUser, policy=None, *, marks=None) -> dict:
    """A ``policy-review`` job of ``owner`` parked at a pending checkpoint opened under the
    ``Policy`` ``policy`` in this process, as a worker would (no worker may run); ``{"id",
    "jobId"}``."""
    from app import state
    from app.extensions import db
    from app.models import Checkpoint

    input_data = {} if marks is None else {"marks": str(marks)}
    with app.app_context():
        job = state.enqueue(
            user_id=owner.id,
            job_type="policy-review",
            task_description="Parked here",
            input_data=input_data,
            priority=5,
        )
        claim = state.claim_step(job.id, "propose", worker="tests", task_id=None, lease_seconds=60)
        opened = {
            "type": "APPROVAL_REQUIRED",
            "title": "Review",
            "data": {"n": 1},
            "policy": policy,
        }
        assert state.finish_step(claim, {}, [opened], chain_continues=False) == "waiting"
        checkpoint_id = db.session.scalar(
            sa.select(Checkpoint.id).where(Checkpoint.job_id == job.id)
        )
        return {"id": str(checkpoint_id), "jobId": str(job.id)}


def shown(viewer: ApiUser, checkpoint_id: str) -> dict:
    """The checkpoint as ``GET /api/admin/agent-checkpoints/{id}`` shows it."""
    response = viewer.request("GET", f"{CHECKPOINTS}/{checkpoint_id}")
    assert response.status_code == 200, response.get_json()
    return response.get_json()["checkpoint"]


def error_of(response, status: int) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert body["success"] is False, body
    return body["error"]


def request_changes(reviewer: ApiUser, checkpoint_id: str, feedback: str, **body):
    return reviewer.request(
        "POST",
        f"{CHECKPOINTS}/{checkpoint_id}/request-changes",
        json={"feedback": feedback, **body},
    )


def bulk(reviewer: ApiUser, *decisions: dict) -> list[dict]:
    response = reviewer.request("POST", f"{CHECKPOINTS}/decisions", json={"decisions": decisions})
    assert response.status_code == 200, response.get_json()
    return response.get_json()["results"]


def pending_list(viewer: ApiUser, **query: str) -> list[dict]:
    response = viewer.request("GET", CHECKPOINTS, query_string=query)
    assert response.status_code == 200, response.get_json()
    return response.get_json()["checkpoints"]


def lines(job: dict, kind: str) -> list[str]:
    """The messages of the job's log lines of ``kind``."""
    return [line["message"] for line in job["logs"] if line["kind"] == kind]


def attempts(job: dict, step: str) -> int:
    return sum(1 for s in job["steps"] if s["step"] == step)


def marks(path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def metric(client, name: str, **labels: str) -> float:
    """One sample of a scrape of /api/metrics (0 when absent)."""
    response = client.get("/api/metrics")
    assert response.status_code == 200
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return s.value
    return 0.0


def in_app_threads(app, fn, n: int = 2) -> list:
    """Run ``fn()`` on ``n`` threads at once, each in an app context of its own; their
    results."""
    barrier = threading.Barrier(n)
    results: list = [None] * n

    def run(i: int) -> None:
        with app.app_context():
            barrier.wait()
            results[i] = fn()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


def later(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


# -- approvers -----------------------------------------------------------------------------


def test_only_named_approvers_and_members_of_a_named_group_may_decide(app, client, user, worker):
    """Given a policy naming alice and group:reviewers, of which dave is a member, when bob
    (an admin named nowhere) approves, then 403 names who may; dave's pending list
    (mine=true) holds the checkpoint and says he may decide, bob's does not; dave
    approves."""
    from app import groups

    _alice, bob, dave = admins(app, client, "alice", "bob", "dave")
    with app.app_context():
        groups.create_group("reviewers")
        groups.add_members("reviewers", ["dave"])
    checkpoint = parked(user, {"approvers": ["alice", "group:reviewers"]})

    error = error_of(bob.approve(checkpoint["id"]), 403)
    assert "alice, group:reviewers" in error["message"], error
    assert "bob is not among them" in error["message"], error

    assert [c["id"] for c in pending_list(dave, mine="true")] == [checkpoint["id"]]
    assert pending_list(bob, mine="true") == []
    (seen_by_bob,) = pending_list(bob)
    assert seen_by_bob["mayDecide"] is False
    (seen_by_dave,) = pending_list(dave)
    assert seen_by_dave["mayDecide"] is True
    assert seen_by_dave["approvers"] == ["alice", "group:reviewers"]
    assert seen_by_dave["policy"]["approvers"] == ["alice", "group:reviewers"]

    response = dave.approve(checkpoint["id"], reason="reviewed")
    assert response.status_code == 200, response.get_json()
    decided = response.get_json()["checkpoint"]
    assert decided["status"] == "APPROVED"
    assert decided["decision"]["decidedBy"] == "dave"
    assert shown(bob, checkpoint["id"])["votes"][0]["decidedBy"] == "dave"


# -- self-approval ---------------------------------------------------------------------------


def test_the_submitter_may_not_decide_their_own_jobs_checkpoint_on_any_api_channel(
    app, client, worker
):
    """Given a job submitted by the admin ada, when ada approves, rejects, requests changes
    or decides in bulk, then each is 403 saying that she submitted the job and that the
    policy does not allow self-approval; nothing is recorded, and another admin may
    approve."""
    ada, bob = admins(app, client, "ada", "bob")
    checkpoint = parked(ada)
    cid = checkpoint["id"]

    refusals = [
        error_of(ada.approve(cid), 403),
        error_of(ada.reject(cid, "mine"), 403),
        error_of(request_changes(ada, cid, "redo it"), 403),
    ]
    (result,) = bulk(ada, {"id": cid, "outcome": "APPROVED"})
    assert result["status"] == 403, result
    refusals.append(result["error"])
    for error in refusals:
        assert error["code"] == "forbidden", error
        assert f"ada submitted job {checkpoint['jobId']}" in error["message"], error
        assert "allowSelfApproval" in error["message"], error

    unchanged = shown(bob, cid)
    assert (unchanged["status"], unchanged["votes"]) == ("PENDING", [])
    assert bob.approve(cid).status_code == 200


def test_a_step_that_allows_self_approval_lets_the_submitter_approve(app, client, worker):
    """Given a job type whose step's policy says allowSelfApproval, when the admin who
    submitted the job approves it, then it is approved and the job completes."""
    (ada,) = admins(app, client, "ada")
    response = submit(ada, jobType="policy-self-approval", inputData={})
    assert response.status_code == 201, response.get_json()
    job_id = response.get_json()["job"]["id"]
    ada.wait_for(job_id, "WAITING_APPROVAL")
    checkpoint = ada.pending_checkpoint(job_id)
    assert checkpoint["policy"]["allowSelfApproval"] is True

    response = ada.approve(checkpoint["id"])
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["checkpoint"]["decision"]["decidedBy"] == "ada"
    ada.wait_for(job_id, "COMPLETED")


# -- quorum --------------------------------------------------------------------------------


def test_two_approvals_settle_a_two_of_m_checkpoint_and_the_continuation_runs_once(
    app, client, user, worker, tmp_path
):
    """Given minApprovals 2, when ada approves, then the checkpoint stays PENDING showing 1
    approval and her vote, the job waits, and ada's second vote is 409 already_voted; when
    bob approves, it is APPROVED and the steps after it run once each."""
    ada, bob = admins(app, client, "ada", "bob")
    checkpoint = parked(user, {"minApprovals": 2}, marks=tmp_path / "marks")
    cid, job_id = checkpoint["id"], checkpoint["jobId"]

    response = ada.approve(cid, reason="fine by me")
    assert response.status_code == 200, response.get_json()
    first = response.get_json()["checkpoint"]
    assert (first["status"], first["approvals"], first["decision"]) == ("PENDING", 1, None)
    assert [(v["decidedBy"], v["outcome"]) for v in first["votes"]] == [("ada", "APPROVED")]
    job = user.job(job_id)
    assert job["status"] == "WAITING_APPROVAL"
    assert lines(job, "vote") == ["Approval by ada (1/2 approvals): fine by me"]

    assert error_of(ada.approve(cid), 409)["code"] == "already_voted"
    assert shown(bob, cid)["approvals"] == 1

    response = bob.approve(cid)
    assert response.status_code == 200, response.get_json()
    second = response.get_json()["checkpoint"]
    assert (second["status"], second["approvals"]) == ("APPROVED", 2)
    assert second["decision"]["decidedBy"] == "bob"
    assert [v["decidedBy"] for v in second["votes"]] == ["ada", "bob"]

    job = user.wait_for(job_id, "COMPLETED")
    assert marks(tmp_path / "marks") == ["propose", "apply", "staging"]
    assert (attempts(job, "apply"), attempts(job, "staging")) == (1, 1)
    assert lines(job, "approved") == ["Checkpoint approved by bob (2/2 approvals)"]


def test_without_veto_rejections_count_until_the_approvals_needed_cannot_come(
    app, client, user, worker
):
    """Given 5 admins and minApprovals 3 with vetoOnReject false, two rejections leave the
    checkpoint PENDING (three may still approve) and three approvals then approve it; on
    another, the third rejection rejects it (two could no longer make three) and fails the
    job."""
    five = admins(app, client, "a1", "a2", "a3", "a4", "a5")
    policy = {"minApprovals": 3, "vetoOnReject": False}
    first, second = parked(user, policy), parked(user, policy)

    for voter in five[:2]:
        assert voter.reject(first["id"], "not yet").status_code == 200
    still = shown(five[0], first["id"])
    assert (still["status"], still["approvals"], still["rejections"]) == ("PENDING", 0, 2)
    for voter in five[2:4]:
        assert voter.approve(first["id"]).get_json()["checkpoint"]["status"] == "PENDING"
    last = five[4].approve(first["id"]).get_json()["checkpoint"]
    assert (last["status"], last["approvals"], last["rejections"]) == ("APPROVED", 3, 2)

    statuses = [v.reject(second["id"], "no").get_json()["checkpoint"]["status"] for v in five[:3]]
    assert statuses == ["PENDING", "PENDING", "REJECTED"]
    assert user.wait_for(second["jobId"], "FAILED")["error"] == "Checkpoint rejected: no"
    user.wait_for(first["jobId"], "COMPLETED")


# -- deadlines -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("on_timeout", "checkpoint_status", "job_status"),
    [("reject", "REJECTED", "FAILED"), ("fail", "EXPIRED", "FAILED")],
)
def test_a_deadline_decides_as_on_timeout_says(
    app, user, worker, on_timeout, checkpoint_status, job_status
):
    """Given expiresIn 60 and onTimeout reject (or fail), when two sweeps run at once at a
    time past the deadline, then one of them decides it: the checkpoint is REJECTED (or
    EXPIRED) by system:timeout, with one vote, and the job FAILED saying there was no
    decision in time."""
    from worker import sweeps

    checkpoint = parked(user, {"expiresIn": 60, "onTimeout": on_timeout})
    with app.app_context():
        assert sweeps.time_out_due(later(30)) == 0
    past = later(120)
    assert sorted(in_app_threads(app, lambda: sweeps.time_out_due(past))) == [0, 1]

    job = user.wait_for(checkpoint["jobId"], job_status)
    (decided,) = job["checkpoints"]
    assert decided["status"] == checkpoint_status
    assert decided["decision"]["decidedBy"] == "system:timeout"
    assert decided["decision"]["userId"] is None
    assert len(decided["votes"]) == 1
    assert job["error"].endswith("no decision within 60s"), job["error"]


def test_a_deadline_that_approves_resumes_the_job(app, user, worker, tmp_path):
    """Given onTimeout approve, when the deadline passes, then system:timeout approves and
    the worker runs the steps after the checkpoint."""
    from worker import sweeps

    checkpoint = parked(user, {"expiresIn": 60, "onTimeout": "approve"}, marks=tmp_path / "m")
    with app.app_context():
        assert sweeps.time_out_due(later(120)) == 1

    job = user.wait_for(checkpoint["jobId"], "COMPLETED")
    assert job["checkpoints"][0]["status"] == "APPROVED"
    assert job["checkpoints"][0]["decision"]["decidedBy"] == "system:timeout"
    assert marks(tmp_path / "m") == ["propose", "apply", "staging"]
    assert lines(job, "approved") == [
        "Checkpoint approved by system:timeout: no decision within 60s"
    ]


def test_a_checkpoint_decided_by_a_person_is_left_alone_by_the_deadline(app, client, user, worker):
    """Given a checkpoint a reviewer approved before its deadline, when the sweep runs past
    the deadline, then it decides nothing, and the decision stays the reviewer's."""
    from worker import sweeps

    (ada,) = admins(app, client, "ada")
    checkpoint = parked(user, {"expiresIn": 60, "onTimeout": "reject"})
    assert ada.approve(checkpoint["id"]).status_code == 200
    with app.app_context():
        assert sweeps.time_out_due(later(120)) == 0
    job = user.wait_for(checkpoint["jobId"], "COMPLETED")
    assert [v["decidedBy"] for v in job["checkpoints"][0]["votes"]] == ["ada"]


# -- reminders and escalation ----------------------------------------------------------------


def test_reminders_fire_once_each_even_with_two_sweeps_at_once(app, client, user, worker):
    """Given expiresIn 3600 and remindAt [600, 60], when two sweeps run at once at 3000s
    and again at 3560s, then one reminder fires each time: two 'reminder' lines on the
    job's timeline, and the reminders counter up by two."""
    from worker import sweeps

    before = metric(client, "agentq_checkpoint_reminders_total", job_type="policy-review")
    checkpoint = parked(user, {"expiresIn": 3600, "remindAt": [600, 60]})
    at_3000, at_3560 = later(3000), later(3560)

    first = in_app_threads(app, lambda: sweeps.fire_due_events(at_3000)["reminder"])
    assert sorted(first) == [0, 1]
    assert lines(user.job(checkpoint["jobId"]), "reminder") == [
        'Reminder: checkpoint "Review the proposal" is decided by its deadline in 00:10:00'
    ]
    second = in_app_threads(app, lambda: sweeps.fire_due_events(at_3560)["reminder"])
    assert sorted(second) == [0, 1]
    with app.app_context():
        assert sweeps.fire_due_events(later(3590))["reminder"] == 0

    job = user.job(checkpoint["jobId"])
    assert len(lines(job, "reminder")) == 2
    assert lines(job, "reminder")[1].endswith("in 00:01:00")
    after = metric(client, "agentq_checkpoint_reminders_total", job_type="policy-review")
    assert after - before == 2
    assert job["status"] == "WAITING_APPROVAL"


def test_escalation_adds_its_approvers_when_due(app, client, user, worker):
    """Given approvers [alice], escalateTo [carol] and escalateAfter 1800, carol is refused
    (403) before the escalation; once the sweep fires it (once, with two sweeps at once),
    the job's timeline says so, the checkpoint's approvers include carol, and she
    approves."""
    from worker import sweeps

    _alice, carol = admins(app, client, "alice", "carol")
    before = metric(client, "agentq_checkpoint_escalations_total", job_type="policy-review")
    checkpoint = parked(
        user, {"approvers": ["alice"], "escalateTo": ["carol"], "escalateAfter": 1800}
    )
    assert "Only alice may decide" in error_of(carol.approve(checkpoint["id"]), 403)["message"]
    with app.app_context():
        assert sweeps.fire_due_events(later(1700))["escalation"] == 0

    fired = in_app_threads(app, lambda: sweeps.fire_due_events(later(1900))["escalation"])
    assert sorted(fired) == [0, 1]
    assert shown(carol, checkpoint["id"])["approvers"] == ["alice", "carol"]
    assert lines(user.job(checkpoint["jobId"]), "escalation") == [
        'Escalated: carol may now decide checkpoint "Review the proposal"'
    ]
    after = metric(client, "agentq_checkpoint_escalations_total", job_type="policy-review")
    assert after - before == 1

    response = carol.approve(checkpoint["id"])
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["checkpoint"]["decision"]["decidedBy"] == "carol"


# -- options and data ------------------------------------------------------------------------

OPTIONS = {"options": [{"name": "deploy-staging", "step": "staging"}, {"name": "deploy-prod"}]}


def test_an_option_chooses_the_step_the_job_resumes_at_and_the_continuation_sees_it(
    app, client, user, worker, tmp_path
):
    """Given options deploy-staging (resuming at staging) and deploy-prod, an unknown option
    is 422 naming option and leaves the checkpoint PENDING; approving with deploy-staging
    skips apply and the last step sees the option; deploy-prod resumes at the next step."""
    (ada,) = admins(app, client, "ada")
    staged = parked(user, OPTIONS, marks=tmp_path / "staged")
    prod = parked(user, OPTIONS, marks=tmp_path / "prod")

    error = error_of(ada.approve(staged["id"], option="deploy-moon"), 422)
    assert list(error["details"]) == ["option"], error
    assert "deploy-staging, deploy-prod" in error["message"], error
    assert shown(ada, staged["id"])["status"] == "PENDING"

    response = ada.approve(staged["id"], option="deploy-staging")
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["checkpoint"]["decision"]["option"] == "deploy-staging"
    assert response.get_json()["checkpoint"]["resumeStep"] == "staging"
    assert ada.approve(prod["id"], option="deploy-prod").status_code == 200

    job = user.wait_for(staged["jobId"], "COMPLETED")
    assert job["result"] == {"option": "deploy-staging"}
    assert marks(tmp_path / "staged") == ["propose", "staging"]
    assert attempts(job, "apply") == 0
    assert user.wait_for(prod["jobId"], "COMPLETED")["result"] == {"option": "deploy-prod"}
    assert marks(tmp_path / "prod") == ["propose", "apply", "staging"]


def test_under_a_quorum_the_vote_that_settles_chooses_the_option(
    app, client, user, worker, tmp_path
):
    """Given options and minApprovals 2, when ada approves choosing deploy-staging and bob's
    approval, which settles it, chooses deploy-prod, then the job resumes where deploy-prod
    says (the step after the checkpoint), and the continuation sees deploy-prod."""
    ada, bob = admins(app, client, "ada", "bob")
    checkpoint = parked(user, {**OPTIONS, "minApprovals": 2}, marks=tmp_path / "marks")

    first = ada.approve(checkpoint["id"], option="deploy-staging").get_json()["checkpoint"]
    assert (first["status"], first["resumeStep"]) == ("PENDING", "apply")
    response = bob.approve(checkpoint["id"], option="deploy-prod")
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["checkpoint"]["resumeStep"] == "apply"

    job = user.wait_for(checkpoint["jobId"], "COMPLETED")
    assert job["result"] == {"option": "deploy-prod"}
    assert marks(tmp_path / "marks") == ["propose", "apply", "staging"]


@pytest.mark.parametrize(
    ("data", "field"),
    [({"note": "no ticket"}, "data"), ({"ticket": 7}, "data.ticket")],
    ids=["missing", "wrong-type"],
)
def test_data_that_does_not_fit_the_data_schema_is_a_422_naming_the_field(
    app, client, user, worker, data, field
):
    """Given a dataSchema requiring a string ticket, an approval whose data lacks it (or has
    a number) is 422 naming the field, and the checkpoint stays PENDING with no vote; with a
    ticket it is approved with the data."""
    (ada,) = admins(app, client, "ada")
    checkpoint = parked(user, {"dataSchema": SCHEMA})
    assert checkpoint["policy"]["dataSchema"] == SCHEMA

    error = error_of(ada.approve(checkpoint["id"], data=data), 422)
    assert list(error["details"]) == [field], error
    unchanged = shown(ada, checkpoint["id"])
    assert (unchanged["status"], unchanged["votes"]) == ("PENDING", [])

    response = ada.approve(checkpoint["id"], data={"ticket": "OPS-1"})
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["checkpoint"]["decision"]["data"] == {"ticket": "OPS-1"}


# -- a submission's review -------------------------------------------------------------------


def test_a_submissions_review_may_tighten_the_declared_policy(app, user, worker):
    """Given a step declaring minApprovals 2, expiresIn 3600, onTimeout reject and
    maxRevisions 3, a submission whose review asks for 3 approvals, 600 seconds, fail and 1
    revision is accepted, and its checkpoint's policy shows those values."""
    review = {"minApprovals": 3, "expiresIn": 600, "onTimeout": "fail", "maxRevisions": 1}
    response = submit(user, jobType="policy-declared", inputData={}, review=review)
    assert response.status_code == 201, response.get_json()
    job_id = response.get_json()["job"]["id"]
    user.wait_for(job_id, "WAITING_APPROVAL")

    checkpoint = user.pending_checkpoint(job_id)
    policy = checkpoint["policy"]
    assert {k: policy[k] for k in review} == review
    assert (policy["allowSelfApproval"], policy["vetoOnReject"]) == (False, True)
    deadline = datetime.fromisoformat(checkpoint["expiresAt"])
    waits = deadline - datetime.fromisoformat(checkpoint["createdAt"])
    assert abs(waits - timedelta(seconds=600)) < timedelta(seconds=1), waits


def test_a_submissions_review_that_loosens_the_declared_policy_is_a_422_naming_each_field(
    app, user
):
    """Given the same step, a review asking for 1 approval, 7200 seconds, onTimeout approve,
    5 revisions and self-approval is 422 naming review.<field> for each, and no job is
    made."""
    review = {
        "minApprovals": 1,
        "expiresIn": 7200,
        "onTimeout": "approve",
        "maxRevisions": 5,
        "allowSelfApproval": True,
    }
    error = error_of(submit(user, jobType="policy-declared", inputData={}, review=review), 422)
    assert sorted(error["details"]) == sorted(f"review.{name}" for name in review), error
    assert error["details"]["review.minApprovals"] == ["must be at least 2"]
    assert error["details"]["review.onTimeout"] == ["must be reject or fail"]
    response = user.request("GET", "/api/agent-jobs")
    assert response.get_json()["jobs"] == []


# -- bulk ----------------------------------------------------------------------------------


def test_bulk_decisions_answer_each_item_on_its_own(app, client, user, worker):
    """Given five items (one to approve, an unknown id, one already decided, one the admin
    submitted, a rejection without a reason), then their results are 200, 404, 409, 403
    and 422 in order, each with its error, and only the first is decided by the request."""
    admin, other = admins(app, client, "admin", "other")
    to_approve, decided, to_reject = parked(user), parked(user), parked(user)
    own = parked(admin)
    assert other.approve(decided["id"]).status_code == 200
    unknown = str(uuid.uuid4())

    results = bulk(
        admin,
        {"id": to_approve["id"], "outcome": "APPROVED", "reason": "ok"},
        {"id": unknown, "outcome": "APPROVED"},
        {"id": decided["id"], "outcome": "APPROVED"},
        {"id": own["id"], "outcome": "APPROVED"},
        {"id": to_reject["id"], "outcome": "REJECTED"},
    )

    assert [r["status"] for r in results] == [200, 404, 409, 403, 422], results
    assert [r["id"] for r in results] == [
        to_approve["id"],
        unknown,
        decided["id"],
        own["id"],
        to_reject["id"],
    ]
    assert results[0]["checkpoint"]["status"] == "APPROVED"
    assert results[0]["checkpoint"]["decision"]["decidedBy"] == "admin"
    codes = [r["error"]["code"] for r in results[1:]]
    assert codes == ["not_found", "already_decided", "forbidden", "validation_error"]
    assert results[2]["error"]["details"]["checkpoint"]["decision"]["decidedBy"] == "other"
    assert list(results[4]["error"]["details"]) == ["reason"]
    assert shown(admin, to_approve["id"])["status"] == "APPROVED"
    assert shown(admin, own["id"])["status"] == "PENDING"
    assert shown(admin, to_reject["id"])["status"] == "PENDING"


# -- metrics -------------------------------------------------------------------------------


def test_votes_timeouts_and_revisions_are_counted(app, client, user, worker):
    """Given three checkpoints, after a vote that leaves one pending, a deadline that
    rejects another and a request for changes to the third, /api/metrics shows each
    counter one up."""
    from worker import sweeps

    (ada,) = admins(app, client, "ada")
    labels = {"job_type": "policy-review"}
    names = [
        ("agentq_checkpoint_votes_total", {**labels, "outcome": "approved"}),
        ("agentq_checkpoint_votes_total", {**labels, "outcome": "changes_requested"}),
        ("agentq_checkpoint_timeouts_total", {**labels, "on_timeout": "reject"}),
        ("agentq_checkpoint_revisions_total", labels),
    ]
    before = [metric(client, name, **ls) for name, ls in names]
    quorum = parked(user, {"minApprovals": 2})
    parked(user, {"expiresIn": 60})
    revised = parked(user)

    assert ada.approve(quorum["id"]).status_code == 200
    with app.app_context():
        assert sweeps.time_out_due(later(120)) == 1
    assert request_changes(ada, revised["id"], "say more").status_code == 200

    after = [metric(client, name, **ls) for name, ls in names]
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 1, 1, 1]


# -- cancel races ----------------------------------------------------------------------------


def test_a_decision_on_a_cancelled_jobs_checkpoint_is_a_409(app, client, user, no_worker):
    """Given a job cancelled while it waited, approving, rejecting or requesting changes on
    its checkpoint is 409 and records nothing."""
    (ada,) = admins(app, client, "ada")
    checkpoint = park_here(app, user)
    assert user.patch(checkpoint["jobId"], "cancel").status_code == 200

    for response in (
        ada.approve(checkpoint["id"]),
        ada.reject(checkpoint["id"], "too late"),
        request_changes(ada, checkpoint["id"], "too late"),
    ):
        assert error_of(response, 409)["code"] == "already_decided"
    cancelled = shown(ada, checkpoint["id"])
    assert (cancelled["status"], cancelled["votes"]) == ("CANCELLED", [])


# -- quorum under concurrency (no worker until the votes are in) ---------------------


def continuations_waiting(client) -> float:
    """Dispatches of continuations not taken by a worker: queued, or still in the outbox."""
    from app.routing import CONTINUATIONS_QUEUE

    queued = metric(client, "agentq_queue_depth", queue=CONTINUATIONS_QUEUE)
    return queued + metric(client, "agentq_outbox_backlog")


@pytest.mark.parametrize("rejecter", [None, 4], ids=["all-approve", "a5-rejects"])
def test_twenty_concurrent_votes_on_a_3_of_5_checkpoint_settle_it_once(
    request, app, client, user, no_worker, tmp_path, rejecter
):
    """Given a 3-of-5 checkpoint (veto on) and no worker, when 20 threads vote at once, each
    admin 4 times (a5 rejecting in one run), then every answer is 200 or 409, one vote per
    admin at most is recorded, and the checkpoint is APPROVED with exactly 3 approvals and
    one continuation dispatched, or REJECTED by one rejection with none; once a worker
    runs, the continuation runs once."""
    from app.extensions import db
    from app.models import Decision
    from app.policy import Policy

    five = admins(app, client, "a1", "a2", "a3", "a4", "a5")
    parked_here = park_here(app, user, Policy(min_approvals=3), marks=tmp_path / "marks")
    cid = parked_here["id"]

    def vote(voter: ApiUser):
        rejects = rejecter is not None and voter is five[rejecter]

        def call(c):
            headers = voter.headers()
            if rejects:
                return c.delete(f"{CHECKPOINTS}/{cid}", json={"reason": "veto"}, headers=headers)
            return c.post(f"{CHECKPOINTS}/{cid}", json={}, headers=headers)

        return call

    answers = at_once(app, *[vote(five[i % 5]) for i in range(20)])

    assert {status for status, _ in answers} <= {200, 409}, answers
    refused = {body["error"]["code"] for status, body in answers if status == 409}
    assert refused <= {"already_voted", "already_decided"}, refused
    with app.app_context():
        votes = db.session.execute(
            sa.select(Decision.user_id, Decision.outcome).where(
                Decision.checkpoint_id == uuid.UUID(cid)
            )
        ).all()
    assert sum(status == 200 for status, _ in answers) == len(votes)
    assert len({v.user_id for v in votes}) == len(votes)
    approvals = sum(v.outcome == "APPROVED" for v in votes)
    rejections = sum(v.outcome == "REJECTED" for v in votes)
    checkpoint = shown(five[0], cid)
    assert (checkpoint["approvals"], checkpoint["rejections"]) == (approvals, rejections)
    if checkpoint["status"] == "APPROVED":
        assert (approvals, rejections) == (3, 0)
        wait_until(lambda: continuations_waiting(client) == 1, 10, "the continuation's message")
    else:
        assert rejecter is not None, checkpoint
        assert checkpoint["status"] == "REJECTED"
        assert approvals < 3 and rejections == 1
        assert continuations_waiting(client) == 0

    request.getfixturevalue("worker")
    if checkpoint["status"] == "APPROVED":
        job = user.wait_for(parked_here["jobId"], "COMPLETED")
        assert attempts(job, "apply") == 1
        assert marks(tmp_path / "marks") == ["apply", "staging"]
    else:
        assert user.job(parked_here["jobId"])["status"] == "FAILED"


def test_a_job_cancelled_after_its_approval_never_runs_the_continuation(
    request, app, client, user, no_worker, tmp_path
):
    """Given no worker, a checkpoint approved and its job then cancelled before any worker
    claims the continuation, when a worker starts (and runs another job's continuation,
    queued after it), then the cancelled job's next step never ran."""
    (ada,) = admins(app, client, "ada")
    cancelled = park_here(app, user, marks=tmp_path / "cancelled")
    other = park_here(app, user, marks=tmp_path / "other")
    assert ada.approve(cancelled["id"]).status_code == 200
    assert user.patch(cancelled["jobId"], "cancel").status_code == 200
    assert ada.approve(other["id"]).status_code == 200

    request.getfixturevalue("worker")
    user.wait_for(other["jobId"], "COMPLETED")
    wait_until(lambda: continuations_waiting(client) == 0, 10, "no continuation left waiting")

    job = user.job(cancelled["jobId"])
    assert job["status"] == "CANCELLED"
    assert attempts(job, "apply") == 0
    assert marks(tmp_path / "cancelled") == []
    assert marks(tmp_path / "other") == ["apply", "staging"]
