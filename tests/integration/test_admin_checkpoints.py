"""The checkpoint pages through the Flask test client, without a worker.

A pending checkpoint is made the way a worker makes one: enqueue, claim the first
step, finish it with an APPROVAL_REQUIRED checkpoint (``app.state``).
"""

from __future__ import annotations

import re
import uuid

import pytest

from tests.integration.admin_pages import FILES
from tests.integration.admin_pages import csrf_token
from tests.integration.admin_pages import park
from tests.integration.admin_pages import sign_in

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("jobs_stay_pending")]


def stored(app, checkpoint_id: str):
    """The checkpoint's status, its decision (or None) and its job's status."""
    from app.extensions import db
    from app.models import Checkpoint

    with app.app_context():
        checkpoint = db.session.get(Checkpoint, uuid.UUID(checkpoint_id))
        return checkpoint.status, checkpoint.decision, checkpoint.job.status


def post(client, path: str, **form):
    token = csrf_token(client.get(path.rsplit("/", 1)[0]).get_data(as_text=True))
    return client.post(path, data={"csrf_token": token, **form})


def test_anonymous_visitors_sign_in_and_users_get_403(app, client, user):
    assert client.get("/admin/agent-checkpoints").status_code == 302
    assert client.get("/admin/agent-checkpoints/live.json").status_code == 302
    sign_in(app, client, user)
    assert client.get("/admin/agent-checkpoints").status_code == 403
    assert client.get("/admin/agent-checkpoints/live.json").status_code == 403


def test_list_shows_pending_checkpoints_oldest_first(app, client, reviewer, user):
    first = park(app, user, description="First job", priority=9)
    second = park(app, user, description="Second job", priority=2)

    page = client.get("/admin/agent-checkpoints").get_data(as_text=True)

    assert "<title>(2) Pending checkpoints · agentq</title>" in page
    rows = re.findall(r'<tr data-checkpoint-id="([^"]+)">', page)
    assert rows == [first, second]
    assert f'href="/admin/agent-checkpoints/{first}">First job</a>' in page
    assert "prio prio-high" in page and ">user</td>" in page
    assert 'id="pending-badge" aria-label="2 pending">2<' in page
    assert "No pending checkpoints" not in page


def test_filter_by_job_type(app, client, reviewer, user):
    park(app, user)
    records = {"records": [{"name": "ada"}], "columns": ["name"]}
    data_id = park(app, user, "data-processing", data=records, description="Clean names")

    page = client.get("/admin/agent-checkpoints?jobType=data-processing").get_data(as_text=True)

    assert re.findall(r'<tr data-checkpoint-id="([^"]+)">', page) == [data_id]
    assert '<option value="data-processing" selected>' in page
    assert "<title>(2) Pending checkpoints · agentq</title>" in page
    empty = client.get("/admin/agent-checkpoints?jobType=simple-task").get_data(as_text=True)
    assert "No pending checkpoints" in empty


def test_live_json_lists_rows_and_counts(app, client, reviewer, user):
    checkpoint_id = park(app, user, description="Live job", priority=7)

    body = client.get("/admin/agent-checkpoints/live.json").get_json()

    assert body["count"] == 1
    [row] = body["checkpoints"]
    assert row["id"] == checkpoint_id
    assert row["url"] == f"/admin/agent-checkpoints/{checkpoint_id}"
    assert (row["jobType"], row["taskDescription"], row["owner"], row["priority"]) == (
        "code-generation",
        "Live job",
        "user",
        7,
    )
    assert row["age"].endswith("s") and row["createdAt"]
    assert client.get("/admin/agent-checkpoints/live.json?countOnly=1").get_json() == {"count": 1}
    filtered = client.get("/admin/agent-checkpoints/live.json?jobType=data-processing").get_json()
    assert filtered["count"] == 1 and filtered["checkpoints"] == []


def test_detail_shows_the_job_logs_diffs_and_forms(app, client, reviewer, user):
    checkpoint_id = park(app, user, title="Review file changes")

    page = client.get(f"/admin/agent-checkpoints/{checkpoint_id}").get_data(as_text=True)

    assert "<h1>Review file changes</h1>" in page
    assert "Write the auth module" in page
    assert '<span class="line add">+def check(token):</span>' in page
    assert page.index("Job queued at priority 5") < page.index("APPROVAL_REQUIRED checkpoint")
    assert '<label for="file-0">Edit lib/auth.py</label>' in page
    assert '<label for="file-1">Edit README.md</label>' in page
    # The newline after <textarea> is dropped by the parser, so the content is exact.
    assert 'name="file-1" rows="4" spellcheck="false" autocapitalize="off">\n# Auth\n<' in page
    assert f'action="/admin/agent-checkpoints/{checkpoint_id}/approve"' in page
    assert f'action="/admin/agent-checkpoints/{checkpoint_id}/reject"' in page
    assert 'id="reject-reason" name="reason" rows="3" required' in page
    assert 'id="decision"' not in page


def test_approve_as_proposed(app, client, reviewer, user):
    checkpoint_id = park(app, user)
    path = f"/admin/agent-checkpoints/{checkpoint_id}"
    form = {f"file-{i}": f["content"].replace("\n", "\r\n") for i, f in enumerate(FILES)}

    response = post(client, f"{path}/approve", comment="Looks right", **form)

    assert response.status_code == 303 and response.location == path
    status, decision, job_status = stored(app, checkpoint_id)
    assert (status, job_status) == ("APPROVED", "PENDING")
    assert decision.data is None and decision.reason == "Looks right"
    assert decision.ip == "127.0.0.1"
    page = client.get(path).get_data(as_text=True)
    assert "Approved." in page
    assert re.search(r"<strong>Approved</strong>\s+by admin · <time", page)
    assert "Looks right" in page and '<form method="post" action="' + path not in page


def test_approve_with_an_edited_file(app, client, reviewer, user):
    checkpoint_id = park(app, user)
    path = f"/admin/agent-checkpoints/{checkpoint_id}"
    edited = "def check(token):\r\n    return token.startswith('aq_')\r\n"

    post(client, f"{path}/approve", **{"file-0": edited, "file-1": FILES[1]["content"]})

    _status, decision, _job = stored(app, checkpoint_id)
    assert decision.data == {
        "files": [{"path": "lib/auth.py", "content": edited.replace("\r\n", "\n")}, FILES[1]]
    }
    page = client.get(path).get_data(as_text=True)
    assert "Edited before approval" in page
    assert '<span class="line add">+    return token.startswith(&#39;aq_&#39;)</span>' in page
    assert '<span class="line del">-    return bool(token)</span>' in page


def test_reject_needs_a_reason(app, client, reviewer, user):
    checkpoint_id = park(app, user)
    path = f"/admin/agent-checkpoints/{checkpoint_id}"

    response = post(client, f"{path}/reject", reason="  ")

    assert response.status_code == 422
    assert 'id="reject-reason-error"' in response.get_data(as_text=True)
    assert stored(app, checkpoint_id)[0] == "PENDING"
    response = post(client, f"{path}/reject", reason="Not safe")
    assert response.status_code == 303
    status, decision, job_status = stored(app, checkpoint_id)
    assert (status, job_status, decision.reason) == ("REJECTED", "FAILED", "Not safe")
    page = client.get(path).get_data(as_text=True)
    assert "Rejected." in page and 'id="decision"' in page and "Not safe" in page


def test_someone_else_decided_first(app, client, reviewer, user):
    checkpoint_id = park(app, user)
    path = f"/admin/agent-checkpoints/{checkpoint_id}"
    token = csrf_token(client.get(path).get_data(as_text=True))
    assert reviewer.reject(checkpoint_id, "Duplicate").status_code == 200

    response = client.post(f"{path}/approve", data={"csrf_token": token}, follow_redirects=True)

    page = response.get_data(as_text=True)
    assert re.search(r"flash-warning[^>]*>Already rejected by admin at [^<]+ UTC: Duplicate<", page)
    assert 'id="decision"' in page
    assert stored(app, checkpoint_id)[0] == "REJECTED"


def test_forms_without_a_csrf_token_are_refused(app, client, reviewer, user):
    checkpoint_id = park(app, user)

    response = client.post(f"/admin/agent-checkpoints/{checkpoint_id}/approve", data={})

    assert response.status_code == 400
    assert stored(app, checkpoint_id)[0] == "PENDING"


def test_data_processing_records_show_as_a_table(app, client, reviewer, user):
    data = {"records": [{"name": "ada", "age": 36}, {"name": "<b>"}], "columns": ["age", "name"]}
    checkpoint_id = park(app, user, "data-processing", data=data)

    page = client.get(f"/admin/agent-checkpoints/{checkpoint_id}").get_data(as_text=True)

    assert re.search(r'<th scope="col">age</th><th scope="col">name</th>', page)
    assert "<td><code>36</code></td><td>ada</td>" in page
    assert "<td>&lt;b&gt;</td>" in page
    assert 'id="file-0"' not in page


def test_other_data_shows_as_json(app, client, reviewer, user):
    checkpoint_id = park(app, user, "simple-task", data={"plan": ["a", "b"]}, input={})

    page = client.get(f"/admin/agent-checkpoints/{checkpoint_id}").get_data(as_text=True)

    assert '<pre class="json">{\n  &#34;plan&#34;: [\n    &#34;a&#34;,' in page


def test_unknown_checkpoint_is_404(client, reviewer):
    assert client.get(f"/admin/agent-checkpoints/{uuid.uuid4()}").status_code == 404


def test_every_decision_on_the_pages_is_counted(app, client, reviewer, user, caplog):
    """Given three parked jobs, when a reviewer approves one as proposed, approves one
    with an edited file and rejects one on the pages, then the decisions and their waits
    are counted as the API's are, and no metric fails."""
    from app.observability import instruments

    def counted() -> dict[str, float]:
        labels = {"job_type": "code-generation"}
        return {
            f"{name} {outcome}": instruments.REGISTRY.get_sample_value(
                name, {**labels, "outcome": outcome}
            )
            or 0.0
            for name in ("agentq_checkpoints_decided_total", "agentq_checkpoint_wait_seconds_count")
            for outcome in ("approved", "rejected")
        }

    parked = [park(app, user) for _ in range(3)]
    before = counted()
    edited = {"file-0": "print('edited')\r\n", "file-1": FILES[1]["content"]}
    paths = [f"/admin/agent-checkpoints/{checkpoint_id}" for checkpoint_id in parked]

    assert post(client, f"{paths[0]}/approve", comment="as proposed").status_code == 303
    assert post(client, f"{paths[1]}/approve", **edited).status_code == 303
    assert post(client, f"{paths[2]}/reject", reason="Not safe").status_code == 303

    after = counted()
    assert {k: after[k] - before[k] for k in after} == {
        "agentq_checkpoints_decided_total approved": 2,
        "agentq_checkpoints_decided_total rejected": 1,
        "agentq_checkpoint_wait_seconds_count approved": 2,
        "agentq_checkpoint_wait_seconds_count rejected": 1,
    }
    assert "metrics: recording" not in caplog.text


# -- Input Postgres cannot store: a form error or a 400 page, never a 500 -------------------


def test_a_user_name_with_a_nul_character_is_a_form_error(app, client, admin):
    """Given the login form, when a visitor signs in with a NUL character in the user
    name, then the form answers 422 naming the user name, and nobody is signed in."""
    token = csrf_token(client.get("/admin/login").get_data(as_text=True))

    response = client.post(
        "/admin/login", data={"name": "ad\x00min", "password": "x", "csrf_token": token}
    )

    assert response.status_code == 422
    assert re.search(r"field-error[^>]*>User name: [^<]*NUL", response.get_data(as_text=True))
    assert client.get("/admin/agent-checkpoints").status_code == 302


@pytest.mark.parametrize("path", ["/admin/agent-checkpoints", "/admin/agent-checkpoints/live.json"])
def test_a_job_type_filter_with_a_nul_character_is_a_400_page(client, reviewer, path):
    """Given a signed-in admin, when they filter the pending list by a jobType holding a
    NUL character, then the page answers 400 naming jobType."""
    response = client.get(path, query_string={"jobType": "simple\x00task"})

    assert response.status_code == 400
    assert "jobType" in response.get_data(as_text=True)


@pytest.mark.parametrize(
    ("action", "form", "field"),
    [
        ("approve", {"comment": "fine\x00"}, "approve-comment"),
        ("approve", {"file-0": "x = 1\x00\n", "file-1": FILES[1]["content"]}, "file-0"),
        ("reject", {"reason": "no\x00"}, "reject-reason"),
    ],
    ids=["approve-comment", "edited-file", "reject-reason"],
)
def test_a_decision_with_a_nul_character_is_a_form_error(
    app, client, reviewer, user, action, form, field
):
    """Given a pending code-generation checkpoint, when an admin approves it with a NUL
    character in the comment or an edited file, or rejects it with one in the reason,
    then the page answers 422 with the error beside that field, and nothing is decided."""
    checkpoint_id = park(app, user)

    response = post(client, f"/admin/agent-checkpoints/{checkpoint_id}/{action}", **form)

    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert re.search(rf'id="{field}-error" class="field-error"[^>]*>[^<]*NUL', page), page
    assert stored(app, checkpoint_id) == ("PENDING", None, "WAITING_APPROVAL")
