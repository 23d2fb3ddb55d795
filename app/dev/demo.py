"""``agentq demo``: the guide's workflow over HTTP against a running agentq.

Enqueues a code-generation job as a user, waits for its approval checkpoint,
approves it as an admin (a job's submitter may not decide its checkpoints) and waits
for the job to complete, printing each stage::

    submitter = Client("http://127.0.0.1:8000", user_token)
    job = run(submitter, Client("http://127.0.0.1:8000", admin_token), timeout=60.0)
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid

import click
import sqlalchemy as sa
from flask import Flask

from app.auth import create_token
from app.auth import create_user
from app.extensions import db
from app.models import User
from app.status import CheckpointStatus
from app.status import JobStatus

#: The user the demo submits its job as, when it makes its own token.
DEMO_USER = "demo-user"


class Client:
    """JSON calls to the API at ``base`` with a bearer ``token``."""

    def __init__(self, base: str, token: str) -> None:
        self.base = base.rstrip("/")
        self.token = token

    def __call__(self, method: str, path: str, body: dict | None = None) -> dict:
        """The decoded answer to ``method path`` with ``body`` as JSON.

        :raises click.ClickException: when the answer is an HTTP error or the server
            cannot be reached.
        """
        request = urllib.request.Request(
            self.base + path,
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise click.ClickException(
                f"{method} {path} -> {exc.code}: {exc.read().decode()}"
            ) from None
        except urllib.error.URLError as exc:
            raise click.ClickException(
                f"cannot reach {self.base}: {exc.reason}; is agentq running?"
            ) from None

    def wait_for(self, job_id: str, statuses: set[str], timeout: float) -> dict:
        """Poll job ``job_id``, printing each status it passes, until it is in ``statuses``.

        :raises click.ClickException: when it is not within ``timeout`` seconds.
        """
        deadline, last = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            job = self("GET", f"/api/agent-jobs/{job_id}")["job"]
            if job["status"] != last:
                last = job["status"]
                step = job["currentStep"]
                where = {JobStatus.WAITING_APPROVAL: f" (approval resumes at {step})"}.get(last, "")
                click.echo(f"  status: {last}" + (where or (f" (step {step})" if step else "")))
            if job["status"] in statuses:
                return job
            time.sleep(0.5)
        raise click.ClickException(
            f"job {job_id} did not reach {'/'.join(statuses)} in {timeout:g}s"
        )


def temporary_admin_token(app: Flask) -> tuple[uuid.UUID, str]:
    """A new token of an admin (a new user ``demo-admin`` when there is none): its id and
    the token."""

    with app.app_context():
        admin = db.session.scalars(sa.select(User).where(User.is_admin).limit(1)).first()
        if admin is None:
            _user, row, token = create_user("demo-admin", admin=True)
        else:
            row, token = create_token(admin)
        return row.id, token


def temporary_submitter_token(app: Flask) -> tuple[uuid.UUID, str]:
    """A new token of ``demo-user``, who is not an admin (made when missing): its id and
    the token."""

    with app.app_context():
        user = db.session.scalars(sa.select(User).where(User.name == DEMO_USER)).first()
        if user is None:
            _user, row, token = create_user(DEMO_USER)
        else:
            row, token = create_token(user)
        return row.id, token


def run(submitter: Client, reviewer: Client, timeout: float) -> dict:
    """Enqueue a code-generation job as ``submitter``, approve it as ``reviewer`` (an
    admin) and follow it; returns it COMPLETED.

    :raises click.ClickException: when a stage takes longer than ``timeout`` seconds or
        the job fails.
    """
    click.echo(f"1. Enqueue a code-generation job at {submitter.base}")
    job = submitter(
        "POST",
        "/api/agent-jobs",
        {
            "jobType": "code-generation",
            "taskDescription": "Generate user authentication module",
            "inputData": {
                "files": [
                    {
                        "path": "lib/auth.py",
                        "content": "def authenticate(token):\n    return bool(token)\n",
                    }
                ]
            },
            "priority": 8,
        },
    )["job"]
    click.echo(f"  job {job['id']} is {job['status']}")
    click.echo("2. Worker processes the job until its approval checkpoint")
    submitter.wait_for(job["id"], {JobStatus.WAITING_APPROVAL, JobStatus.FAILED}, timeout)
    checkpoints = submitter("GET", f"/api/agent-jobs/{job['id']}/checkpoints")["checkpoints"]
    pending = next(c for c in checkpoints if c["status"] == CheckpointStatus.PENDING)
    files = ", ".join(f["path"] for f in pending["data"]["files"])
    click.echo(f"3. Checkpoint {pending['id']}: {pending['title']} ({files})")
    reviewer(
        "POST", f"/api/admin/agent-checkpoints/{pending['id']}", {"reason": "Looks good (demo)"}
    )
    click.echo("  approved by an admin, not the submitter")
    click.echo("4. The continuation runs")
    job = submitter.wait_for(job["id"], {JobStatus.COMPLETED, JobStatus.FAILED}, timeout)
    if job["status"] != JobStatus.COMPLETED:
        raise click.ClickException(f"job failed: {job['error']}")
    click.echo(f"  result: {json.dumps(job['result'])}")
    for entry in submitter("GET", f"/api/agent-jobs/{job['id']}")["job"]["logs"]:
        click.echo(f"  log [{entry['kind']}] {entry['message']}")
    return job
