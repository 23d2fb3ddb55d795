"""Requests that race on one job: each answers 200 or 409 (never 500), and the job ends in
the one state the winners' order allows."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from tests.integration.admin_pages import park

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("jobs_stay_pending")]

PAIRS = 20


def at_once(app, *calls) -> list[tuple[int, dict]]:
    """Run each ``call(client)`` on its own thread and test client, released together."""
    barrier = threading.Barrier(len(calls))
    results: list = [None] * len(calls)

    def run(i: int) -> None:
        client = app.test_client()
        barrier.wait()
        response = calls[i](client)
        results[i] = (response.status_code, response.get_json())

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert all(r is not None for r in results), results
    return results


def test_a_decision_racing_a_cancel_gets_200_or_409(app, user, admin):
    """Given 20 parked jobs, when an admin approves (or rejects) each checkpoint while its
    owner cancels the job at the same moment, then every request answers 200 or 409, and
    each job ends as the winners' order says: cancelled with its checkpoint cancelled
    (the decision refused), or decided and then cancelled (an approval resumed the job),
    or rejected (the cancel refused)."""
    from app.extensions import db

    parked = [park(app, user, description=f"race {i}") for i in range(PAIRS)]
    auth = {"Authorization": f"Bearer {admin.token}"}
    mine = {"Authorization": f"Bearer {user.token}"}
    for i, checkpoint_id in enumerate(parked):
        job_id = str(
            _scalar(app, "SELECT job_id FROM checkpoints WHERE id = :id", id=checkpoint_id)
        )
        approve = i % 2 == 0
        decision, cancel = at_once(
            app,
            lambda c, cid=checkpoint_id, approve=approve: c.open(
                f"/api/admin/agent-checkpoints/{cid}",
                method="POST" if approve else "DELETE",
                json={"reason": "race"},
                headers=auth,
            ),
            lambda c, jid=job_id: c.patch(
                f"/api/agent-jobs/{jid}", json={"action": "cancel"}, headers=mine
            ),
        )
        assert decision[0] in (200, 409), decision
        assert cancel[0] in (200, 409), cancel
        with app.app_context():
            job_status, checkpoint_status = db.session.execute(
                sa.text(
                    "SELECT j.status, c.status FROM jobs j JOIN checkpoints c ON c.job_id = j.id"
                    " WHERE c.id = :id"
                ),
                {"id": checkpoint_id},
            ).one()
            decisions = db.session.scalar(
                sa.text("SELECT count(*) FROM decisions WHERE checkpoint_id = :id"),
                {"id": checkpoint_id},
            )
        assert decisions == (1 if decision[0] == 200 else 0)
        if decision[0] == 409:
            assert cancel[0] == 200
            assert (job_status, checkpoint_status) == ("CANCELLED", "CANCELLED")
        elif approve:
            # The approval resumed the job (no worker runs), and the cancel found it PENDING.
            assert cancel[0] == 200, cancel
            assert (job_status, checkpoint_status) == ("CANCELLED", "APPROVED")
        else:
            assert cancel[0] == 409, cancel
            assert (job_status, checkpoint_status) == ("FAILED", "REJECTED")


def _scalar(app, statement: str, **params):
    from app.extensions import db

    with app.app_context():
        return db.session.scalar(sa.text(statement), params)
