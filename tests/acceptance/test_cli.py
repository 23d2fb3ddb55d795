"""The ``agentq`` console script, run as a user would run it: a subprocess at the repo root."""

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from app.extensions import db

pytestmark = [pytest.mark.acceptance]

ROOT = Path(__file__).resolve().parents[2]
AGENTQ = Path(sys.executable).parent / "agentq"
ADMIN_ONLY = "/api/admin/agent-checkpoints"


def agentq(*args: str, **env: str) -> subprocess.CompletedProcess:
    """Run ``agentq ARGS`` with the test environment (plus ``env``); returns the result."""
    return subprocess.run(
        [str(AGENTQ), *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def last_line(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.strip().splitlines()[-1]


def get(client, path: str, token: str):
    return client.get(path, headers={"Authorization": f"Bearer {token}"})


def test_users_create_admin_prints_a_working_admin_token(app, client):
    """Given no users, when `agentq users create ada --admin`, then its token opens admin pages."""
    token = last_line(agentq("users", "create", "ada", "--admin"))
    assert get(client, ADMIN_ONLY, token).status_code == 200
    assert get(client, "/api/agent-jobs", token).status_code == 200


def test_users_create_without_admin_gets_a_user_token(app, client):
    """Given `agentq users create bob`, when bob calls an admin endpoint, then 403, user API 200."""
    token = last_line(agentq("users", "create", "bob"))
    assert get(client, "/api/agent-jobs", token).status_code == 200
    forbidden = get(client, ADMIN_ONLY, token)
    assert forbidden.status_code == 403
    assert forbidden.get_json()["error"]["code"] == "forbidden"


def test_tokens_create_and_revoke(app, client):
    """Given a user, when a token is made then revoked, then it works, then gets 401 at once."""
    first = last_line(agentq("users", "create", "carol"))
    created = agentq("tokens", "create", "carol")
    token = last_line(created)
    assert token != first
    match = re.search(r"Created token ([0-9a-f-]{36}) for carol", created.stdout)
    assert match, created.stdout
    token_id = match.group(1)
    assert get(client, "/api/agent-jobs", token).status_code == 200

    revoked = agentq("tokens", "revoke", token_id)
    assert revoked.returncode == 0, revoked.stdout + revoked.stderr
    assert token_id in revoked.stdout

    refused = get(client, "/api/agent-jobs", token)
    assert refused.status_code == 401
    assert refused.get_json()["error"]["code"] == "unauthorized"
    # The user's other token is untouched.
    assert get(client, "/api/agent-jobs", first).status_code == 200


def test_check_db_reports_the_connection_and_every_table(app):
    """Given the migrated database, when `agentq check-db`, then a ✓ for it and each table."""
    done = agentq("check-db")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert any(line.startswith("\u2713 Database connection successful") for line in lines)
    for table in db.metadata.tables:
        assert f"\u2713 {table} table exists" in lines, done.stdout
    assert not any(line.startswith("\u2717") for line in lines), done.stdout


def test_check_db_fails_when_the_database_does_not_answer(app):
    """Given a DATABASE_URL nobody listens on, when `agentq check-db`, then ✗ and non-zero."""
    done = agentq("check-db", DATABASE_URL="postgresql://postgres@127.0.0.1:1/x")
    assert done.returncode != 0
    failed = [line for line in done.stdout.splitlines() if line.startswith("\u2717")]
    assert failed, done.stdout + done.stderr
    assert "Database connection failed" in failed[0]
    assert "Traceback" not in done.stderr


def test_verify_with_a_running_worker(app, worker):
    """Given the worker runs, when `agentq verify`, then ✓ for each part and exit 0."""
    done = agentq("verify")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    for part in ("database: ok", "migrations: ok", "broker: ok"):
        assert f"\u2713 {part}" in lines, done.stdout
    workers = [line for line in lines if line.startswith("\u2713 workers answering: ")]
    assert workers and "test-" in workers[0], done.stdout
    handlers = [line for line in lines if line.startswith("\u2713 handlers registered: ")]
    assert handlers, done.stdout
    for job_type in ("simple-task", "code-generation", "data-processing", "test-gated"):
        assert job_type in handlers[0]


def test_unknown_user_or_token_is_an_error_message_not_a_traceback(app):
    """Given no user "nobody", when making or revoking tokens wrongly, then exit 1 and a message."""
    done = agentq("tokens", "create", "nobody")
    assert done.returncode == 1
    assert "User 'nobody' not found" in done.stderr
    assert "Traceback" not in done.stderr

    token_id = str(uuid.uuid4())
    revoked = agentq("tokens", "revoke", token_id)
    assert revoked.returncode == 1
    assert f"Token {token_id} not found" in revoked.stderr
    assert "Traceback" not in revoked.stderr


def test_creating_a_user_twice_is_refused(app, client):
    """Given user dora exists, when `agentq users create dora` again, then exit 1, no new token."""
    token = last_line(agentq("users", "create", "dora"))
    again = agentq("users", "create", "dora", "--admin")
    assert again.returncode == 1
    assert "dora" in again.stderr
    assert "already exists" in again.stderr
    assert "Traceback" not in again.stderr
    # dora is still a plain user with her first token.
    assert get(client, ADMIN_ONLY, token).status_code == 403
