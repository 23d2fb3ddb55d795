"""With Postgres unavailable: 503 with Retry-After, never a generic 500.

The session's Postgres keeps running for the other tests: each test here builds an
app of its own, pointed at a port where nothing listens, or with a pool of one
connection that the test holds, or with a connection the test kills after the
view's commit.
"""

from __future__ import annotations

import socket

import pytest
import sqlalchemy as sa

from tests.integration.admin_pages import csrf_token
from tests.integration.admin_pages import park

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("jobs_stay_pending")]


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def app_without_database(servers):
    from app import create_app

    url = f"postgresql+psycopg2://postgres@127.0.0.1:{closed_port()}/agentq"
    return create_app({"TESTING": True, "HTTP_METRICS": False, "SQLALCHEMY_DATABASE_URI": url})


def unavailable(response) -> dict:
    """The error of a 503 answer, checking the error body and its Retry-After."""
    assert response.status_code == 503, response.get_data(as_text=True)
    assert int(response.headers["Retry-After"]) > 0
    body = response.get_json()
    assert body["success"] is False and body["error"]["code"] == "database_unavailable"
    assert "database is unavailable" in body["error"]["message"]
    return body["error"]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/api/agent-jobs", None),
        ("POST", "/api/agent-jobs", {"jobType": "simple-task", "taskDescription": "x"}),
        ("GET", "/api/agent-jobs/00000000-0000-0000-0000-000000000000", None),
        ("GET", "/api/admin/agent-checkpoints", None),
        ("POST", "/api/admin/agent-checkpoints/00000000-0000-0000-0000-000000000000", {}),
    ],
    ids=["list", "enqueue", "show", "pending", "approve"],
)
def test_the_api_answers_503_with_retry_after_when_postgres_refuses(
    app_without_database, admin, method, path, body
):
    """Given an app whose Postgres refuses connections, when a client calls an endpoint
    that reads the database, then it answers 503 with Retry-After and a message saying
    the database is unavailable."""
    client = app_without_database.test_client()

    response = client.open(path, method=method, json=body, headers=admin.headers())

    unavailable(response)


def test_the_admin_pages_answer_a_503_page_when_postgres_refuses(app_without_database):
    """Given an app whose Postgres refuses connections, when someone signs in to the
    admin pages, then they get a 503 page saying the database is unavailable."""
    client = app_without_database.test_client()
    token = csrf_token(client.get("/admin/login").get_data(as_text=True))

    response = client.post(
        "/admin/login", data={"name": "admin", "password": "x", "csrf_token": token}
    )

    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) > 0
    assert "database is unavailable" in response.get_data(as_text=True)


def test_a_pool_with_no_free_connection_answers_503(servers, admin):
    """Given an app whose only pooled connection is taken, when a client lists jobs,
    then the pool's timeout answers 503 with Retry-After, not a 500."""
    from app import create_app
    from app.extensions import db

    busy = create_app(
        {
            "TESTING": True,
            "HTTP_METRICS": False,
            "SQLALCHEMY_ENGINE_OPTIONS": {"pool_size": 1, "max_overflow": 0, "pool_timeout": 0.2},
        }
    )
    with busy.app_context(), db.engine.connect():
        response = busy.test_client().get("/api/agent-jobs", headers=admin.headers())

    unavailable(response)


def test_a_connection_lost_after_the_commit_does_not_undo_the_answer(app, servers, user, admin):
    """Given an approval whose request's connection is killed after the decision
    committed (before the session's teardown rolls it back), when the admin approves,
    then they get the 200 of the committed approval, not an error."""
    from app import create_app
    from app.extensions import db

    checkpoint_id = park(app, user)
    fragile = create_app({"TESTING": True, "HTTP_METRICS": False})

    @fragile.after_request
    def lose_the_connection(response):
        pid = db.session.scalar(sa.text("SELECT pg_backend_pid()"))
        with sa.create_engine(db.engine.url).connect() as other:
            other.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        return response

    response = fragile.test_client().post(
        f"/api/admin/agent-checkpoints/{checkpoint_id}", json={}, headers=admin.headers()
    )

    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["checkpoint"]["status"] == "APPROVED"
