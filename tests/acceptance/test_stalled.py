"""A job whose chain's next message was lost is dispatched again by the sweep."""

from __future__ import annotations

from datetime import UTC
from datetime import datetime
from datetime import timedelta

import pytest

from app.extensions import db
from app.models import Job

pytestmark = [pytest.mark.acceptance]


def test_stalled_running_job_is_dispatched_again(app, worker, user):
    """Given a RUNNING job that nobody holds and nothing will dispatch, as a worker dying
    between a step's commit and its chain's next publish leaves it, when STALL_SECONDS
    pass, then the sweep queues its step again and the job completes."""
    with app.app_context():
        job = Job(
            user_id=user.id,
            job_type="simple-task",
            task_description="lost between two steps",
            input_data={"a": 1},
            priority=5,
            status="RUNNING",
            current_step="run",
            updated_at=datetime.now(UTC) - timedelta(minutes=10),
        )
        db.session.add(job)
        db.session.commit()
        job_id = str(job.id)

    done = user.wait_for(job_id, "COMPLETED", "FAILED")

    assert done["status"] == "COMPLETED"
    assert [s["step"] for s in done["steps"]] == ["run"]
    assert any(
        log["kind"] == "recovered" and "not dispatched" in log["message"] for log in done["logs"]
    )
