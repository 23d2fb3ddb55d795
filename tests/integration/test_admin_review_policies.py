"""Review policies on the admin pages, through the Flask test client: the policy and votes
on a checkpoint, the forms only those who may vote see, requests for changes and the
versions they make (with the real worker running the step again), stale pages, the
pending list's votes, "Only mine" and select-all decisions, and the job's timeline.

Most checkpoints are parked the way a worker parks them (``app.state``), with the policy
the test needs, while no worker runs.
"""

from __future__ import annotations

import html
import re
import uuid
from datetime import UTC
from datetime import datetime
from datetime import timedelta

import pytest
import sqlalchemy as sa

from tests.conftest import ApiUser
from tests.integration.admin_pages import FILES
from tests.integration.admin_pages import csrf_token

pytestmark = pytest.mark.integration

parked_only = pytest.mark.usefixtures("jobs_stay_pending")


def make_admin(app, client, name: str) -> ApiUser:
    """Another admin (with a token) who may vote where a policy lets them."""
    from app.auth import create_user

    with app.app_context():
        person, _row, token = create_user(name, admin=True)
        return ApiUser(client, name, token, person.id)


def park(app, owner, policy, *, data=None, description="Write the auth module") -> str:
    """A code-generation job of ``owner`` parked at a pending checkpoint whose own policy
    layer is ``policy`` (an ``app.policy.Policy``); the checkpoint's id."""
    from app import state
    from app.extensions import db
    from app.models import Checkpoint

    with app.app_context():
        parked = state.enqueue(
            user_id=owner.id,
            job_type="code-generation",
            task_description=description,
            input_data={"files": FILES},
            priority=5,
        )
        claim = state.claim_step(
            parked.id, "propose", worker="tests", task_id=None, lease_seconds=60
        )
        checkpoint = {
            "type": "APPROVAL_REQUIRED",
            "title": "Review",
            "data": {"files": FILES} if data is None else data,
            "policy": policy,
        }
        assert state.finish_step(claim, {}, [checkpoint], chain_continues=False) == "waiting"
        return str(
            db.session.scalar(sa.select(Checkpoint.id).where(Checkpoint.job_id == parked.id))
        )


def vote(app, checkpoint_id: str, person, outcome="APPROVED", reason=None) -> None:
    """``person`` votes through the one decision path, as the API would."""
    from app import review
    from app.status import Outcome

    with app.app_context():
        actor = review.Actor("api", user_id=person.id)
        review.decide(uuid.UUID(checkpoint_id), Outcome(outcome), actor, reason=reason)


def stored(app, checkpoint_id: str) -> tuple[str, list[tuple[str, str]]]:
    """The checkpoint's status and its votes as (outcome, by)."""
    from app.extensions import db
    from app.models import Checkpoint

    with app.app_context():
        checkpoint = db.session.get(Checkpoint, uuid.UUID(checkpoint_id))
        return checkpoint.status, [(v.outcome, v.decided_by) for v in checkpoint.votes]


def text(response) -> str:
    """The page's text with tags dropped and white space squeezed, entities decoded."""
    page = re.sub(r"<[^>]+>", " ", response.get_data(as_text=True))
    return re.sub(r"\s+", " ", html.unescape(page))


def post(client, path: str, page: str, **form):
    """Post a form of the page at ``page``, with its CSRF token; follow the redirect."""
    token = csrf_token(client.get(page).get_data(as_text=True))
    return client.post(path, data={"csrf_token": token, **form}, follow_redirects=True)


def forms(client, checkpoint_id: str) -> list[str]:
    """The decision forms' actions on the checkpoint page."""
    page = client.get(f"/admin/agent-checkpoints/{checkpoint_id}").get_data(as_text=True)
    return re.findall(rf'action="/admin/agent-checkpoints/{checkpoint_id}/([a-z-]+)"', page)


@parked_only
def test_the_page_says_the_policy_and_the_votes_so_far(app, client, reviewer, user):
    from app.framework import Option
    from app.framework import Policy

    carol = make_admin(app, client, "carol")
    make_admin(app, client, "dave")
    policy = Policy(
        approvers=("admin", "carol"),
        min_approvals=2,
        expires_in=12.5 * 60,
        remind_at=(300,),
        escalate_to=("dave",),
        escalate_after=3600,
        options=(Option("deploy-staging"), Option("deploy-prod")),
        max_revisions=2,
    )
    checkpoint_id = park(app, user, policy)
    vote(app, checkpoint_id, carol, reason="Looks right")

    page = text(client.get(f"/admin/agent-checkpoints/{checkpoint_id}"))

    assert "Who may decide: admin, carol (2 eligible: admin, carol)" in page
    assert "The submitter (user) may not decide it." in page
    assert "2 of 2 approvals needed ; one rejection rejects it." in page
    assert re.search(r"Deadline: rejected automatically in 12 min \(at \d{4}-", page), page
    assert "Reminders 5 min before the deadline." in page
    assert "Escalates to dave 1 h after it opened." in page
    assert "Options: deploy-staging , deploy-prod" in page
    assert "Changes may be requested 2 times at most; 2 left." in page
    assert "Votes 1/2 approvals" in page
    assert re.search(r"Approved by carol · \d{4}-\d\d-\d\d [\d:]+ UTC Looks right", page)
    raw = client.get(f"/admin/agent-checkpoints/{checkpoint_id}").get_data(as_text=True)
    assert re.search(r'<time class="countdown" datetime="[^"]+"', raw)
    assert '<input type="radio" name="option" value="deploy-prod">' in raw
    assert forms(client, checkpoint_id) == ["approve", "request-changes", "reject"]


@parked_only
def test_an_approval_short_of_the_quorum_is_recorded_and_the_forms_go(app, client, reviewer, user):
    from app.framework import Policy

    make_admin(app, client, "carol")
    checkpoint_id = park(app, user, Policy(min_approvals=2))
    path = f"/admin/agent-checkpoints/{checkpoint_id}"

    response = post(client, f"{path}/approve", path, comment="Fine by me", version="1")

    assert "Your approval is recorded: 1/2." in text(response)
    assert stored(app, checkpoint_id) == ("PENDING", [("APPROVED", "admin")])
    page = text(client.get(path))
    assert re.search(r"You approved this at \d\d:\d\d; waiting for 1 more approval\.", page)
    assert forms(client, checkpoint_id) == []
    again = post(client, f"{path}/reject", path, reason="Changed my mind", version="1")
    assert "admin already voted" in text(again)
    assert stored(app, checkpoint_id) == ("PENDING", [("APPROVED", "admin")])


@parked_only
def test_a_non_approver_sees_no_forms_and_is_refused_if_they_post(app, client, reviewer, user):
    from app.framework import Policy

    make_admin(app, client, "carol")
    checkpoint_id = park(app, user, Policy(approvers=("carol", "group:leads")))
    path = f"/admin/agent-checkpoints/{checkpoint_id}"

    assert "Only carol, group:leads may decide." in text(client.get(path))
    assert forms(client, checkpoint_id) == []

    for action, form in (("approve", {}), ("reject", {"reason": "No"})):
        response = post(client, f"{path}/{action}", path, version="1", **form)
        assert response.status_code == 200
        assert "carol, group:leads may decide" in text(response)
    assert stored(app, checkpoint_id) == ("PENDING", [])


@parked_only
def test_the_submitter_sees_no_forms_and_is_refused_if_they_post(app, client, reviewer):
    from app.framework import Policy

    checkpoint_id = park(app, reviewer, Policy())
    path = f"/admin/agent-checkpoints/{checkpoint_id}"

    page = text(client.get(path))
    assert "You submitted this job; its policy does not allow self-approval." in page
    assert forms(client, checkpoint_id) == []

    response = post(client, f"{path}/request-changes", path, feedback="Again", version="1")
    assert "does not allow the submitter to decide" in text(response)
    assert stored(app, checkpoint_id) == ("PENDING", [])


@parked_only
def test_request_changes_needs_feedback_and_goes_when_revisions_run_out(
    app, client, reviewer, user
):
    from app.framework import Policy

    checkpoint_id = park(app, user, Policy(max_revisions=3))
    path = f"/admin/agent-checkpoints/{checkpoint_id}"
    token = csrf_token(client.get(path).get_data(as_text=True))

    response = client.post(
        f"{path}/request-changes", data={"csrf_token": token, "feedback": " ", "version": "1"}
    )

    assert response.status_code == 422
    body = response.get_data(as_text=True)
    assert 'id="changes-feedback-error"' in body and "Say what to change" in body
    assert stored(app, checkpoint_id) == ("PENDING", [])
    spent = park(app, user, Policy(max_revisions=0))
    assert forms(client, spent) == ["approve", "reject"]
    assert "Changes may be requested 0 times at most; 0 left." in text(
        client.get(f"/admin/agent-checkpoints/{spent}")
    )


@parked_only
def test_an_option_is_chosen_on_the_approve_form(app, client, reviewer, user):
    from app.framework import Option
    from app.framework import Policy

    checkpoint_id = park(app, user, Policy(options=(Option("deploy-prod"),)))
    path = f"/admin/agent-checkpoints/{checkpoint_id}"

    response = post(client, f"{path}/approve", path, option="deploy-prod", version="1")

    assert "Approved: deploy-prod." in text(response)
    assert "option deploy-prod" in text(client.get(path))
    unknown = park(app, user, Policy(options=(Option("deploy-prod"),)))
    upath = f"/admin/agent-checkpoints/{unknown}"
    refused = post(client, f"{upath}/approve", upath, option="deploy-moon", version="1")
    assert "Must be one of deploy-prod" in text(refused)
    assert stored(app, unknown) == ("PENDING", [])


@parked_only
def test_the_list_shows_votes_deadlines_and_only_mine(app, client, reviewer, user):
    from app.framework import Policy

    carol = make_admin(app, client, "carol")
    mine = park(app, user, Policy(min_approvals=2, expires_in=3600), description="Mine")
    vote(app, mine, carol)
    theirs = park(app, user, Policy(approvers=("carol",)), description="Carol's")

    page = client.get("/admin/agent-checkpoints").get_data(as_text=True)

    rows = dict(re.findall(r'<tr data-checkpoint-id="([^"]+)">(.*?)</tr>', page, re.S))
    assert '<span class="cp-tally">1/2</span>' in rows[mine]
    assert "rejected automatically" in rows[mine] and "in 59 min" in rows[mine]
    assert f'name="id" value="{mine}"' in rows[mine]
    assert f'name="version-{mine}" value="1"' in rows[mine]
    assert '<span class="cp-tally">0/1</span>' in rows[theirs]
    assert 'name="id"' not in rows[theirs] and "not yours to decide" in rows[theirs]
    only = client.get("/admin/agent-checkpoints?mine=1").get_data(as_text=True)
    assert re.findall(r'<tr data-checkpoint-id="([^"]+)">', only) == [mine]
    live = client.get("/admin/agent-checkpoints/live.json?mine=1").get_json()
    [row] = live["checkpoints"]
    assert (row["id"], row["votes"], row["mayDecide"], row["version"]) == (mine, "1/2", True, 1)
    assert row["deadline"]["then"] == "rejected automatically"
    assert [
        c["mayDecide"]
        for c in client.get("/admin/agent-checkpoints/live.json").get_json()["checkpoints"]
    ] == [True, False]


@parked_only
def test_select_all_decides_each_on_its_own_and_says_which_were_refused(
    app, client, reviewer, user
):
    from app.framework import Policy

    make_admin(app, client, "carol")
    first = park(app, user, Policy(), description="First")
    second = park(app, user, Policy(), description="Second")
    stale = park(app, user, Policy(), description="Stale")
    forbidden = park(app, user, Policy(approvers=("carol",)), description="Carol's")
    form = {
        "id": [first, second, stale, forbidden],
        f"version-{first}": "1",
        f"version-{second}": "1",
        f"version-{stale}": "2",
        "action": "approve",
    }

    unsaid = post(
        client,
        "/admin/agent-checkpoints/decisions",
        "/admin/agent-checkpoints",
        **{**form, "action": "reject"},
    )
    assert "Say why in the reason field" in text(unsaid)
    assert stored(app, first) == ("PENDING", [])

    response = post(
        client, "/admin/agent-checkpoints/decisions", "/admin/agent-checkpoints", **form
    )

    summary = text(response)
    assert f"2 approved; 2 refused: {stale}: Version 2 of this checkpoint is not" in summary
    assert f"{forbidden}: Only carol may decide" in summary
    assert stored(app, first)[0] == stored(app, second)[0] == "APPROVED"
    assert stored(app, stale) == ("PENDING", []) and stored(app, forbidden) == ("PENDING", [])
    assert re.findall(r'<tr data-checkpoint-id="([^"]+)">', response.get_data(as_text=True)) == [
        stale,
        forbidden,
    ]
    rejected = post(
        client,
        "/admin/agent-checkpoints/decisions",
        "/admin/agent-checkpoints",
        id=[stale],
        action="reject",
        reason="Not this one",
    )
    assert "1 rejected." in text(rejected)
    assert stored(app, stale) == ("REJECTED", [("REJECTED", "admin")])


@parked_only
def test_the_timeline_shows_votes_reminders_and_escalations(app, client, reviewer, user):
    from app.extensions import db
    from app.framework import Policy
    from worker.sweeps import fire_due_events

    carol = make_admin(app, client, "carol")
    policy = Policy(
        min_approvals=2,
        expires_in=3600,
        remind_at=(600,),
        escalate_to=("carol",),
        escalate_after=60,
    )
    checkpoint_id = park(app, user, policy)
    with app.app_context():
        fire_due_events(datetime.now(UTC) + timedelta(minutes=55))
        db.session.commit()
    vote(app, checkpoint_id, carol, reason="Good")
    with app.app_context():
        from app.models import Checkpoint

        job_id = db.session.get(Checkpoint, uuid.UUID(checkpoint_id)).job_id

    page = text(client.get(f"/admin/jobs/{job_id}"))

    assert re.search(r"approval propose v1 Review PENDING 1/2 approvals Review", page), page
    timeline = page[page.index("Timeline") : page.index("Steps")]
    voted = timeline.index("vote Approved by carol")
    assert 0 < timeline.index("reminder propose Reminder: checkpoint") < voted
    assert 0 < timeline.index("escalation propose Escalated to carol: checkpoint") < voted
    assert "vote Approved by carol · from an unknown address · Review v1 · approval of 2" in page


def submit(user, files, review=None) -> str:
    """``user`` submits a test-revisions job; its id."""
    body = {"jobType": "test-revisions", "taskDescription": "Revise", "inputData": {"files": files}}
    if review:
        body["review"] = review
    response = user.request("POST", "/api/agent-jobs", json=body)
    assert response.status_code == 201, response.get_json()
    return response.get_json()["job"]["id"]


def test_request_changes_opens_the_next_version_and_a_stale_page_decides_nothing(
    app, client, worker, reviewer, user
):
    job_id = submit(user, FILES, review={"maxRevisions": 1})
    user.wait_for(job_id, "WAITING_APPROVAL")
    first = user.pending_checkpoint(job_id)["id"]
    path = f"/admin/agent-checkpoints/{first}"

    response = post(client, f"{path}/request-changes", path, feedback="Log failures", version="1")

    assert "Changes requested: the step runs again and opens version 2." in text(response)
    user.wait_for(job_id, "WAITING_APPROVAL")
    second = user.pending_checkpoint(job_id)["id"]
    assert second != first
    page = text(client.get(f"/admin/agent-checkpoints/{second}"))
    assert "Versions v1 CHANGES REQUESTED" in page
    assert "Changes requested by admin" in page and "Log failures" in page
    assert "From v1 to v2" in page and "+# Log failures (v2)" in page
    assert "v2 (shown) PENDING" in page
    assert forms(client, second) == ["approve", "reject"]
    old = text(client.get(path))
    assert "This is version 1; version 2 is the current one." in old
    assert forms(client, first) == []

    stale = post(
        client,
        f"/admin/agent-checkpoints/{second}/approve",
        f"/admin/agent-checkpoints/{second}",
        version="1",
    )

    assert "This page showed version 1; version 2 is current now." in text(stale)
    forged = post(
        client,
        f"/admin/agent-checkpoints/{second}/approve",
        f"/admin/agent-checkpoints/{second}",
        version=str(2**31),
    )
    assert "version 2 is current now." in text(forged)
    assert stored(app, second) == ("PENDING", [])
    timeline = text(client.get(f"/admin/jobs/{job_id}"))
    assert re.search(r"approval propose v1 Review the files CHANGES REQUESTED", timeline)
    assert "decision Changes requested by admin" in timeline
    assert "the step runs again and opens v2 feedback Log failures" in timeline
    assert re.search(r"approval propose v2 Review the files PENDING", timeline)
