"""Logs: one JSON object a line from a real worker, a real gunicorn and a real beat."""

from __future__ import annotations

import json
import re

import pytest
import requests

from tests.acceptance.running import Gunicorn
from tests.acceptance.running import Http
from tests.acceptance.running import Worker
from tests.conftest import TMP
from tests.conftest import Process
from tests.conftest import celery_process
from tests.conftest import wait_until

pytestmark = [pytest.mark.acceptance, pytest.mark.slow]


def json_lines(process: Process) -> list[dict]:
    """Every line the process wrote, each parsed as JSON (fails on one that is not).

    A line it is still writing (no newline yet) is left for a later read.
    """
    text = process.output()
    lines = []
    for number, line in enumerate(text[: text.rfind("\n") + 1].splitlines(), 1):
        if line.strip():
            try:
                lines.append(json.loads(line))
            except ValueError:
                pytest.fail(f"line {number} of {process.log.name} is not JSON: {line!r}")
    return lines


@pytest.fixture
def json_worker(app, no_worker):
    """A worker of its own with LOG_FORMAT=json, instead of the session's."""
    process = Worker("logs-worker", {"LOG_FORMAT": "json"})
    process.start(app.extensions["celery"])
    yield process
    process.stop()


def test_a_worker_logs_json_lines_that_name_the_job_step_and_checkpoint(
    json_worker, user, admin, files
):
    """Given a worker with LOG_FORMAT=json, when a job runs through its steps and another
    stops at an approval and goes on after it, then every line the worker wrote is one JSON
    object, and the steps' lines name the job, its type, the step and, from the approval
    on, the checkpoint."""
    flaky = user.enqueue("test-flaky", files.input())
    gated = user.enqueue("test-runtime-approval", {"ask_in_plan": True, **files.input()})
    user.wait_for(flaky["id"], "COMPLETED")
    user.wait_for(gated["id"], "WAITING_APPROVAL")
    checkpoint = user.pending_checkpoint(gated["id"])
    assert admin.approve(checkpoint["id"]).status_code == 200
    user.wait_for(gated["id"], "COMPLETED")

    def step_lines(job_id: str) -> list[dict]:
        return [line for line in json_lines(json_worker) if line.get("job_id") == job_id]

    def finished(job_id: str, step: str):
        return lambda: any(
            line.get("step") == step and line.get("outcome") for line in step_lines(job_id)
        )

    wait_until(finished(gated["id"], "apply"), 10, "the last step's closing line")
    lines = step_lines(flaky["id"])
    assert {line["job_type"] for line in lines} == {"test-flaky"}
    assert [(line["step"], line.get("outcome")) for line in lines] == [
        ("prepare", None),
        ("prepare", "advanced"),
        ("break", None),
        ("break", "advanced"),
        ("finish", None),
        ("finish", "completed"),
    ]
    assert lines[0]["message"] == f"step prepare of job {flaky['id']}: attempt 1 started"
    assert all(
        line["logger"] == "worker.steps" and line["level"] == "INFO" and "time" in line
        for line in lines
    )
    assert all(isinstance(line["duration_ms"], int) for line in lines if line.get("outcome"))
    assert not any("checkpoint_id" in line for line in lines)

    lines = step_lines(gated["id"])
    by_step = {}
    for line in lines:
        by_step.setdefault(line["step"], []).append(line)
    # The plan step names the checkpoint once it opened it (its closing line).
    assert [line.get("checkpoint_id") for line in by_step["plan"]] == [None, checkpoint["id"]]
    assert by_step["plan"][-1]["outcome"] == "waiting"
    # The steps after the approval continue from its decision.
    for step in ("review", "apply"):
        assert {line.get("checkpoint_id") for line in by_step[step]} == {checkpoint["id"]}


def test_web_lines_are_json_with_the_request_id(app, user):
    """Given gunicorn with LOG_FORMAT=json, when requests come with and without an
    X-Request-ID, then each response carries the id (the client's, or one made for it),
    and the access lines and the app's lines of a request carry it, as JSON."""
    web = Gunicorn("logs-web", {"LOG_FORMAT": "json"})
    web.start()
    try:
        given = requests.get(
            f"{web.url}/api/health", headers={"X-Request-ID": "client-req-1"}, timeout=10
        )
        made = requests.get(f"{web.url}/api/health", timeout=10)
        junk = requests.get(
            f"{web.url}/api/health", headers={"X-Request-ID": "no spaces <allowed>"}, timeout=10
        )
        create = Http(web.url, user.token).request(
            "POST",
            "/api/agent-jobs",
            headers={"X-Request-ID": "client-req-2"},
            json={"jobType": "test-flaky", "taskDescription": "logged", "inputData": {}},
        )
        assert create.status_code == 201, create.text
        job_id = create.json()["job"]["id"]

        assert given.headers["X-Request-ID"] == "client-req-1"
        assert re.fullmatch(r"[0-9a-f]{32}", made.headers["X-Request-ID"])
        assert re.fullmatch(r"[0-9a-f]{32}", junk.headers["X-Request-ID"])

        def access(request_id: str):
            return lambda: next(
                (
                    line
                    for line in json_lines(web)
                    if line["logger"] == "gunicorn.access" and line.get("request_id") == request_id
                ),
                None,
            )

        line = wait_until(access("client-req-1"), 10, "the access line of the first request")
        assert (line["method"], line["path"], line["status"]) == ("GET", "/api/health", 200)
        assert isinstance(line["duration_ms"], int)
        wait_until(access(made.headers["X-Request-ID"]), 10, "the access line of the second")
        line = wait_until(access("client-req-2"), 10, "the access line of the POST")
        assert (line["method"], line["status"]) == ("POST", 201)
        queued = [line for line in json_lines(web) if line["logger"] == "app.api.jobs"]
        assert len(queued) == 1
        assert queued[0]["message"] == f"job {job_id} queued at priority 5"
        assert {k: queued[0].get(k) for k in ("request_id", "job_id", "job_type")} == {
            "request_id": "client-req-2",
            "job_id": job_id,
            "job_type": "test-flaky",
        }
        # Gunicorn's own lines are JSON too.
        assert any(
            line["logger"] == "gunicorn.error" and line["message"].startswith("Listening at")
            for line in json_lines(web)
        )
    finally:
        web.stop()


def test_beat_logs_json_lines(servers):
    """Given beat as the Procfile runs it (``agentq beat``, which leaves out the banner
    Celery prints before logging is set up), when it sends the sweep (logged at DEBUG: at
    INFO beat is quiet between sweeps), then every line it wrote is JSON."""
    schedule = ("--schedule", str(TMP / "logs-beat-schedule"), "--loglevel", "DEBUG")
    beat = celery_process("beat", *schedule, name="logs-beat", env={"LOG_FORMAT": "json"})
    beat.start()
    try:
        wait_until(
            lambda: (
                beat.alive() and any("agentq-sweep" in line["message"] for line in json_lines(beat))
            ),
            30,
            "beat to send the sweep",
        )
    finally:
        beat.stop()
    lines = json_lines(beat)
    assert {line["logger"] for line in lines} >= {"celery.beat"}
