"""/api/metrics in one process (the test app, no gunicorn): what each figure counts.

The figures summed over several processes are tested in
``tests/acceptance/test_metrics_scaled.py``; here the app runs in-process, without a
multiprocess directory, so its event metrics are this process's own
(``app.observability.instruments`` ``REGISTRY``), and a test reads them before and after
what it does.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from app import events
from app.observability import instruments
from tests.conftest import wait_until

pytestmark = pytest.mark.integration

PROPOSAL = [{"path": "hello.py", "content": "print('hello')\n"}]


def scrape(client) -> dict[str, dict[tuple, float]]:
    """``{sample name: {sorted labels: value}}`` of one scrape of /api/metrics."""
    response = client.get("/api/metrics")
    assert response.status_code == 200, response.get_data(as_text=True)
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for s in family.samples:
            samples.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return samples


def sample(samples: dict, name: str, **labels: str) -> float:
    """One sample's value, 0 when it is absent (a labelled metric not used yet)."""
    return samples.get(name, {}).get(tuple(sorted(labels.items())), 0.0)


def event(name: str, **labels: str) -> float:
    """An event metric's value in this process, 0 when it is absent."""
    return instruments.REGISTRY.get_sample_value(name, labels) or 0.0


def test_queue_depth_and_outbox_are_read_at_scrape_time(app, client, user, no_worker):
    """Given no worker, when three jobs are enqueued at priorities 0, 5 and 10 and an outbox
    row a minute old is left unpublished, then a scrape counts the three messages in the
    simple-task queue (every priority level summed), an outbox backlog of one, and its age."""
    from app.extensions import db
    from app.models import Outbox

    jobs = [user.enqueue("simple-task", priority=p) for p in (0, 5, 10)]

    def depth():
        return sample(scrape(client), "agentq_queue_depth", queue="agentq.steps.simple-task") == 3

    wait_until(depth, 10, "three messages in the simple-task queue")
    with app.app_context():
        row = Outbox(job_id=jobs[0]["id"], step="run")
        db.session.add(row)
        db.session.flush()
        row.created_at = sa.func.clock_timestamp() - timedelta(seconds=60)
        db.session.commit()

    samples = scrape(client)

    assert sample(samples, "agentq_outbox_backlog") == 1
    assert 60 <= sample(samples, "agentq_outbox_oldest_age_seconds") < 120
    assert sample(samples, "agentq_queue_depth", queue="agentq.steps.simple-task") == 3


def test_jobs_created_counts_new_jobs_not_replays(user, client):
    """Given a job enqueued with an Idempotency-Key, when the same request is sent again,
    then jobs created grows by one, for its job type."""
    before = event("agentq_jobs_created_total", job_type="simple-task")
    body = {"jobType": "simple-task", "taskDescription": "once", "inputData": {}, "priority": 5}
    for _ in range(2):
        response = user.request(
            "POST", "/api/agent-jobs", json=body, headers={"Idempotency-Key": "metrics-once"}
        )
        assert response.status_code in (200, 201), response.get_json()

    assert event("agentq_jobs_created_total", job_type="simple-task") == before + 1
    assert sample(scrape(client), "agentq_jobs_created_total", job_type="simple-task") == (
        before + 1
    )


def test_decisions_and_final_statuses_are_counted_where_they_happen(user, admin, worker):
    """Given three code-generation jobs waiting for review, when one is approved, one
    rejected and one cancelled through this app, then this process counts one approved
    and one rejected decision with their waits, and a failed and a cancelled job with
    their durations (the approved job completes on the worker, which counts it there)."""
    labels = {"job_type": "code-generation"}
    before = {
        "approved": event("agentq_checkpoints_decided_total", **labels, outcome="approved"),
        "rejected": event("agentq_checkpoints_decided_total", **labels, outcome="rejected"),
        "wait": event("agentq_checkpoint_wait_seconds_count", **labels, outcome="approved"),
        "failed": event("agentq_job_duration_seconds_count", **labels, outcome="failed"),
        "cancelled": event("agentq_job_duration_seconds_count", **labels, outcome="cancelled"),
        "completed": event("agentq_job_duration_seconds_count", **labels, outcome="completed"),
    }
    jobs = [user.enqueue("code-generation", {"files": PROPOSAL})["id"] for _ in range(3)]
    for job_id in jobs:
        user.wait_for(job_id, "WAITING_APPROVAL")

    assert admin.approve(user.pending_checkpoint(jobs[0])["id"]).status_code == 200
    assert admin.reject(user.pending_checkpoint(jobs[1])["id"], "no").status_code == 200
    assert user.patch(jobs[2], "cancel").status_code == 200
    user.wait_for(jobs[0], "COMPLETED")

    after = {
        "approved": event("agentq_checkpoints_decided_total", **labels, outcome="approved"),
        "rejected": event("agentq_checkpoints_decided_total", **labels, outcome="rejected"),
        "wait": event("agentq_checkpoint_wait_seconds_count", **labels, outcome="approved"),
        "failed": event("agentq_job_duration_seconds_count", **labels, outcome="failed"),
        "cancelled": event("agentq_job_duration_seconds_count", **labels, outcome="cancelled"),
        "completed": event("agentq_job_duration_seconds_count", **labels, outcome="completed"),
    }
    assert {k: after[k] - before[k] for k in after} == {
        "approved": 1,
        "rejected": 1,
        "wait": 1,
        "failed": 1,
        "cancelled": 1,
        "completed": 0,
    }
    wait = event("agentq_checkpoint_wait_seconds_sum", **labels, outcome="approved")
    assert wait > 0


def test_a_transition_that_does_not_happen_counts_nothing(no_worker, user):
    """Given a cancelled job, when it is cancelled again (refused: 409), then its duration is
    observed once: the refused transition wrote nothing and announced nothing."""
    job = user.enqueue("simple-task")
    labels = {"job_type": "simple-task", "outcome": "cancelled"}
    before = event("agentq_job_duration_seconds_count", **labels)

    assert user.patch(job["id"], "cancel").status_code == 200
    assert user.patch(job["id"], "cancel").status_code == 409

    assert event("agentq_job_duration_seconds_count", **labels) == before + 1


def test_a_failing_metric_logs_and_never_fails_the_request(user, monkeypatch, caplog):
    """Given the jobs-created counter broken, when a job is enqueued, then the API still
    answers 201 with the job, and the error is logged."""

    class Broken:
        def labels(self, *_args):
            raise RuntimeError("metrics are broken")

    monkeypatch.setattr(instruments, "JOBS_CREATED", Broken())

    with caplog.at_level(logging.ERROR, logger="app.observability.instruments"):
        job = user.enqueue("simple-task")

    assert user.job(job["id"])["status"] in ("PENDING", "RUNNING", "COMPLETED")
    assert "metrics: recording" in caplog.text
    assert "metrics are broken" in caplog.text


def test_a_step_outcome_the_metrics_do_not_know_only_logs(caplog):
    """Given an outcome no mapping knows, when a step is recorded, then it logs, not raises."""

    class Claim:
        job_type, step = "simple-task", "run"

    with caplog.at_level(logging.ERROR, logger="app.observability.instruments"):
        events.step_ended.send("simple-task", claim=Claim(), outcome="exploded", seconds=0.1)

    assert "metrics: recording _step_ended failed" in caplog.text


def test_http_metrics_group_by_route_and_skip_the_scrapes(client, user):
    """Given a job read twice, when /api/metrics is scraped, then the reads are counted
    under the route's rule (no job id in any label) and the scrapes are not counted."""
    job = user.enqueue("simple-task")
    rule = {"method": "GET", "status": "200", "url_rule": "/api/agent-jobs/<uuid:job_id>"}
    before = sample(scrape(client), "flask_http_request_duration_seconds_count", **rule)
    user.job(job["id"])
    user.job(job["id"])

    samples = scrape(client)
    again = scrape(client)

    assert sample(samples, "flask_http_request_duration_seconds_count", **rule) == before + 2
    labels = {v for values in samples.values() for key in values for _k, v in key}
    assert not any(job["id"] in v for v in labels)
    assert not any("/api/metrics" in v for v in labels)
    assert again["flask_http_request_total"] == samples["flask_http_request_total"]


def test_every_app_counts_its_own_requests(app, client, servers):
    """Given a second app made in the same process (as tests and the CLI do), when it
    answers two health checks, then its /api/metrics counts those two, and the first
    app's counts are not touched (each app has its own exporter registry)."""
    from app import create_app

    rule = {"method": "GET", "status": "200", "url_rule": "/api/health"}
    first_before = sample(scrape(client), "flask_http_request_duration_seconds_count", **rule)
    second = create_app({"TESTING": True}).test_client()

    for _ in range(2):
        assert second.get("/api/health").status_code == 200

    assert sample(scrape(second), "flask_http_request_duration_seconds_count", **rule) == 2
    assert sample(scrape(client), "flask_http_request_duration_seconds_count", **rule) == (
        first_before
    )


def test_a_scrape_serves_what_it_can_read(client, monkeypatch, caplog):
    """Given the outbox query failing, when /api/metrics is scraped, then it still answers
    with the job counts and queue depths, without the outbox figures, and logs why."""
    from app import queries

    def broken():
        raise RuntimeError("no outbox today")

    monkeypatch.setattr(queries, "outbox_backlog", broken)

    with caplog.at_level(logging.ERROR, logger="app.observability.scrape"):
        samples = scrape(client)

    assert "agent_jobs_total" in samples
    assert "agentq_queue_depth" in samples
    assert "agentq_outbox_backlog" not in samples
    assert "metrics: reading outbox failed" in caplog.text
