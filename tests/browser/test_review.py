"""Reviewing agent work in the admin pages, in a real browser, against a real worker."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import screenshot
from tests.browser.conftest import sign_in
from tests.browser.conftest import title_count

pytestmark = [pytest.mark.browser, pytest.mark.acceptance]

PROPOSAL = [
    {
        "path": "lib/auth.py",
        "content": "def authenticate(token):\n    if not token:\n        return False\n"
        "    return token.startswith('aq_')\n",
    },
    {"path": "README.md", "content": "# Auth\n\nTokens start with aq_.\n"},
]


def waiting_job(user, files=PROPOSAL, description="Generate the authentication module"):
    """A code-generation job parked at its review checkpoint."""
    job = user.enqueue("code-generation", {"files": files}, priority=8, description=description)
    user.wait_for(job["id"], "WAITING_APPROVAL")
    return job, user.pending_checkpoint(job["id"])


def workspace(app, job_id: str) -> Path:
    return Path(app.config["WORKSPACE_ROOT"]) / job_id


def test_the_list_follows_checkpoints_live(page, live_server, worker, reviewer, user):
    """Given the list page open, when an agent's job reaches its checkpoint, then its row
    appears within 3 seconds and the title counts it; when someone decides it elsewhere,
    the row goes and the count follows, all without a reload."""
    sign_in(page, live_server, reviewer)
    page.wait_for_url(f"{live_server}/admin/agent-checkpoints")
    expect(page.get_by_text("No pending checkpoints")).to_be_visible()
    assert page.title() == "Pending checkpoints · agentq"

    _job, checkpoint = waiting_job(user)
    row = page.locator(f'#checkpoint-list tr[data-checkpoint-id="{checkpoint["id"]}"]')
    expect(row).to_be_visible(timeout=3_000)
    expect(page).to_have_title("(1) Pending checkpoints · agentq", timeout=3_000)
    expect(row).to_contain_text("Generate the authentication module")
    expect(row).to_contain_text("code-generation")
    expect(row).to_contain_text(user.name)
    waiting_job(user, description="Refactor the session store")
    expect(page).to_have_title("(2) Pending checkpoints · agentq", timeout=3_000)
    expect(page.locator("#pending-badge")).to_have_text("2")
    screenshot(page, "checkpoints")

    rejected = reviewer.reject(checkpoint["id"], "Not now")
    assert rejected.status_code == 200

    expect(row).to_have_count(0, timeout=3_000)
    expect(page).to_have_title("(1) Pending checkpoints · agentq", timeout=3_000)
    assert title_count(page) == 1


def test_review_a_diff_edit_a_file_and_approve(app, page, live_server, worker, reviewer, user):
    """Given a proposal that changes a file the workspace already holds, when the admin
    opens it, then they see a coloured diff; when they edit the file and approve, then the
    job completes, the workspace holds the edit, and the job's timeline shows the edit."""
    job, checkpoint = waiting_job(user)
    existing = workspace(app, job["id"]) / "lib" / "auth.py"
    existing.parent.mkdir(parents=True)
    existing.write_text("def authenticate(token):\n    return True\n")
    sign_in(page, live_server, reviewer)

    page.get_by_role("link", name="Generate the authentication module").click()

    page.wait_for_url(re.compile(f"/admin/agent-checkpoints/{checkpoint['id']}$"))
    expect(page.locator("h1")).to_have_text("Review file changes")
    auth_diff = page.locator(".diff", has_text="lib/auth.py")
    expect(auth_diff.locator(".del")).to_contain_text(["-    return True"])
    expect(auth_diff.locator(".add").first).to_be_visible()
    expect(page.locator(".diff", has_text="README.md").locator(".add")).to_have_count(3)
    screenshot(page, "checkpoint-diff")

    edited = PROPOSAL[0]["content"].replace("'aq_'", "'aq_') and len(token) > 10")
    page.get_by_label("Edit lib/auth.py").fill(edited)
    page.get_by_label("Comment (optional)").fill("Also check the length")
    page.get_by_role("button", name="Approve").click()

    expect(page.get_by_role("status")).to_contain_text("Approved.")
    expect(page.locator("#decision")).to_contain_text(f"Approved by {reviewer.name}")
    done = user.wait_for(job["id"], "COMPLETED", "FAILED")
    assert done["status"] == "COMPLETED"
    assert existing.read_text() == edited
    assert (workspace(app, job["id"]) / "README.md").read_text() == PROPOSAL[1]["content"]
    [decided] = done["checkpoints"]
    assert decided["data"]["files"] == PROPOSAL
    assert decided["decision"]["data"]["files"] == [{**PROPOSAL[0], "content": edited}, PROPOSAL[1]]
    assert decided["decision"]["reason"] == "Also check the length"

    page.goto(f"{live_server}/admin/jobs/{job['id']}")
    timeline = page.locator("ol.timeline")
    expect(timeline).to_contain_text(f"from {decided['decision']['ip']}")
    expect(timeline.locator(".diff .add")).to_contain_text(["len(token) > 10"])
    expect(page.get_by_role("button", name="Retry job")).to_have_count(0)
    screenshot(page, "job-timeline")


def test_reject_with_a_reason(page, live_server, worker, reviewer, user):
    """Given a pending review, when the admin rejects it with a reason, then the job fails
    with that reason."""
    job, checkpoint = waiting_job(user)
    sign_in(page, live_server, reviewer)
    page.goto(f"{live_server}/admin/agent-checkpoints/{checkpoint['id']}")

    page.get_by_label("Reason").fill("Tokens must be checked against the database")
    page.get_by_role("button", name="Reject").click()

    expect(page.get_by_role("status")).to_contain_text("Rejected.")
    failed = user.wait_for(job["id"], "FAILED")
    assert "Tokens must be checked against the database" in failed["error"]
    assert failed["checkpoints"][0]["decision"]["decidedBy"] == reviewer.name


def test_approve_works_without_javascript(browser, live_server, worker, reviewer, user):
    """Given a browser with JavaScript off, when the admin approves, then the plain form
    does it all the same."""
    job, checkpoint = waiting_job(user)
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    try:
        sign_in(page, live_server, reviewer)
        page.goto(f"{live_server}/admin/agent-checkpoints/{checkpoint['id']}")
        page.get_by_role("button", name="Approve").click()
        expect(page.get_by_role("status")).to_contain_text("Approved.")
    finally:
        context.close()
    assert user.wait_for(job["id"], "COMPLETED")["status"] == "COMPLETED"


def test_someone_else_decided_first(page, live_server, worker, reviewer, admin, user):
    """Given the detail page open, when another admin rejects first and this one clicks
    Approve, then the page says who decided what, not an error."""
    job, checkpoint = waiting_job(user)
    sign_in(page, live_server, reviewer)
    page.goto(f"{live_server}/admin/agent-checkpoints/{checkpoint['id']}")
    assert admin.reject(checkpoint["id"], "Duplicate of another job").status_code == 200

    page.get_by_role("button", name="Approve").click()

    warning = page.locator(".flash-warning")
    expect(warning).to_contain_text(f"Already rejected by {admin.name}")
    expect(page.locator("#decision")).to_contain_text("Duplicate of another job")
    assert user.job(job["id"])["status"] == "FAILED"


def test_worker_page_pauses_and_resumes(page, live_server, worker, reviewer):
    """Given the worker page, when the admin pauses and resumes the fleet, then the page
    and the API follow."""
    sign_in(page, live_server, reviewer)
    page.goto(f"{live_server}/admin/worker")
    expect(page.locator("#worker-list")).to_contain_text("consuming")
    screenshot(page, "worker")

    try:
        page.get_by_role("button", name="Pause").click()
        expect(page.locator(".flash")).to_be_visible()
        fleet = reviewer.request("GET", "/api/admin/agent-worker").get_json()
        assert fleet["worker"]["paused"] is True
    finally:
        page.get_by_role("button", name="Resume").click()
    expect(page.locator(".flash")).to_be_visible()
    assert (
        reviewer.request("GET", "/api/admin/agent-worker").get_json()["worker"]["paused"] is False
    )


def test_pages_fit_a_phone(browser, live_server, worker, reviewer, user):
    """Given a phone-sized screen, then the list page needs no sideways scrolling."""
    waiting_job(user)
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    page = context.new_page()
    try:
        sign_in(page, live_server, reviewer)
        page.wait_for_url(f"{live_server}/admin/agent-checkpoints")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390
        screenshot(page, "checkpoints-phone")
    finally:
        context.close()
