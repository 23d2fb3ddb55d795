"""Rate limits (``app.limits``) through the Flask test client, counted in the tests' Redis.

Each test sets small limits in the session app's config, which the limits read at every
request; ``clean_state`` empties the counters before each test.
"""

from __future__ import annotations

import re

import pytest
import sqlalchemy as sa

from tests.conftest import PASSWORD
from tests.conftest import ApiUser
from tests.conftest import give_password
from tests.integration.admin_pages import csrf_token
from tests.integration.admin_pages import park
from tests.integration.admin_pages import sign_in

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


def test_page_decisions_over_the_limit_are_a_429_page_and_other_admins_go_on(
    app, monkeypatch, client, reviewer, user, second_admin
):
    """Given RATE_LIMIT_DECISIONS of 2 a minute, when an admin decides a 3rd checkpoint on
    the admin pages, then a 429 page says how long to wait, and nothing is decided;
    another admin, signed in elsewhere, still decides."""
    monkeypatch.setitem(app.config, "RATE_LIMIT_DECISIONS", "2/minute")
    first, second, third = (park(app, user) for _ in range(3))
    token = csrf_token(client.get(f"/admin/agent-checkpoints/{first}").get_data(as_text=True))
    form = {"csrf_token": token, "reason": "No"}
    assert client.post(f"/admin/agent-checkpoints/{first}/approve", data=form).status_code == 303
    assert client.post(f"/admin/agent-checkpoints/{second}/reject", data=form).status_code == 303

    response = client.post(f"/admin/agent-checkpoints/{third}/approve", data=form)

    assert response.status_code == 429
    wait = int(response.headers["Retry-After"])
    page = response.get_data(as_text=True)
    assert "429 · Too Many Requests" in page
    assert f"Too many decisions: at most 2 per 1 minute. Retry in {wait} seconds." in page
    assert checkpoint_status(app, third) == "PENDING"
    elsewhere = app.test_client()
    sign_in(app, elsewhere, second_admin)
    token = csrf_token(elsewhere.get(f"/admin/agent-checkpoints/{third}").get_data(as_text=True))
    response = elsewhere.post(
        f"/admin/agent-checkpoints/{third}/approve", data={"csrf_token": token}
    )
    assert response.status_code == 303
    assert checkpoint_status(app, third) == "APPROVED"


def sign_in_from(client, address: str, name: str, password: str):
    token = csrf_token(client.get("/admin/login").get_data(as_text=True))
    form = {"name": name, "password": password, "csrf_token": token}
    return client.post("/admin/login", data=form, environ_base={"REMOTE_ADDR": address})


def assert_told_to_wait(response) -> None:
    """The sign-in form again, 429, saying how long to wait."""
    assert response.status_code == 429
    wait = int(response.headers["Retry-After"])
    assert 1 <= wait <= 60
    page = response.get_data(as_text=True)
    assert re.search(
        r"flash-error[^>]*>Too many sign-in attempts for this user name or from this address "
        rf"\(at most 3 per 1 minute\)\. Wait {wait} seconds, then try again\.<",
        page,
    )
    assert 'id="password"' in page


def test_sign_ins_are_throttled_per_user_name(app, monkeypatch, client, admin, user):
    """Given LOGIN_RATE_LIMIT of 3 a minute, when 3 wrong passwords for one name came from
    3 addresses, then the 4th attempt at that name is refused even with the right
    password, from a 4th address; another name still signs in."""
    monkeypatch.setitem(app.config, "LOGIN_RATE_LIMIT", "3/minute")
    give_password(app, admin)
    give_password(app, user)
    for n in range(1, 4):
        response = sign_in_from(client, f"10.0.0.{n}", admin.name, "wrong")
        assert response.status_code == 200
        assert "Wrong user name or password." in response.get_data(as_text=True)

    assert_told_to_wait(sign_in_from(client, "10.0.0.4", admin.name, PASSWORD))
    assert client.get("/admin/agent-checkpoints").status_code == 302  # not signed in
    assert sign_in_from(client, "10.0.0.4", user.name, PASSWORD).status_code == 302


def test_sign_ins_are_throttled_per_address(app, monkeypatch, client, admin):
    """Given LOGIN_RATE_LIMIT of 3 a minute, when 3 attempts at 3 names came from one
    address, then a 4th from it is refused even for the right name and password; the same
    name and password still sign in from another address."""
    monkeypatch.setitem(app.config, "LOGIN_RATE_LIMIT", "3/minute")
    give_password(app, admin)
    for name in ("root", "administrator", "ops"):
        assert sign_in_from(client, "10.0.0.9", name, "guess").status_code == 200

    assert_told_to_wait(sign_in_from(client, "10.0.0.9", admin.name, PASSWORD))
    assert sign_in_from(client, "10.0.0.10", admin.name, PASSWORD).status_code == 302
