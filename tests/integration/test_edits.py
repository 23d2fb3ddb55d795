"""An approver's edited data is checked against what the checkpoint's step accepts: a bad
edit is a 422 naming the field, and nothing changes; a job that an edit approved before
these checks failed can be retried from the proposal as it was."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from tests.integration.admin_pages import FILES
from tests.integration.admin_pages import park

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("jobs_stay_pending")]

RECORDS = {"records": [{"name": "ada"}], "columns": ["name"]}


def state_of(app, checkpoint_id: str) -> tuple:
    """The checkpoint's status, its job's status and step, and how many decisions it has."""
    from app.extensions import db

    with app.app_context():
        return db.session.execute(
            sa.text(
                "SELECT c.status, j.status, j.current_step,"
                " (SELECT count(*) FROM decisions d WHERE d.checkpoint_id = c.id)"
                " FROM checkpoints c JOIN jobs j ON j.id = c.job_id WHERE c.id = :id"
            ),
            {"id": checkpoint_id},
        ).one()


@pytest.mark.parametrize(
    ("job_type", "data", "field", "says"),
    [
        (
            "code-generation",
            {"files": [{"path": "../../escape.txt", "content": "x"}]},
            "data.files.0.path",
            "workspace",
        ),
        ("code-generation", {"files": "x"}, "data.files", "Not a valid list."),
        ("code-generation", {"files": [{"path": "a.py"}]}, "data.files.0.content", "required"),
        ("data-processing", ["records"], "data", "Invalid input type."),
        ("data-processing", "string", "data", "Invalid input type."),
        ("data-processing", {"records": [{"a": 1}], "extra": 1}, "data.extra", "Unknown field."),
        ("data-processing", {"records": []}, "data.records", "Shorter than minimum length 1."),
    ],
)
def test_a_bad_edit_is_a_422_naming_the_field(app, user, admin, job_type, data, field, says):
    """Given a parked job, when an admin approves it with edited data its checkpoint does
    not accept, then the answer is 422 naming the field, and the checkpoint stays PENDING
    with no decision."""
    proposal = {"files": FILES} if job_type == "code-generation" else RECORDS
    checkpoint_id = park(app, user, job_type, data=proposal, input=proposal)

    response = admin.approve(checkpoint_id, data=data)

    assert response.status_code == 422, response.get_json()
    error = response.get_json()["error"]
    assert error["code"] == "validation_error"
    assert field in error["details"], error
    assert says in " ".join(error["details"][field]), error
    assert f"{field}: " in error["message"]
    assert state_of(app, checkpoint_id) == ("PENDING", "WAITING_APPROVAL", _resume(job_type), 0)


def test_a_good_edit_is_approved(app, user, admin):
    """Given a parked data-processing job, when an admin approves it with the records
    edited (and the columns sent back as shown), then it is approved with that data."""
    checkpoint_id = park(app, user, "data-processing", data=RECORDS, input=RECORDS)
    edited = {"records": [{"name": "grace"}], "columns": ["name"]}

    response = admin.approve(checkpoint_id, data=edited)

    assert response.status_code == 200, response.get_json()
    assert response.get_json()["checkpoint"]["decision"]["data"] == edited
    assert state_of(app, checkpoint_id) == ("APPROVED", "PENDING", "transform", 1)


def test_a_non_admin_with_a_bad_edit_is_told_403(app, user):
    """The role is checked before the data: a user gets 403, not 422."""
    checkpoint_id = park(app, user)

    response = user.approve(checkpoint_id, data={"files": "x"})

    assert response.status_code == 403, response.get_json()
    assert state_of(app, checkpoint_id) == ("PENDING", "WAITING_APPROVAL", "write", 0)


def test_a_job_failed_by_an_old_bad_edit_retries_from_the_proposal(app, user, admin):
    """Given a code-generation job approved with an edit that escapes its workspace (stored
    before edits were checked) and failed at `write`, when its owner retries it, then it
    goes back to `propose`, which proposes the files as they were, and the log says why."""
    from app.extensions import db

    checkpoint_id = park(app, user)
    assert admin.approve(checkpoint_id, data={"files": FILES}).status_code == 200
    with app.app_context():
        db.session.execute(
            sa.text(
                "UPDATE decisions SET data = CAST(:data AS jsonb) WHERE checkpoint_id = :id;"
                " UPDATE jobs SET status = 'FAILED', error = 'write failed'"
                " WHERE id = (SELECT job_id FROM checkpoints WHERE id = :id)"
            ),
            {"id": checkpoint_id, "data": '{"files": [{"path": "../x", "content": "x"}]}'},
        )
        db.session.commit()
    job_id = _job_of(app, checkpoint_id)

    response = user.patch(job_id, "retry")

    assert response.status_code == 200, response.get_json()
    job = response.get_json()["job"]
    assert job["status"] == "PENDING" and job["currentStep"] == "propose"
    retried = [log["message"] for log in job["logs"] if log["kind"] == "retried"]
    assert len(retried) == 1
    assert "at step propose" in retried[0]
    assert "data.files.0.path" in retried[0] and "review opens again" in retried[0]


def test_a_job_failed_after_a_good_edit_retries_at_its_step(app, user, admin):
    """Given a code-generation job approved with a valid edit and failed at `write` (a full
    disk, say), when its owner retries it, then it resumes at `write` with that edit."""
    from app.extensions import db

    checkpoint_id = park(app, user)
    assert admin.approve(checkpoint_id, data={"files": FILES[:1]}).status_code == 200
    job_id = _job_of(app, checkpoint_id)
    with app.app_context():
        db.session.execute(
            sa.text("UPDATE jobs SET status = 'FAILED', error = 'disk full' WHERE id = :id"),
            {"id": job_id},
        )
        db.session.commit()

    response = user.patch(job_id, "retry")

    assert response.status_code == 200, response.get_json()
    assert response.get_json()["job"]["currentStep"] == "write"


def _job_of(app, checkpoint_id: str) -> str:
    from app.extensions import db

    with app.app_context():
        return str(
            db.session.scalar(
                sa.text("SELECT job_id FROM checkpoints WHERE id = :id"), {"id": checkpoint_id}
            )
        )


def _resume(job_type: str) -> str:
    """The step a parked job of ``job_type`` resumes at once approved."""
    return "write" if job_type == "code-generation" else "transform"
