"""The REST API against real Postgres and Redis, without a worker: jobs stay PENDING.

Bad input, auth, idempotency, listing, route errors, OpenAPI, health and metrics:
what a client sees in status codes and JSON bodies, and that a refused request
changes nothing in the database.
"""

import base64
import io
import json
import re
import uuid

import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.admin_pages import park

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("jobs_stay_pending")]

SEED_JOB_TYPES = ("simple-task", "code-generation", "data-processing")


def rows(app) -> dict[str, int]:
    """How many jobs and outbox rows the database holds."""
    from app.extensions import db
    from app.models import Job
    from app.models import Outbox

    with app.app_context():
        return {
            "jobs": db.session.scalar(sa.select(sa.func.count()).select_from(Job)),
            "outbox": db.session.scalar(sa.select(sa.func.count()).select_from(Outbox)),
        }


def error_of(response, status: int) -> dict:
    """The error of an error response with ``status``, checking the error body's shape."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.is_json, response.get_data(as_text=True)
    body = response.get_json()
    assert body["success"] is False, body
    assert set(body["error"]) == {"code", "message", "details"}, body
    assert body["error"]["code"] and body["error"]["message"], body
    return body["error"]


def parked_job(app, checkpoint_id: str) -> str:
    """The id of the job the checkpoint belongs to."""
    from app.extensions import db
    from app.models import Checkpoint

    with app.app_context():
        return str(db.session.get(Checkpoint, uuid.UUID(checkpoint_id)).job_id)


def valid_job(**changes) -> dict:
    body = {
        "jobType": "simple-task",
        "taskDescription": "say hello",
        "inputData": {"test": "data"},
        "priority": 5,
    }
    body.update(changes)
    return {k: v for k, v in body.items() if v is not ...}


def nested(depth: int) -> dict:
    """``{"a": {"a": ... {}}}``, ``depth`` levels deep."""
    value: dict = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


# -- Bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "names"),
    [
        pytest.param(valid_job(jobType=...), 422, ["jobType"], id="missing-jobType"),
        pytest.param(
            valid_job(taskDescription=...), 422, ["taskDescription"], id="missing-taskDescription"
        ),
        pytest.param(valid_job(foo="bar"), 422, ["foo"], id="unknown-field"),
        pytest.param(valid_job(priority="5"), 422, ["priority"], id="priority-string"),
        pytest.param(valid_job(priority=5.5), 422, ["priority"], id="priority-float"),
        pytest.param(valid_job(priority=True), 422, ["priority"], id="priority-bool"),
        pytest.param(valid_job(priority=-1), 422, ["priority"], id="priority-below-0"),
        pytest.param(valid_job(priority=11), 422, ["priority"], id="priority-above-10"),
        pytest.param(valid_job(inputData=[1, 2]), 422, ["inputData"], id="inputData-list"),
        pytest.param(valid_job(taskDescription=42), 422, ["taskDescription"], id="desc-number"),
        pytest.param(valid_job(taskDescription=""), 422, ["taskDescription"], id="desc-empty"),
        pytest.param(
            valid_job(jobType="no-such-type"),
            422,
            ["jobType", "no-such-type", *SEED_JOB_TYPES],
            id="unknown-jobType",
        ),
        pytest.param(
            valid_job(jobType="code-generation", inputData={}),
            422,
            ["inputData.files"],
            id="code-generation-no-files",
        ),
        pytest.param(
            valid_job(jobType="code-generation", inputData={"files": [{"path": "a.py"}]}),
            422,
            ["inputData.files.0.content"],
            id="code-generation-file-without-content",
        ),
        *[
            pytest.param(
                valid_job(jobType="code-generation", inputData={"files": [{"path": path}]}),
                422,
                ["inputData.files.0.path", says],
                id=f"code-generation-path-{name}",
            )
            for name, path, says in [
                ("dot", ".", "must name a file"),
                ("dot-slash", "./", "must name a file"),
                ("parent", "../escape.txt", "stay inside the workspace"),
                ("name-over-255-bytes", "a/" + "x" * 256, "longer than 255 bytes"),
            ]
        ],
        pytest.param([valid_job()], 422, [], id="body-is-a-list"),
        # Postgres text and jsonb hold no NUL characters and no unpaired surrogates.
        pytest.param(
            valid_job(taskDescription="a\x00b"), 422, ["taskDescription"], id="desc-with-NUL"
        ),
        pytest.param(
            valid_job(taskDescription="a\ud800b"),
            422,
            ["taskDescription"],
            id="desc-with-lone-surrogate",
        ),
        pytest.param(
            valid_job(inputData={"a": ["b\x00"]}), 422, ["inputData"], id="input-value-with-NUL"
        ),
        pytest.param(
            valid_job(inputData={"a\x00": 1}), 422, ["inputData"], id="input-key-with-NUL"
        ),
        pytest.param(
            valid_job(inputData={"a": "\udfff"}),
            422,
            ["inputData"],
            id="input-with-lone-surrogate",
        ),
        # ~930 levels parse but then overflow json.dumps in the jsonb insert (a 500): the
        # schema caps the nesting far below that.
        pytest.param(valid_job(inputData=nested(200)), 422, ["inputData"], id="input-too-deep"),
    ],
)
def test_bad_job_input_is_refused_naming_the_field(app, user, body, status, names):
    """Given a user, when they POST an invalid job, then they get a 4xx whose message
    names the offending field, and no job or dispatch intent is written."""
    response = user.request("POST", "/api/agent-jobs", json=body)

    error = error_of(response, status)
    for name in names:
        assert name in error["message"], error
    assert rows(app) == {"jobs": 0, "outbox": 0}


@pytest.mark.parametrize(
    "literal",
    ["NaN", "Infinity", "-Infinity", "1e400"],
)
def test_a_number_json_cannot_store_is_a_422_naming_where_it_is(app, user, literal):
    """Given a user, when they POST inputData holding NaN, an infinity or a number too
    large for a double (Python's JSON reads them, Postgres's jsonb does not), then they get
    422 naming the value's place in inputData, and nothing is written."""
    body = '{"jobType": "simple-task", "taskDescription": "x", "inputData": {"n": [1, %s]}}'

    response = user.request(
        "POST", "/api/agent-jobs", data=body % literal, content_type="application/json"
    )

    assert "inputData.n.1" in error_of(response, 422)["message"]
    assert rows(app) == {"jobs": 0, "outbox": 0}


def test_an_integer_longer_than_python_reads_is_a_400(app, user):
    """Given a user, when they POST an integer of 5,000 digits (beyond the digits Python
    converts), then they get 400 Invalid JSON, not a 500, and nothing is written."""
    body = '{"jobType": "simple-task", "taskDescription": "x", "inputData": {"n": 1%s}}'

    response = user.request(
        "POST", "/api/agent-jobs", data=body % ("0" * 5000), content_type="application/json"
    )

    assert "json" in error_of(response, 400)["message"].lower()
    assert rows(app) == {"jobs": 0, "outbox": 0}


@pytest.mark.parametrize(
    ("method", "path", "body", "content_type"),
    [
        (
            "POST",
            "/api/agent-jobs",
            "jobType=simple-task&taskDescription=x",
            "application/x-www-form-urlencoded",
        ),
        ("POST", "/api/agent-jobs", '{"jobType": "simple-task"}', "text/plain"),
        ("POST", "/api/agent-jobs", '{"jobType": "simple-task"}', None),
        ("DELETE", f"/api/admin/agent-checkpoints/{uuid.uuid4()}", "reason=no", "text/plain"),
        ("PATCH", f"/api/agent-jobs/{uuid.uuid4()}", "action=cancel", "multipart/form-data"),
    ],
    ids=["form", "text", "no-content-type", "reject-text", "patch-multipart"],
)
def test_a_body_that_is_not_json_is_a_415_asking_for_json(
    app, admin, method, path, body, content_type
):
    """Given an admin, when they send a body to a JSON endpoint with a Content-Type that
    is not JSON (or none), then they get 415 telling them to send JSON, not a 422 about
    missing fields, and nothing is written."""
    headers = {"Content-Type": content_type} if content_type else {}

    response = admin.request(method, path, data=body, headers=headers)

    error = error_of(response, 415)
    assert "application/json" in error["message"], error
    assert rows(app) == {"jobs": 0, "outbox": 0}


@pytest.mark.parametrize("literal", ["NaN", "-Infinity", "1e400"])
def test_approval_data_json_cannot_store_is_a_422_and_decides_nothing(app, user, admin, literal):
    """Given a pending checkpoint, when an admin approves it with data holding a number
    Postgres's jsonb cannot store, then they get 422 naming its place in data, and the
    checkpoint stays pending with no decision."""
    checkpoint_id = park(app, user)
    body = '{"data": {"files": [{"path": "a.py", "content": "", "size": SIZE}]}}'

    response = admin.request(
        "POST",
        f"/api/admin/agent-checkpoints/{checkpoint_id}",
        data=body.replace("SIZE", literal),
        content_type="application/json",
    )

    assert "data.files.0.size" in error_of(response, 422)["message"]
    checkpoint = user.request("GET", f"/api/agent-jobs/{parked_job(app, checkpoint_id)}")
    [stored] = checkpoint.get_json()["job"]["checkpoints"]
    assert (stored["status"], stored["decision"]) == ("PENDING", None)


@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [
        ("POST", "", {}),
        ("DELETE", "", {"reason": "no"}),
        ("POST", "/request-changes", {"feedback": "again"}),
    ],
)
def test_a_version_past_what_postgres_stores_is_a_422_naming_version(
    app, user, admin, method, suffix, body
):
    """Given a pending checkpoint, when an admin approves, rejects or requests changes naming
    a version larger than a Postgres integer (which once reached the database: a 500), then
    they get 422 naming ``version``, and the checkpoint stays pending with no decision."""
    checkpoint_id = park(app, user)

    response = admin.request(
        method,
        f"/api/admin/agent-checkpoints/{checkpoint_id}{suffix}",
        json={**body, "version": 2**31},
    )

    assert list(error_of(response, 422)["details"]) == ["version"]
    checkpoint = user.request("GET", f"/api/agent-jobs/{parked_job(app, checkpoint_id)}")
    [stored] = checkpoint.get_json()["job"]["checkpoints"]
    assert (stored["status"], stored["decision"]) == ("PENDING", None)


def test_malformed_json_is_a_400(app, user):
    """Given a user, when they POST a truncated JSON document, then they get 400 with
    the error body, and nothing is written."""
    response = user.request(
        "POST", "/api/agent-jobs", data='{"jobType": ', content_type="application/json"
    )

    error = error_of(response, 400)
    assert "json" in error["message"].lower(), error
    assert rows(app) == {"jobs": 0, "outbox": 0}


def test_body_over_the_limit_is_a_413(app, user):
    """Given the configured body limit, when a user POSTs a valid job larger than it,
    then they get 413 with the error body, and nothing is written."""
    limit = app.config["MAX_CONTENT_LENGTH"]
    body = valid_job(inputData={"blob": "x" * (limit + 1)})

    response = user.request("POST", "/api/agent-jobs", json=body)

    assert f"{limit} bytes" in error_of(response, 413)["message"]
    assert rows(app) == {"jobs": 0, "outbox": 0}


def test_a_chunked_body_over_the_limit_is_a_413(app, user):
    """Given the configured body limit, when a user POSTs a valid job larger than it as
    a chunked body (no Content-Length, as gunicorn passes it on), then they get 413
    saying the limit, not 400 about a JSON body cut at the limit, and nothing is
    written."""
    limit = app.config["MAX_CONTENT_LENGTH"]
    body = json.dumps(valid_job(inputData={"blob": "x" * (limit + 1)})).encode()

    response = user.request(
        "POST",
        "/api/agent-jobs",
        input_stream=io.BytesIO(body),
        headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )

    assert f"{limit} bytes" in error_of(response, 413)["message"]
    assert rows(app) == {"jobs": 0, "outbox": 0}


def test_a_chunked_body_within_the_limit_is_read_whole(app, user):
    """Given a chunked body (no Content-Length) under the limit, when a user POSTs a
    valid job with it, then the job is created."""
    body = json.dumps(valid_job(inputData={"blob": "x" * 1000})).encode()

    response = user.request(
        "POST",
        "/api/agent-jobs",
        input_stream=io.BytesIO(body),
        headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )

    assert response.status_code == 201, response.get_json()
    assert response.get_json()["job"]["inputData"] == {"blob": "x" * 1000}


def test_json_nested_deeper_than_the_parser_goes_is_a_400(app, user):
    """Given a user, when they POST a JSON body nested thousands of levels deep, then
    they get 400 with the error body (not a 500), and nothing is written."""
    body = '{"jobType": "simple-task", "taskDescription": "x", "inputData": '
    body += '{"a": ' * 5000 + "{}" + "}" * 5001

    response = user.request("POST", "/api/agent-jobs", data=body, content_type="application/json")

    error_of(response, 400)
    assert rows(app) == {"jobs": 0, "outbox": 0}


# -- Auth -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer aq_not-a-real-token", "Bearer ", "Basic dXNlcjpwYXNz"],
    ids=["no-token", "garbage-token", "empty-token", "basic-auth"],
)
def test_requests_without_a_valid_token_are_401(app, client, authorization):
    """Given no valid bearer token, when a client lists or enqueues jobs, then both
    answer 401 with the error body, and no job is written."""
    headers = {"Authorization": authorization} if authorization else {}

    listed = client.get("/api/agent-jobs", headers=headers)
    posted = client.post("/api/agent-jobs", json=valid_job(), headers=headers)

    assert error_of(listed, 401)["code"] == "unauthorized"
    assert error_of(posted, 401)["code"] == "unauthorized"
    assert rows(app) == {"jobs": 0, "outbox": 0}


def test_another_users_job_looks_like_a_job_that_does_not_exist(user, other_user):
    """Given a job of another user, when a user GETs, PATCHes or lists its checkpoints,
    then each answers 404 exactly as for a job id that does not exist, and the job is
    left as it was."""
    job = other_user.enqueue("simple-task", {"test": "data"})
    missing = str(uuid.uuid4())

    for method, suffix, body in [
        ("GET", "", None),
        ("PATCH", "", {"action": "cancel"}),
        ("GET", "/checkpoints", None),
    ]:
        theirs = user.request(method, f"/api/agent-jobs/{job['id']}{suffix}", json=body)
        nobodys = user.request(method, f"/api/agent-jobs/{missing}{suffix}", json=body)
        theirs_error = error_of(theirs, 404)
        nobodys_error = error_of(nobodys, 404)
        assert theirs_error == {
            **nobodys_error,
            "message": nobodys_error["message"].replace(missing, job["id"]),
        }, (method, suffix)

    assert other_user.job(job["id"])["status"] == "PENDING"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/admin/agent-checkpoints"),
        ("POST", "/api/admin/agent-checkpoints/{cp}"),
        ("DELETE", "/api/admin/agent-checkpoints/{cp}"),
        ("GET", "/api/admin/agent-worker"),
        ("POST", "/api/admin/agent-worker"),
        ("DELETE", "/api/admin/agent-worker"),
    ],
)
def test_admin_endpoints_are_403_for_a_user(user, method, path):
    """Given a user (not an admin), when they call an admin endpoint, then it answers
    403 with the error body."""
    response = user.request(method, path.format(cp=uuid.uuid4()), json={"reason": "because"})

    assert error_of(response, 403)["code"] == "forbidden"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/agent-jobs", {"jobType": "no-such-type"}),
        ("POST", "/api/admin/agent-checkpoints/{cp}", {"reason": 5}),
        ("DELETE", "/api/admin/agent-checkpoints/{cp}", {}),
    ],
)
def test_a_bad_token_is_told_before_a_bad_body(client, method, path, body):
    """Given a token nobody holds, when it comes with a body that is wrong too (to the
    endpoints whose write checks the token itself), then the answer is 401, not what is
    wrong with the body."""
    response = client.open(
        path.format(cp=uuid.uuid4()),
        method=method,
        json=body,
        headers={"Authorization": "Bearer aq_nobody"},
    )

    assert error_of(response, 401)["message"] == "Invalid or revoked token"


def test_a_user_is_told_403_before_a_bad_body_on_a_decision(user):
    """Given a user (not an admin), when they reject a checkpoint without the reason a
    rejection needs, then the answer is 403, not 422."""
    response = user.request("DELETE", f"/api/admin/agent-checkpoints/{uuid.uuid4()}", json={})

    assert error_of(response, 403)["code"] == "forbidden"


def test_a_users_pause_is_refused_and_does_not_pause_the_fleet(user, admin):
    """Given a user, when they try to pause the fleet, then they get 403 and the admin
    sees the fleet not paused."""
    error_of(user.request("DELETE", "/api/admin/agent-worker"), 403)

    fleet = admin.request("GET", "/api/admin/agent-worker")

    assert fleet.status_code == 200, fleet.get_json()
    assert fleet.get_json()["worker"]["paused"] is False


def test_a_revoked_token_is_refused_on_the_next_request(app, user):
    """Given a user with a second token that works, when that token is revoked, then
    the very next request with it answers 401, while the user's other token works."""
    from app.auth import create_token
    from app.auth import revoke_token
    from app.extensions import db
    from app.models import User

    with app.app_context():
        row, token = create_token(db.session.get(User, user.id))
        token_id = row.id
    headers = {"Authorization": f"Bearer {token}"}
    assert user.client.get("/api/agent-jobs", headers=headers).status_code == 200

    with app.app_context():
        revoke_token(token_id)

    error = error_of(user.client.get("/api/agent-jobs", headers=headers), 401)
    assert "revoked" in error["message"], error
    assert user.request("GET", "/api/agent-jobs").status_code == 200


def test_an_admin_lists_every_users_jobs_and_a_user_only_their_own(user, other_user, admin):
    """Given jobs of two users and an admin, when each lists jobs, then each user sees
    only their own and the admin sees all of them."""
    mine = {user.enqueue("simple-task", description=f"mine {i}")["id"] for i in range(2)}
    theirs = {other_user.enqueue("simple-task", description="theirs")["id"]}
    admins = {admin.enqueue("simple-task", description="admin's")["id"]}

    def listed(who) -> set[str]:
        response = who.request("GET", "/api/agent-jobs")
        assert response.status_code == 200, response.get_json()
        return {j["id"] for j in response.get_json()["jobs"]}

    assert listed(user) == mine
    assert listed(other_user) == theirs
    assert listed(admin) == mine | theirs | admins


# -- Idempotency-Key ------------------------------------------------------------------------


def test_the_same_idempotency_key_and_body_return_the_same_job(app, user):
    """Given a POST with an Idempotency-Key, when the client sends it again, then both
    answer 201 with the same job and only one job exists."""
    headers = {"Idempotency-Key": "order-42"}

    first = user.request("POST", "/api/agent-jobs", json=valid_job(), headers=headers)
    again = user.request("POST", "/api/agent-jobs", json=valid_job(), headers=headers)

    assert first.status_code == 201, first.get_json()
    assert again.status_code == 201, again.get_json()
    assert again.get_json()["job"]["id"] == first.get_json()["job"]["id"]
    counts = rows(app)
    assert counts["jobs"] == 1
    assert counts["outbox"] <= 1


@pytest.mark.parametrize(
    "changes",
    [
        {"taskDescription": "something else"},
        {"priority": 6},
        {"inputData": {"test": "other"}},
        {"jobType": "data-processing", "inputData": {"records": [{"a": 1}]}},
    ],
    ids=["description", "priority", "inputData", "jobType"],
)
def test_an_idempotency_key_reused_for_another_request_is_a_409(app, user, changes):
    """Given a job made with an Idempotency-Key, when the key is sent with a different
    body, then it answers 409 naming the first job, and no second job is made."""
    headers = {"Idempotency-Key": "order-42"}
    first = user.request("POST", "/api/agent-jobs", json=valid_job(), headers=headers)
    assert first.status_code == 201, first.get_json()

    other = user.request("POST", "/api/agent-jobs", json=valid_job(**changes), headers=headers)

    error = error_of(other, 409)
    assert "Idempotency-Key" in error["message"], error
    assert error["details"] == {"jobId": first.get_json()["job"]["id"]}
    assert rows(app)["jobs"] == 1


def test_an_idempotency_key_longer_than_200_characters_is_a_422(app, user):
    """Given a user, when they POST with an Idempotency-Key of 201 characters, then it
    answers 422 naming Idempotency-Key and writes nothing; 200 characters are accepted."""
    too_long = user.request(
        "POST", "/api/agent-jobs", json=valid_job(), headers={"Idempotency-Key": "k" * 201}
    )
    longest = user.request(
        "POST", "/api/agent-jobs", json=valid_job(), headers={"Idempotency-Key": "k" * 200}
    )

    assert "Idempotency-Key" in error_of(too_long, 422)["message"]
    assert longest.status_code == 201, longest.get_json()
    assert rows(app)["jobs"] == 1


def test_different_users_may_use_the_same_idempotency_key(app, user, other_user):
    """Given two users, when each POSTs with the same Idempotency-Key, then each gets
    their own job."""
    headers = {"Idempotency-Key": "order-42"}

    mine = user.request("POST", "/api/agent-jobs", json=valid_job(), headers=headers)
    theirs = other_user.request("POST", "/api/agent-jobs", json=valid_job(), headers=headers)

    assert mine.status_code == 201, mine.get_json()
    assert theirs.status_code == 201, theirs.get_json()
    assert mine.get_json()["job"]["id"] != theirs.get_json()["job"]["id"]
    assert other_user.job(theirs.get_json()["job"]["id"])["owner"] == other_user.name
    assert rows(app)["jobs"] == 2


# -- Listing --------------------------------------------------------------------------------


def test_job_list_pages_newest_first_without_gaps_or_duplicates(user):
    """Given five jobs, when the user pages through them two at a time, then the pages
    hold 2, 2 and 1 jobs, newest first, each job once, and the last page has no cursor."""
    made = [user.enqueue("simple-task", description=f"job {i}")["id"] for i in range(5)]

    pages = []
    cursor = None
    for _ in range(5):
        query = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        response = user.request("GET", "/api/agent-jobs", query_string=query)
        assert response.status_code == 200, response.get_json()
        body = response.get_json()
        pages.append([j["id"] for j in body["jobs"]])
        cursor = body["nextCursor"]
        if cursor is None:
            break

    assert [len(p) for p in pages] == [2, 2, 1]
    assert [job_id for page in pages for job_id in page] == made[::-1]


def test_job_list_filters_by_status_and_job_type(user):
    """Given PENDING and CANCELLED jobs of two types, when the user filters by status or
    by jobType, then only the matching jobs are listed."""
    simple = user.enqueue("simple-task")["id"]
    cancelled = user.enqueue("simple-task")["id"]
    data = user.enqueue("data-processing", {"records": [{"a": 1}]})["id"]
    assert user.patch(cancelled, "cancel").status_code == 200

    def listed(**query) -> list[str]:
        response = user.request("GET", "/api/agent-jobs", query_string=query)
        assert response.status_code == 200, response.get_json()
        return [j["id"] for j in response.get_json()["jobs"]]

    assert listed(status="PENDING") == [data, simple]
    assert listed(status="CANCELLED") == [cancelled]
    assert listed(status="COMPLETED") == []
    assert listed(jobType="data-processing") == [data]
    assert listed(jobType="simple-task") == [cancelled, simple]
    assert listed(jobType="simple-task", status="PENDING") == [simple]


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "garbage",
        "!!!",
        _b64("5"),
        _b64('["yesterday", "not-a-uuid"]'),
        _b64(f'["2024-01-01T00:00:00+00:00", "{uuid.uuid4()}", "extra"]'),
        _b64('["2024-01-01T00:00:00+00:00", null]'),
    ],
    ids=["not-base64-json", "bad-chars", "a-number", "bad-values", "three-items", "null-id"],
)
def test_an_invalid_cursor_is_a_422_naming_cursor(user, cursor):
    """Given a cursor this API did not make, when the user lists jobs with it, then it
    answers 422 naming cursor."""
    user.enqueue("simple-task")

    response = user.request("GET", "/api/agent-jobs", query_string={"cursor": cursor})

    assert "cursor" in error_of(response, 422)["message"]


@pytest.mark.parametrize(
    ("query", "name"),
    [
        ({"status": "DONE"}, "status"),
        ({"status": "pending"}, "status"),
        ({"limit": 0}, "limit"),
        ({"limit": 201}, "limit"),
        ({"limit": "many"}, "limit"),
    ],
)
def test_an_invalid_list_filter_is_a_422_naming_it(user, query, name):
    """Given a user, when they list jobs with an invalid filter, then it answers 422
    naming the parameter."""
    response = user.request("GET", "/api/agent-jobs", query_string=query)

    assert name in error_of(response, 422)["message"]


@pytest.mark.parametrize(
    "path", ["/api/agent-jobs", "/api/admin/agent-checkpoints"], ids=["jobs", "checkpoints"]
)
def test_a_job_type_filter_with_a_nul_character_is_a_422(admin, path):
    """Given an admin, when they filter a list by a jobType holding a NUL character,
    then it answers 422 naming jobType, not a 500."""
    response = admin.request("GET", path, query_string={"jobType": "simple\x00task"})

    assert "jobType" in error_of(response, 422)["message"]


# -- Route errors ---------------------------------------------------------------------------


def test_an_unknown_path_is_a_json_404(client):
    """Given no route /api/nope, when a client GETs it, then it answers 404 with the
    JSON error body."""
    assert error_of(client.get("/api/nope"), 404)["code"] == "not_found"


def test_a_method_not_allowed_is_a_json_405_with_allow(user):
    """Given the jobs collection, when a client DELETEs it, then it answers 405 with
    the error body and an Allow header listing GET and POST."""
    response = user.request("DELETE", "/api/agent-jobs")

    error_of(response, 405)
    allowed = {m.strip() for m in response.headers["Allow"].split(",")}
    assert {"GET", "POST"} <= allowed
    assert "DELETE" not in allowed


def test_a_job_id_that_is_not_a_uuid_is_a_404(user):
    """Given a user, when they GET /api/agent-jobs/not-a-uuid, then it answers 404 with
    the error body."""
    error_of(user.request("GET", "/api/agent-jobs/not-a-uuid"), 404)


# -- OpenAPI --------------------------------------------------------------------------------


def test_the_openapi_document_lists_every_endpoint(client):
    """Given the app, when a client fetches /api/openapi.json, then it is an OpenAPI 3
    document with the paths of the jobs, checkpoints, fleet and health endpoints."""
    response = client.get("/api/openapi.json")

    assert response.status_code == 200
    spec = response.get_json()
    assert spec["openapi"].startswith("3.")
    assert {
        "/api/agent-jobs",
        "/api/agent-jobs/{job_id}",
        "/api/agent-jobs/{job_id}/checkpoints",
        "/api/admin/agent-checkpoints",
        "/api/admin/agent-checkpoints/{checkpoint_id}",
        "/api/admin/agent-worker",
        "/api/health",
        "/api/ready",
    } <= set(spec["paths"])
    assert {"get", "post"} <= set(spec["paths"]["/api/agent-jobs"])
    assert {"get", "patch"} <= set(spec["paths"]["/api/agent-jobs/{job_id}"])
    responses = spec["paths"]["/api/agent-jobs"]["post"]["responses"]
    assert {"413", "415", "422", "503"} <= set(responses)
    unavailable = spec["components"]["responses"][responses["503"]["$ref"].rsplit("/", 1)[1]]
    assert "Retry-After" in unavailable["headers"]
    assert "503" not in spec["paths"]["/api/health"]["get"]["responses"]


def test_the_docs_page_loads_its_assets_from_the_app(client):
    """Given the app, when a client opens /api/docs, then it is an HTML page whose
    scripts and stylesheets are served from /api/docs/static/ by the app (no CDN)."""
    response = client.get("/api/docs")

    assert response.status_code == 200
    assert response.mimetype == "text/html"
    html = response.get_data(as_text=True)
    assets = re.findall(r'(?:src|href)="([^"]+\.(?:js|css))"', html)
    assert assets, html
    assert all(a.startswith("/api/docs/static/") for a in assets), assets
    names = {a.rsplit("/", 1)[1] for a in assets}
    assert {"swagger-ui-bundle.js", "swagger-ui.css"} <= names
    for asset in assets:
        served = client.get(asset)
        try:
            assert served.status_code == 200, asset
            assert len(served.get_data()) > 1000, asset
        finally:
            served.close()


# -- Health ---------------------------------------------------------------------------------


def test_health_and_ready_answer_ok(client):
    """Given Postgres migrated and Redis up, when a client probes /api/health and
    /api/ready, then both answer 200 and every readiness check is "ok"."""
    health = client.get("/api/health")
    ready = client.get("/api/ready")

    assert health.status_code == 200
    assert health.get_json()["status"] == "ok"
    assert ready.status_code == 200, ready.get_json()
    assert ready.get_json()["checks"] == {"database": "ok", "migrations": "ok", "broker": "ok"}


# -- Metrics --------------------------------------------------------------------------------


def scrape(client) -> dict:
    """The metric families of /api/metrics by name."""
    response = client.get("/api/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    return {f.name: f for f in text_string_to_metric_families(response.get_data(as_text=True))}


def test_metrics_count_jobs_by_status(client, user):
    """Given three enqueued jobs, when Prometheus scrapes /api/metrics, then it sees three
    PENDING jobs, no pending checkpoint and no active job, with the guide's help texts."""
    for _ in range(3):
        user.enqueue("simple-task")

    families = scrape(client)

    jobs = families["agent_jobs_total"]
    assert jobs.documentation == "Total number of agent jobs by status"
    by_status = {s.labels["status"]: s.value for s in jobs.samples}
    assert by_status["PENDING"] == 3
    assert by_status["RUNNING"] == 0
    assert by_status["COMPLETED"] == 0
    pending = families["agent_checkpoints_pending"]
    assert pending.documentation == "Number of pending checkpoints"
    assert [s.value for s in pending.samples] == [0]
    active = families["agent_worker_active_jobs"]
    assert active.documentation == "Currently active jobs"
    assert [s.value for s in active.samples] == [0]


def test_metrics_follow_a_cancel(client, user):
    """Given two PENDING jobs, when one is cancelled, then the next scrape counts one
    PENDING and one CANCELLED."""
    first = user.enqueue("simple-task")["id"]
    user.enqueue("simple-task")
    assert user.patch(first, "cancel").status_code == 200

    jobs = scrape(client)["agent_jobs_total"]

    by_status = {s.labels["status"]: s.value for s in jobs.samples}
    assert (by_status["PENDING"], by_status["CANCELLED"]) == (1, 1)


# -- Actions --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [{"action": "explode"}, {"action": "Cancel"}, {}, {"action": 1}],
    ids=["unknown", "capitalised", "missing", "a-number"],
)
def test_an_unknown_action_is_a_422_naming_action(user, body):
    """Given a PENDING job, when the owner PATCHes it with an invalid action, then it
    answers 422 naming action, and the job stays PENDING."""
    job = user.enqueue("simple-task")

    response = user.request("PATCH", f"/api/agent-jobs/{job['id']}", json=body)

    assert "action" in error_of(response, 422)["message"]
    assert user.job(job["id"])["status"] == "PENDING"


def test_cancelling_twice_is_a_409(app, user):
    """Given a PENDING job, when the owner cancels it twice, then the first answers 200
    with the job CANCELLED, the second 409, and the job stays CANCELLED with no
    dispatch intent left."""
    job = user.enqueue("simple-task")

    first = user.patch(job["id"], "cancel")
    second = user.patch(job["id"], "cancel")

    assert first.status_code == 200, first.get_json()
    assert first.get_json()["job"]["status"] == "CANCELLED"
    assert error_of(second, 409)["code"] == "invalid_transition"
    assert user.job(job["id"])["status"] == "CANCELLED"
    assert rows(app)["outbox"] == 0


def test_retrying_a_pending_job_is_a_409(user):
    """Given a PENDING job, when the owner asks to retry it, then it answers 409 and the
    job stays PENDING."""
    job = user.enqueue("simple-task")

    response = user.patch(job["id"], "retry")

    assert error_of(response, 409)["code"] == "invalid_transition"
    assert user.job(job["id"])["status"] == "PENDING"


def test_a_cancelled_job_can_be_retried(user):
    """Given a cancelled job, when the owner retries it, then it answers 200 with the job
    PENDING again at the step where it stopped, and the log says it was retried."""
    job = user.enqueue("simple-task")
    assert user.patch(job["id"], "cancel").status_code == 200

    response = user.patch(job["id"], "retry")

    assert response.status_code == 200, response.get_json()
    retried = response.get_json()["job"]
    assert retried["status"] == "PENDING"
    assert retried["currentStep"] == job["currentStep"]
    assert [log["kind"] for log in retried["logs"]][-1] == "retried"


def test_fleet_status_says_when_no_worker_answers(admin):
    """Given no worker running, when an admin asks for the fleet, then the answer says
    that no worker answered, within the configured timeout, and still counts the jobs."""
    admin.enqueue("simple-task")

    response = admin.request("GET", "/api/admin/agent-worker")

    assert response.status_code == 200
    body = response.get_json()
    assert body["worker"]["isRunning"] is False
    assert body["worker"]["message"] == "no worker answered within 1s"
    assert body["workers"] == []
    assert body["jobs"]["pending"] == 1
