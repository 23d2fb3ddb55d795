"""Rate limits (``app.limits``) through the Flask test client, counted in the tests' Redis.

Each test sets small limits in the session app's config, which the limits read at every
request; ``clean_state`` empties the counters before each test.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from tests.conftest import ApiUser
from tests.integration.admin_pages import park

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("jobs_stay_pending")]

JOB = {"jobType": "simple-task", "taskDescription": "a test job", "inputData": {}}


def jobs_of(app, person) -> int:
    from app.extensions import db

    with app.app_context():
        return db.session.execute(
            sa.text("SELECT count(*) FROM jobs WHERE user_id = :id"), {"id": person.id}
        ).scalar_one()


def checkpoint_status(app, checkpoint_id: str) -> str:
    from app.extensions import db

    with app.app_context():
        return db.session.execute(
            sa.text("SELECT status FROM checkpoints WHERE id = CAST(:id AS uuid)"),
            {"id": checkpoint_id},
        ).scalar_one()


def assert_throttled(response, limit: str) -> None:
    """A 429 in the error envelope, naming the limit, with Retry-After in seconds."""
    assert response.status_code == 429, response.get_json()
    wait = int(response.headers["Retry-After"])
    assert 1 <= wait <= 60
    error = response.get_json()["error"]
    assert response.get_json()["success"] is False
    assert error["code"] == "too_many_requests"
    assert f"at most {limit}" in error["message"]
    assert error["details"] == {"limit": limit, "retryAfter": wait}


@pytest.fixture
def second_admin(app, client):
    from app.auth import create_user

    with app.app_context():
        person, _row, token = create_user("second-admin", admin=True)
        return ApiUser(client, person.name, token, person.id)


def test_a_submission_over_the_limit_is_a_429_and_other_users_go_on(
    app, monkeypatch, user, other_user
):
    """Given RATE_LIMIT_JOBS of 3 a minute, when a user submits a 4th job, then 429 with
    Retry-After and the envelope, and no job is made; another user still submits."""
    monkeypatch.setitem(app.config, "RATE_LIMIT_JOBS", "3/minute")
    for _ in range(3):
        assert user.request("POST", "/api/agent-jobs", json=JOB).status_code == 201

    assert_throttled(user.request("POST", "/api/agent-jobs", json=JOB), "3 per 1 minute")
    assert jobs_of(app, user) == 3
    assert user.request("GET", "/api/agent-jobs").status_code == 200
    assert other_user.request("POST", "/api/agent-jobs", json=JOB).status_code == 201


def test_api_decisions_over_the_limit_are_a_429_and_other_admins_go_on(
    app, monkeypatch, user, admin, second_admin
):
    """Given RATE_LIMIT_DECISIONS of 2 a minute, when an admin approves one checkpoint and
    rejects another, then the 3rd decision is a 429 and decides nothing; another admin
    still decides."""
    monkeypatch.setitem(app.config, "RATE_LIMIT_DECISIONS", "2/minute")
    first, second, third = (park(app, user) for _ in range(3))
    assert admin.approve(first).status_code == 200
    assert admin.reject(second, "No").status_code == 200

    assert_throttled(admin.approve(third), "2 per 1 minute")
    assert_throttled(admin.reject(third, "No"), "2 per 1 minute")
    assert checkpoint_status(app, third) == "PENDING"
    assert second_admin.approve(third).status_code == 200
