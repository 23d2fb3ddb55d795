"""The admin's list of pending checkpoints (GET /api/admin/agent-checkpoints): oldest
first, each with its job and owner, paged by cursor, filtered by job type. The API reads
a page in one statement; each entry must be what the documented schema makes of the same
checkpoint read through the ORM."""

from __future__ import annotations

import uuid

import pytest

from tests.integration.admin_pages import park

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("jobs_stay_pending")]

LIST = "/api/admin/agent-checkpoints"


def listed(admin, **query) -> dict:
    response = admin.request("GET", LIST, query_string=query)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def test_the_list_pages_oldest_first_with_each_job(app, admin, user):
    """Given five parked jobs of two users and two types, when an admin pages through the
    list two at a time, then the pages hold every pending checkpoint once, oldest first,
    each with its job and the job's owner, and the last page has no next cursor."""
    parked = [
        park(app, user, description="first"),
        park(app, admin, "data-processing", data={"records": [{"a": 1}]}, description="second"),
        park(app, user, description="third"),
        park(app, user, "data-processing", data={"records": [{"b": 2}]}, description="fourth"),
        park(app, admin, description="fifth"),
    ]

    seen, cursor, pages = [], None, 0
    while True:
        body = listed(admin, limit=2, **({"cursor": cursor} if cursor else {}))
        pages += 1
        seen += body["checkpoints"]
        cursor = body["nextCursor"]
        if cursor is None:
            break
    assert pages == 3
    assert [c["id"] for c in seen] == parked
    assert [c["job"]["taskDescription"] for c in seen] == [
        "first",
        "second",
        "third",
        "fourth",
        "fifth",
    ]
    assert [c["job"]["owner"] for c in seen] == ["user", "admin", "user", "user", "admin"]
    assert all(c["status"] == "PENDING" and c["decision"] is None for c in seen)
    assert all(c["job"]["status"] == "WAITING_APPROVAL" for c in seen)


def test_the_filter_keeps_one_job_type(app, admin, user):
    """Given parked jobs of two types, when an admin filters by one, then only that
    type's checkpoints are listed."""
    park(app, user)
    wanted = park(app, user, "data-processing", data={"records": [{"a": 1}]})

    body = listed(admin, jobType="data-processing")

    assert [c["id"] for c in body["checkpoints"]] == [wanted]
    assert body["nextCursor"] is None


def test_a_users_decision_is_refused_and_changes_nothing(app, admin, user):
    """Given a parked job, when a user (not an admin) approves or rejects its checkpoint,
    then each answers 403 and the checkpoint is still listed, pending, undecided."""
    checkpoint_id = park(app, user)

    for method, body in (("POST", {"reason": "mine"}), ("DELETE", {"reason": "no"})):
        response = user.request(method, f"{LIST}/{checkpoint_id}", json=body)
        assert response.status_code == 403, response.get_json()

    [entry] = listed(admin)["checkpoints"]
    assert (entry["id"], entry["status"], entry["decision"]) == (checkpoint_id, "PENDING", None)


def test_each_entry_is_the_schema_of_the_checkpoint_and_its_job(app, admin, user):
    """Given a parked job, when it is listed, then its entry is exactly what
    PendingCheckpointSchema makes of the checkpoint and its job read through the ORM (the
    documented shape, down to the timestamps), and says the admin may decide it."""
    from app.extensions import db
    from app.models import Checkpoint
    from app.schemas import PendingCheckpointSchema

    checkpoint_id = park(app, user, input={"files": [{"path": "a.py", "content": "x"}]})

    [entry] = listed(admin)["checkpoints"]
    with app.app_context():
        checkpoint = db.session.get(Checkpoint, uuid.UUID(checkpoint_id))
        expected = PendingCheckpointSchema().dump(checkpoint)
    assert entry == {**expected, "mayDecide": True}
