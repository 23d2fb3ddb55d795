"""The jobs and worker pages through the Flask test client, without a worker.

Jobs are made and moved through ``app.state``, as the API and the workers move them;
the pages are read as HTML and their forms posted as a browser would post them.
"""

from __future__ import annotations

import re
import uuid

import pytest
import sqlalchemy as sa

from tests.conftest import wait_until
from tests.integration.admin_pages import csrf_token
from tests.integration.admin_pages import sign_in

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("jobs_stay_pending")]

FILES = [
    {"path": "lib/auth.py", "content": "def check(token):\n    return bool(token)\n"},
    {"path": "README.md", "content": "# Auth\n"},
]


def page(client, path: str, status: int = 200) -> str:
    response = client.get(path)
    assert response.status_code == status, response.get_data(as_text=True)
    return response.get_data(as_text=True)


def submit(client, path: str, form_page: str) -> str:
    """POST a form of ``form_page`` to ``path`` and follow the 303 back; the page it lands on."""
    response = client.post(path, data={"csrf_token": csrf_token(form_page)})
    assert response.status_code == 303, response.get_data(as_text=True)
    return page(client, response.headers["Location"])


def enqueue(app, owner, job_type: str = "simple-task", **job) -> str:
    """A PENDING job of ``owner``; its id."""
    from app import state

    with app.app_context():
        made = state.enqueue(
            user_id=owner.id,
            job_type=job_type,
            task_description=job.get("description", "a test job"),
            input_data=job.get("input", {}),
            priority=job.get("priority", 5),
        )
        return str(made.id)


def park(app, owner, **job) -> tuple[str, str]:
    """A code-generation job parked at a pending checkpoint; its id and the checkpoint's."""
    from app import state
    from app.extensions import db
    from app.models import Checkpoint

    job_id = enqueue(app, owner, "code-generation", input={"files": FILES}, **job)
    with app.app_context():
        claim = state.claim_step(
            uuid.UUID(job_id), "propose", worker="w1@tests", task_id=None, lease_seconds=60
        )
        opened = {"type": "APPROVAL_REQUIRED", "title": "Review", "data": {"files": FILES}}
        assert state.finish_step(claim, {}, [opened], chain_continues=False) == "waiting"
        checkpoint_id = db.session.scalar(
            sa.select(Checkpoint.id).where(Checkpoint.job_id == uuid.UUID(job_id))
        )
        return job_id, str(checkpoint_id)


def status_of(app, job_id: str) -> str:
    from app import queries

    with app.app_context():
        return queries.get_job(uuid.UUID(job_id)).status


def job_ids(html: str) -> list[str]:
    return re.findall(r'data-job-id="([^"]+)"', html)


# -- Access ---------------------------------------------------------------------------------


#: A job id no job has.
NO_JOB = "0b7e4b4e-6f0c-4d52-9a55-0c0ffee00000"
PAGES = ["/admin/jobs", f"/admin/jobs/{NO_JOB}", "/admin/worker"]
FORMS = [
    f"/admin/jobs/{NO_JOB}/cancel",
    f"/admin/jobs/{NO_JOB}/retry",
    "/admin/worker/pause",
    "/admin/worker/resume",
]


@pytest.mark.parametrize("path", PAGES)
def test_anonymous_visitors_are_sent_to_the_login(client, app, path):
    response = client.get(path)
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/admin/login")


@pytest.mark.parametrize("path", PAGES + FORMS)
def test_users_who_are_not_admins_get_403(app, client, user, path):
    sign_in(app, client, user)
    token = csrf_token(page(client, "/admin/login"))
    response = client.post(path, data={"csrf_token": token}) if path in FORMS else client.get(path)
    assert response.status_code == 403
    assert "for admins" in response.get_data(as_text=True)


def test_an_unknown_job_is_a_404_page(reviewer, client):
    html = page(client, f"/admin/jobs/{NO_JOB}", 404)
    assert "There is no job" in html


@pytest.mark.parametrize("path", FORMS)
def test_a_post_without_the_csrf_token_is_refused(app, reviewer, client, path):
    """Given a signed-in admin, a form posted from elsewhere (no CSRF token) changes nothing."""
    job_id = enqueue(app, reviewer)
    path = re.sub(r"/jobs/[^/]+/", f"/jobs/{job_id}/", path)
    response = client.post(path, data={})
    assert response.status_code == 400
    assert "did not come from this site" in response.get_data(as_text=True)
    assert status_of(app, job_id) == "PENDING"
    from app import fleet

    with app.app_context():
        assert fleet.is_paused() is False


# -- The jobs list --------------------------------------------------------------------------


def test_the_list_shows_jobs_newest_first_and_links_them(app, reviewer, client, user):
    first = enqueue(app, user, description="Summarise the tickets")
    job_id, checkpoint_id = park(app, user, description="Write the auth module")
    html = page(client, "/admin/jobs")
    assert job_ids(html) == [job_id, first]
    assert 'id="job-list"' in html
    assert f'href="/admin/jobs/{first}">Summarise the tickets</a>' in html
    assert f'href="/admin/agent-checkpoints/{checkpoint_id}"' in html
    assert '<label for="status">Status</label>' in html
    assert '<label for="job-type">Job type</label>' in html


def test_the_list_is_filtered_by_status_and_job_type(app, reviewer, client, user):
    from app import state

    pending = enqueue(app, user)
    cancelled = enqueue(app, user)
    parked, _ = park(app, user)
    with app.app_context():
        state.cancel(uuid.UUID(cancelled), by="tests")

    assert job_ids(page(client, "/admin/jobs?status=CANCELLED")) == [cancelled]
    assert job_ids(page(client, "/admin/jobs?status=PENDING")) == [pending]
    assert job_ids(page(client, "/admin/jobs?jobType=code-generation")) == [parked]
    assert job_ids(page(client, "/admin/jobs?jobType=simple-task")) == [cancelled, pending]
    assert job_ids(page(client, "/admin/jobs?status=PENDING&jobType=code-generation")) == []
    html = page(client, "/admin/jobs?status=COMPLETED")
    assert "No jobs match these filters." in html
    assert '<option value="COMPLETED" selected>' in html
    # The empty choices of the form mean no filter.
    assert len(job_ids(page(client, "/admin/jobs?status=&jobType="))) == 3


def test_an_unknown_status_is_a_bad_request(reviewer, client):
    assert "Not a filter" in page(client, "/admin/jobs?status=LOST", 400)


def test_the_list_pages_with_older_links(app, reviewer, client, user, monkeypatch):
    from app.admin import jobs

    monkeypatch.setattr(jobs, "PAGE_SIZE", 2)
    made = [enqueue(app, user, description=f"job {n}") for n in range(5)]
    enqueue(app, user, "code-generation", input={"files": FILES})  # filtered out below

    seen, path = [], "/admin/jobs?jobType=simple-task"
    while path:
        html = page(client, path)
        seen.append(job_ids(html))
        older = re.search(r'<a href="([^"]+)" rel="next">Older</a>', html)
        path = older.group(1).replace("&amp;", "&") if older else None
        if path:
            assert "jobType=simple-task" in path and "cursor=" in path
    assert seen == [made[4:2:-1], made[2:0:-1], made[:1]]
    assert ">Newest</a>" in html


# -- One job --------------------------------------------------------------------------------


def test_cancel_and_retry_through_the_forms(app, reviewer, client, user):
    job_id = enqueue(app, user)
    html = page(client, f"/admin/jobs/{job_id}")
    assert ">Cancel job</button>" in html and ">Retry job</button>" not in html

    html = submit(client, f"/admin/jobs/{job_id}/cancel", html)
    assert "Job cancelled." in html
    assert status_of(app, job_id) == "CANCELLED"
    assert f"Job cancelled by {reviewer.name}" in html
    assert ">Retry job</button>" in html and ">Cancel job</button>" not in html

    html = submit(client, f"/admin/jobs/{job_id}/retry", html)
    assert "Job queued again at step run." in html
    assert status_of(app, job_id) == "PENDING"
    assert f"Job retried by {reviewer.name} at step run" in html


def test_an_action_the_status_no_longer_allows_is_a_message(app, reviewer, client, user):
    """Given a page opened before someone else cancelled the job, Cancel says why it did not."""
    from app import state

    job_id = enqueue(app, user)
    html = page(client, f"/admin/jobs/{job_id}")
    with app.app_context():
        state.cancel(uuid.UUID(job_id), by="someone else")

    html = submit(client, f"/admin/jobs/{job_id}/cancel", html)
    assert "Not cancelled: the job is CANCELLED now." in html
    html = submit(client, f"/admin/jobs/{job_id}/retry", html)
    html = submit(client, f"/admin/jobs/{job_id}/retry", html)
    assert "Not retried: the job is PENDING now." in html


def test_a_waiting_job_links_to_its_checkpoint(app, reviewer, client, user):
    job_id, checkpoint_id = park(app, user)
    html = page(client, f"/admin/jobs/{job_id}")
    assert f'href="/admin/agent-checkpoints/{checkpoint_id}">Review checkpoint</a>' in html
    # The step ledger: one attempt of the first step, by the worker that ran it.
    ledger = html.split('id="step-list"', 1)[1]
    assert "<code>propose</code>" in ledger and "w1@tests" in ledger and "succeeded" in ledger


def test_the_timeline_shows_a_decision_with_its_edit(app, reviewer, client, user):
    """Given an approval with an edited file, the timeline shows who, from where, why, and
    the edit as a diff against the proposal."""
    from app import state
    from app.status import Outcome

    job_id, checkpoint_id = park(app, user)
    edited = [{**FILES[0], "content": "def check(token):\n    return token.startswith('aq_')\n"}]
    with app.app_context():
        state.decide(
            uuid.UUID(checkpoint_id),
            Outcome.APPROVED,
            user_id=reviewer.id,
            reason="Check the prefix",
            data={"files": [*edited, FILES[1]]},
            ip="203.0.113.9",
            user_agent="tests",
        )
    html = page(client, f"/admin/jobs/{job_id}")
    timeline = html.split('<ol class="timeline">', 1)[1].split("</ol>", 1)[0]

    assert f"by <strong>{reviewer.name}</strong>" in timeline
    assert 'from <span class="mono">203.0.113.9</span>' in timeline
    assert "Check the prefix" in timeline
    assert "return token.startswith(&#39;aq_&#39;)</span>" in timeline
    assert '<span class="line del">-    return bool(token)</span>' in timeline
    assert "README.md" not in timeline.split('class="t-decision', 1)[1]  # not edited
    order = [timeline.index(s) for s in ("Job queued", "Review</strong>", "Check the prefix")]
    assert order == sorted(order)
    # The decision's own log line is folded into the decision.
    assert "Checkpoint approved by" not in timeline
    assert ">Cancel job</button>" in html  # PENDING again, at the write step


def test_a_rejection_shows_its_reason_and_allows_a_retry(app, reviewer, client, user):
    from app import state
    from app.status import Outcome

    job_id, checkpoint_id = park(app, user)
    with app.app_context():
        state.decide(
            uuid.UUID(checkpoint_id),
            Outcome.REJECTED,
            user_id=reviewer.id,
            reason="Tokens need a database check",
            ip="198.51.100.4",
        )
    html = page(client, f"/admin/jobs/{job_id}")
    assert 'class="t-decision t-rejected"' in html
    assert "Rejected</strong>" in html and 'from <span class="mono">198.51.100.4</span>' in html
    assert "Checkpoint rejected: Tokens need a database check" in html  # the job's error
    assert ">Retry job</button>" in html and ">Cancel job</button>" not in html


# -- The worker page ------------------------------------------------------------------------


def test_the_worker_page_says_when_no_worker_answers(app, reviewer, client, user, no_worker):
    enqueue(app, user)
    html = page(client, "/admin/worker")
    assert "No worker answered within 1s." in html
    assert 'id="worker-list"' not in html
    assert re.search(r'href="/admin/jobs\?status=PENDING"[^>]*>\s*<span class="count-n">1<', html)
    assert re.search(r'href="/admin/jobs\?status=FAILED"[^>]*>\s*<span class="count-n">0<', html)


@pytest.mark.acceptance
def test_the_worker_page_lists_each_worker(reviewer, client, worker, user, files):
    """Given the worker running a step, the table shows the worker consuming, its
    concurrency, and the step it runs, linked to its job."""
    job = user.enqueue("test-gated", files.input())
    wait_until(lambda: "wait" in files.runs(), 30, "the wait step to run")
    try:
        html = page(client, "/admin/worker")
    finally:
        files.gate.touch()
    row = html.split('data-worker="test-', 1)[1].split("</tr>", 1)[0]
    assert '<td class="num">1</td>' in row
    assert f'href="/admin/jobs/{job["id"]}"' in row and "test-gated.wait" in row
    assert "status-consuming" in row
    assert "1 worker(s) answered" in html
    user.wait_for(job["id"], "COMPLETED")


def test_pause_and_resume_through_the_forms(app, reviewer, client):
    from app import fleet

    html = page(client, "/admin/worker")
    html = submit(client, "/admin/worker/pause", html)
    assert "Paused: workers finish their running steps" in html
    assert f"by {reviewer.name}" in html
    with app.app_context():
        assert fleet.is_paused() is True

    html = submit(client, "/admin/worker/resume", html)
    assert "Resumed" in html
    with app.app_context():
        assert fleet.is_paused() is False
