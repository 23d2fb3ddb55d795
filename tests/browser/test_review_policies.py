"""Review policies in the admin pages, in a real browser, against a real worker: the votes
so far and a ticking deadline, the buttons a non-approver does not get, a request for
changes and the versions view it leads to, and the select-all bar."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import screenshot
from tests.browser.conftest import sign_in
from tests.conftest import ApiUser

pytestmark = [pytest.mark.browser, pytest.mark.acceptance]

FILES = [{"path": "lib/auth.py", "content": "def check(token):\n    return bool(token)\n"}]


def another_admin(app, client, name: str) -> ApiUser:
    from app.auth import create_user

    with app.app_context():
        person, _row, token = create_user(name, admin=True)
        return ApiUser(client, name, token, person.id)


def waiting(user, review=None, description="Write the auth module") -> tuple[str, str]:
    """A test-revisions job of ``user`` (under ``review``) parked at its checkpoint: the
    job's id and the checkpoint's."""
    body = {
        "jobType": "test-revisions",
        "taskDescription": description,
        "inputData": {"files": FILES},
    }
    if review:
        body["review"] = review
    response = user.request("POST", "/api/agent-jobs", json=body)
    assert response.status_code == 201, response.get_json()
    job_id = response.get_json()["job"]["id"]
    user.wait_for(job_id, "WAITING_APPROVAL")
    return job_id, user.pending_checkpoint(job_id)["id"]


def test_votes_so_far_a_ticking_deadline_and_no_buttons_for_a_non_approver(
    app, client, page, live_server, worker, reviewer, user
):
    """Given a 2-of-M checkpoint that carol approved, when the admin opens it, then they
    see 1/2 approvals with carol's vote and the deadline counting down, and can approve;
    on a checkpoint only carol may decide they get no decision buttons at all, and are
    told why."""
    carol = another_admin(app, client, "carol")
    _job, quorum = waiting(user, {"minApprovals": 2, "expiresIn": 3600}, "Two must approve")
    assert carol.approve(quorum, reason="Fine by me").status_code == 200
    _job, carols = waiting(user, {"approvers": ["carol"]}, "Only carol decides")
    sign_in(page, live_server, reviewer)

    page.goto(f"{live_server}/admin/agent-checkpoints/{quorum}")

    review = page.locator("#review")
    expect(review.locator(".cp-tally")).to_have_text("1/2 approvals")
    expect(review.get_by_role("listitem").filter(has_text="by carol")).to_contain_text(
        "Approved by carol"
    )
    expect(review).to_contain_text("2 of 2 approvals needed")
    countdown = review.locator("time.countdown")
    expect(countdown).to_have_text(re.compile(r"in (59|60) min"))
    expect(page.get_by_role("button", name="Approve")).to_be_visible()
    expect(page.get_by_role("button", name="Request changes")).to_be_visible()
    screenshot(page, "checkpoint-votes")

    page.goto(f"{live_server}/admin/agent-checkpoints/{carols}")

    expect(page.locator("#no-decision")).to_have_text("Only carol may decide.")
    for name in ("Approve", "Reject", "Request changes"):
        expect(page.get_by_role("button", name=name)).to_have_count(0)
    expect(page.locator("#review")).to_contain_text("Who may decide: carol")


def test_a_deadline_counts_down_every_second(page, live_server, worker, reviewer, user):
    """Given a checkpoint with a deadline under a minute away, its countdown ticks in the
    page without a reload."""
    _job, checkpoint = waiting(user, {"expiresIn": 50})
    sign_in(page, live_server, reviewer)

    page.goto(f"{live_server}/admin/agent-checkpoints/{checkpoint}")

    countdown = page.locator("#review time.countdown")
    expect(countdown).to_have_text(re.compile(r"^in \d+ s$"))
    first = countdown.text_content()
    expect(countdown).not_to_have_text(first, timeout=3_000)
    expect(page.locator("#policy-deadline")).to_contain_text("rejected automatically in")


def test_request_changes_then_the_versions_side_by_side(page, live_server, worker, reviewer, user):
    """Given a proposal, when the admin requests changes with feedback, then the step runs
    again, and version 2 shows v1, the feedback, and the diff from v1 to v2; version 1
    says it is not the current one and links to it."""
    job_id, first = waiting(user)
    sign_in(page, live_server, reviewer)
    page.goto(f"{live_server}/admin/agent-checkpoints/{first}")

    page.get_by_label("Feedback").fill("Log failures")
    page.get_by_role("button", name="Request changes").click()

    expect(page.locator(".flash-success")).to_have_text(
        "Changes requested: the step runs again and opens version 2."
    )
    user.wait_for(job_id, "WAITING_APPROVAL")
    page.reload()
    expect(page.locator(".cp-old")).to_contain_text(
        "This is version 1; version 2 is the current one."
    )
    expect(page.get_by_role("button", name="Approve")).to_have_count(0)
    page.get_by_role("link", name="See version 2").click()

    versions = page.locator("#versions")
    expect(versions.locator(".cp-version-item")).to_have_count(2)
    v1 = versions.locator("#version-1")
    expect(v1).to_contain_text("Changes requested by admin")
    expect(v1.locator("blockquote")).to_have_text("Log failures")
    expect(v1.locator(".diff .line.add")).to_have_text(["+# Log failures (v2)"])
    expect(versions.locator("#version-2")).to_contain_text("v2 (shown)")
    expect(page.locator(".cp-head")).to_contain_text("version 2")
    screenshot(page, "checkpoint-versions")

    page.get_by_role("button", name="Approve").click()

    expect(page.locator(".flash-success")).to_have_text("Approved.")
    assert user.wait_for(job_id, "COMPLETED")["status"] == "COMPLETED"


def test_select_all_approves_every_checkpoint_you_may_decide(
    page, live_server, worker, reviewer, user
):
    """Given two checkpoints the admin may decide, when they tick Select all and approve
    the selected, then both are approved in one go and their jobs complete."""
    jobs = [waiting(user, description=name)[0] for name in ("First task", "Second task")]
    sign_in(page, live_server, reviewer)
    page.wait_for_url(f"{live_server}/admin/agent-checkpoints")
    boxes = page.locator('#checkpoint-list input[name="id"]')
    expect(boxes).to_have_count(2)

    page.get_by_label("Select all").check()

    expect(boxes.nth(0)).to_be_checked()
    expect(boxes.nth(1)).to_be_checked()
    page.get_by_role("button", name="Approve selected").click()

    expect(page.locator(".flash-success")).to_have_text("2 approved.")
    expect(page.get_by_text("No pending checkpoints")).to_be_visible()
    for job_id in jobs:
        assert user.wait_for(job_id, "COMPLETED")["status"] == "COMPLETED"
