"""``agentq checkpoints``, run as a reviewer runs it from their laptop: commands that talk
to a real web process (gunicorn, one for the module) over HTTP with a token, while the
session's worker runs the steps.

The commands run in this process (:func:`~tests.acceptance.test_cli.invoke`, with
``AGENTQ_URL`` and ``AGENTQ_TOKEN`` in the environment). The installed script runs in a
subprocess at the repo root where the process is the point: ``show`` printing its diff
uncoloured on a pipe, and the errors with no token or no server, the whole of stderr one
line.

A non-admin ``user`` submits and an ``admin`` reviews: a job's submitter may not decide
its checkpoints.
"""

from __future__ import annotations

import json
import re

import pytest

from app.dev.embedded import free_port
from tests.acceptance.running import Gunicorn
from tests.acceptance.test_cli import agentq
from tests.acceptance.test_cli import invoke
from tests.acceptance.test_cli import rows
from tests.conftest import ApiUser
from tests.conftest import wait_until

pytestmark = [pytest.mark.acceptance]

ORIGINAL = "def authenticate(token):\n    return bool(token)\n"
REVISED = "def authenticate(token):\n    return token in VALID_TOKENS\n"
FILES = {"files": [{"path": "lib/auth.py", "content": ORIGINAL}]}


@pytest.fixture(scope="module")
def web(servers):
    """The web process the commands call. Each test gets a fresh database under it, so it
    pings every pooled connection before use (``DATABASE_IDLE_PING_SECONDS=0``)."""
    server = Gunicorn("checkpoints-cli-web", {"DATABASE_IDLE_PING_SECONDS": "0"})
    server.start()
    yield server
    server.stop()


@pytest.fixture
def review(web):
    """``review(token, *args)``: ``agentq checkpoints ARGS`` against ``web`` with ``token``,
    in this process."""

    def run(token: str, *args: str):
        return invoke("checkpoints", *args, AGENTQ_URL=web.url, AGENTQ_TOKEN=token)

    return run


@pytest.fixture
def second_admin(app, client):
    from app.auth import create_user

    with app.app_context():
        person, _row, token = create_user("second-admin", admin=True)
        return ApiUser(client, person.name, token, person.id)


def said(done) -> str:
    assert done.returncode == 0, done.stdout + done.stderr
    assert "\x1b[" not in done.stdout, "coloured output on a pipe"
    return done.stdout


def refused(done) -> str:
    """What a command that failed said on stderr (its exit status 1, no traceback)."""
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    return done.stderr


def parked(user, **review) -> tuple[dict, dict]:
    """A code-generation job ``user`` submitted (with a review policy, when given), once
    it waits at its checkpoint; the job and the checkpoint."""
    body = {"jobType": "code-generation", "taskDescription": "auth", "inputData": FILES}
    response = user.request("POST", "/api/agent-jobs", json={**body, **review})
    assert response.status_code == 201, response.get_json()
    job = user.wait_for(response.get_json()["job"]["id"], "WAITING_APPROVAL")
    return job, user.pending_checkpoint(job["id"])


def test_list_shows_a_parked_code_generation_checkpoint(worker, review, user, admin):
    """Given a job parked for review, when an admin lists the checkpoints, then its row
    says what it is, whose, how many approvals it needs and that they may decide it; the
    submitter, not an admin, is refused."""
    _job, checkpoint = parked(user)

    [row] = rows(review(admin.token, "list"))

    assert row == {
        "ID": checkpoint["id"][:8],
        "JOB TYPE": "code-generation",
        "TITLE": "Review file changes",
        "VERSION": "1",
        "VOTES": "0/1",
        "DEADLINE": "-",
        "OWNER": "user",
        "MAY DECIDE": "yes",
    }
    assert rows(review(admin.token, "list", "--mine", "--job-type", "code-generation")) == [row]
    assert said(review(admin.token, "list", "--job-type", "simple-task")).strip() == (
        "No pending checkpoints"
    )
    assert "This endpoint is for admins" in refused(review(user.token, "list"))


def test_show_prints_the_proposal_as_a_diff(worker, web, review, user, admin):
    """Given a parked code-generation job, when an admin shows its checkpoint (by its id,
    or the start of it the list shows), then they read its job, policy and the proposed
    file as a diff, uncoloured on a pipe."""
    job, checkpoint = parked(user)

    # The installed script, its stdout on a pipe: only a process tells a pipe from a terminal.
    shown = said(
        agentq(
            "checkpoints", "show", checkpoint["id"], AGENTQ_URL=web.url, AGENTQ_TOKEN=admin.token
        )
    )

    assert said(review(admin.token, "show", checkpoint["id"][:8])) == shown
    assert "Review file changes" in shown
    assert (
        f"job         {job['id']} (code-generation, WAITING_APPROVAL), submitted by user" in shown
    )
    assert "step        propose, version 1" in shown
    assert "status      PENDING, 0/1 approvals" in shown
    assert "who decides: any admin; the job's submitter may not" in shown
    assert "approvals needed: 1; one rejection rejects" in shown
    assert "changes may be requested 5 time(s) at most" in shown
    assert "  none yet" in shown
    diff = shown[shown.index("Proposed files") :].splitlines()
    assert diff[1:] == [
        "--- /dev/null",
        "+++ b/lib/auth.py",
        "@@ -0,0 +1,2 @@",
        "+def authenticate(token):",
        "+    return bool(token)",
    ]


def test_show_prints_other_data_as_json(worker, review, user, admin):
    """Given a data-processing job parked for review, when an admin shows its checkpoint,
    then its data (records, not files) is printed as indented JSON."""
    response = user.request(
        "POST",
        "/api/agent-jobs",
        json={
            "jobType": "data-processing",
            "taskDescription": "names",
            "inputData": {"records": [{"name": "ada"}, {"name": "grace"}]},
        },
    )
    job = user.wait_for(response.get_json()["job"]["id"], "WAITING_APPROVAL")
    checkpoint = user.pending_checkpoint(job["id"])

    shown = said(review(admin.token, "show", checkpoint["id"]))

    printed = shown[shown.index("Data (version 1)\n") + len("Data (version 1)\n") :]
    assert printed.startswith('{\n  "columns": [\n    "name"\n  ],')
    assert json.loads(printed) == {
        "columns": ["name"],
        "records": [{"name": "ada"}, {"name": "grace"}],
    }


def test_approve_completes_the_job(worker, review, user, admin):
    """Given a parked job, when an admin approves it from the terminal, then it says so,
    the job completes with the file written, and the vote records the reason and the CLI."""
    job, checkpoint = parked(user)

    done = review(admin.token, "approve", checkpoint["id"][:8], "--reason", "Looks right")

    assert said(done).strip() == "approved"
    finished = user.wait_for(job["id"], "COMPLETED")
    assert finished["result"]["written"] == ["lib/auth.py"]
    [vote] = next(c for c in finished["checkpoints"] if c["id"] == checkpoint["id"])["votes"]
    assert (vote["outcome"], vote["reason"], vote["decidedBy"]) == (
        "APPROVED",
        "Looks right",
        "admin",
    )
    assert vote["userAgent"].startswith("agentq-cli/")


def test_reject_fails_the_job(worker, review, user, admin):
    """Given a parked job, when an admin rejects it with a reason, then the job fails with it."""
    job, checkpoint = parked(user)

    done = review(admin.token, "reject", checkpoint["id"], "--reason", "Not secure")

    assert said(done).strip() == "rejected: the job fails"
    failed = user.wait_for(job["id"], "FAILED")
    assert "Not secure" in failed["error"]


def test_request_changes_then_show_the_next_version(worker, review, user, admin, tmp_path):
    """Given a parked job, when an admin requests changes sending an edited file, then the
    step runs again and opens version 2, which `show` prints with the feedback and the
    diff from version 1; a decision on version 1 is refused naming version 2, and version 2
    is approved."""
    job, first = parked(user)
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps({"files": [{"path": "lib/auth.py", "content": REVISED}]}))

    done = review(
        admin.token,
        "request-changes",
        first["id"],
        "--feedback",
        "Check the token against the valid ones",
        "--data-file",
        str(edited),
        "--version",
        "1",
    )

    assert said(done).strip() == "changes requested: the step runs again and opens version 2"
    second = wait_until(
        lambda: next(
            (c for c in user.job(job["id"])["checkpoints"] if c["version"] == 2),
            None,
        ),
        30,
        "version 2 of the checkpoint",
    )
    [row] = rows(review(admin.token, "list"))
    assert (row["ID"], row["VERSION"]) == (second["id"][:8], "2")

    shown = said(review(admin.token, "show", second["id"]))

    assert "step        propose, version 2" in shown
    assert "Version 1 was sent back\n  admin asked: Check the token against the valid ones" in shown
    diff = shown[shown.index("Changes from version 1 to 2") :].splitlines()
    assert diff[1:] == [
        "--- a/lib/auth.py",
        "+++ b/lib/auth.py",
        "@@ -1,2 +1,2 @@",
        " def authenticate(token):",
        "-    return bool(token)",
        "+    return token in VALID_TOKENS",
    ]
    old = said(review(admin.token, "show", first["id"]))
    assert f"current     version 2 (PENDING): `agentq checkpoints show {second['id']}`" in old

    stale = refused(review(admin.token, "approve", first["id"]))
    assert f"version 2 is current: run `agentq checkpoints show {second['id']}`" in stale
    stale = refused(review(admin.token, "approve", second["id"], "--version", "1"))
    assert "Version 1 of this checkpoint is not the current one" in stale
    assert (
        said(review(admin.token, "approve", second["id"], "--version", "2")).strip() == "approved"
    )
    finished = user.wait_for(job["id"], "COMPLETED")
    assert finished["result"]["written"] == ["lib/auth.py"]


def test_a_vote_of_two_needed(worker, review, user, admin, second_admin):
    """Given a job whose review needs two approvals, when one admin approves, then the
    vote is recorded (1/2) and the list says they may not vote again; when a second admin
    approves, the checkpoint is approved and the job completes."""
    job, checkpoint = parked(user, review={"minApprovals": 2})

    first = review(admin.token, "approve", checkpoint["id"])

    assert said(first).strip() == "vote recorded: 1/2 approvals"
    [row] = rows(review(admin.token, "list"))
    assert (row["VOTES"], row["MAY DECIDE"]) == ("1/2", "no")
    assert "already voted" in refused(review(admin.token, "approve", checkpoint["id"]))
    assert said(review(second_admin.token, "approve", checkpoint["id"])).strip() == "approved"
    user.wait_for(job["id"], "COMPLETED")


def test_refusals_exit_1_with_the_servers_reason(worker, review, admin, second_admin, tmp_path):
    """Given a job an admin submitted, when they approve it themselves, then 403 says why;
    another admin's invalid data and unknown option are refused naming the field; an
    unknown checkpoint is not found; each exits 1 and the checkpoint stays pending."""
    job, checkpoint = parked(admin)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"files": [{"path": "../outside.py", "content": "x"}]}))

    own = refused(review(admin.token, "approve", checkpoint["id"]))

    assert "admin submitted job" in own
    assert "does not allow the submitter to decide its checkpoints" in own
    invalid = refused(
        review(second_admin.token, "approve", checkpoint["id"], "--data-file", str(bad))
    )
    assert re.search(r"^  data\.files\.0\.path: ", invalid, re.MULTILINE), invalid
    unknown = refused(review(second_admin.token, "approve", checkpoint["id"], "--option", "deploy"))
    assert re.search(r"^  option: ", unknown, re.MULTILINE), unknown
    missing = "00000000-0000-4000-8000-000000000000"
    assert f"Checkpoint {missing} not found" in refused(review(second_admin.token, "show", missing))
    assert admin.pending_checkpoint(job["id"])["id"] == checkpoint["id"]


def test_no_token_and_no_server_are_one_line_errors():
    """Without a token the command says how to get one; with a server that does not
    answer it says so in one line and exits 1."""
    no_token = agentq("checkpoints", "list", AGENTQ_TOKEN="")
    assert no_token.returncode == 2, no_token.stdout + no_token.stderr
    assert "No token: pass --token or set AGENTQ_TOKEN" in no_token.stderr

    url = f"http://127.0.0.1:{free_port()}"
    down = agentq("checkpoints", "list", "--url", url, "--token", "aq_x")
    assert down.returncode == 1, down.stdout + down.stderr
    assert down.stderr.strip().splitlines() == [
        f"Error: cannot reach {url}: [Errno 111] Connection refused"
    ]
