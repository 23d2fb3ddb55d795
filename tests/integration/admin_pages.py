"""Helpers of the integration tests: signing the Flask test client in to the admin pages,
as a browser would, and parking a job at a pending checkpoint, as a worker would (enqueue,
claim the first step, finish it with an APPROVAL_REQUIRED checkpoint, through
``app.state``)."""

from __future__ import annotations

import re

import sqlalchemy as sa

from tests.conftest import give_password

FILES = [
    {"path": "lib/auth.py", "content": "def check(token):\n    return bool(token)\n"},
    {"path": "README.md", "content": "# Auth\n"},
]


def csrf_token(page: str) -> str:
    """The CSRF token of the (first) form on ``page``."""
    return re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)


def sign_in(app, client, person) -> None:
    """Give ``person`` a password and sign the test client in through the login form."""
    password = give_password(app, person)
    token = csrf_token(client.get("/admin/login").get_data(as_text=True))
    response = client.post(
        "/admin/login", data={"name": person.name, "password": password, "csrf_token": token}
    )
    assert response.status_code == 302, response.get_data(as_text=True)


def park(app, owner, job_type="code-generation", data=None, **job) -> str:
    """A job of ``owner`` parked at a pending checkpoint opened by its first step; its id."""
    from app import state
    from app.extensions import db
    from app.framework.registry import registry
    from app.models import Checkpoint

    data = {"files": FILES} if data is None else data
    with app.app_context():
        parked = state.enqueue(
            user_id=owner.id,
            job_type=job_type,
            task_description=job.get("description", "Write the auth module"),
            input_data=job.get("input", data),
            priority=job.get("priority", 5),
        )
        step = registry.get(job_type).steps[0].name
        claim = state.claim_step(parked.id, step, worker="tests", task_id=None, lease_seconds=60)
        checkpoint = {
            "type": "APPROVAL_REQUIRED",
            "title": job.get("title", "Review"),
            "data": data,
        }
        assert state.finish_step(claim, {}, [checkpoint], chain_continues=False) == "waiting"
        return str(
            db.session.scalar(sa.select(Checkpoint.id).where(Checkpoint.job_id == parked.id))
        )
