"""Sentry: what a real gunicorn and a real worker send, caught by a receiver on loopback.

Sentry's service is the one part faked, by a real HTTP server on 127.0.0.1 that keeps
the envelopes the SDK posts to ``/api/<project>/envelope/``. The web (gunicorn) and the
worker run as subprocesses with ``SENTRY_DSN`` pointing at it; this test process never
initialises Sentry (it is process-global), and the session's worker is stopped meanwhile.
"""

from __future__ import annotations

import gzip
import json
import threading
import zlib
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer

import pytest

from tests.acceptance.running import Gunicorn
from tests.acceptance.running import Http
from tests.acceptance.running import Worker
from tests.conftest import stop_worker
from tests.conftest import wait_until

pytestmark = [pytest.mark.acceptance, pytest.mark.slow]


def parse_envelope(body: bytes) -> list[tuple[dict, object]]:
    """The items of a Sentry envelope: a header line, then item header and payload pairs.

    An item header's ``length`` gives its payload's size in bytes (the payload may hold
    newlines); without it the payload runs to the end of the line.
    """
    items = []
    _envelope_header, _, rest = body.partition(b"\n")
    while rest.strip():
        line, _, rest = rest.partition(b"\n")
        if not line.strip():
            continue
        header = json.loads(line)
        if "length" in header:
            payload, rest = rest[: header["length"]], rest[header["length"] :]
            rest = rest.removeprefix(b"\n")
        else:
            payload, _, rest = rest.partition(b"\n")
        try:
            items.append((header, json.loads(payload)))
        except ValueError:
            items.append((header, payload))
    return items


def decode(body: bytes, encoding: str) -> bytes:
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    if encoding == "br":
        import brotli  # the SDK compresses with brotli only when the package is installed

        return brotli.decompress(body)
    return body


class Receiver:
    """Sentry's ingestion endpoint on 127.0.0.1: keeps every envelope item it is sent."""

    def __init__(self) -> None:
        self.items: list[tuple[dict, object]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                body = decode(body, self.headers.get("Content-Encoding", ""))
                if self.path.rstrip("/").endswith("/envelope"):
                    with receiver.lock:
                        receiver.items.extend(parse_envelope(body))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.dsn = f"http://public@127.0.0.1:{self.server.server_port}/1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def payloads(self, kind: str) -> list[dict]:
        with self.lock:
            return [p for h, p in self.items if h.get("type") == kind and isinstance(p, dict)]

    def find(self, kind: str, description: str, predicate, timeout: float = 30) -> dict:
        """Wait for an item of ``kind`` (``event``, ``transaction``) that ``predicate`` accepts."""

        def found():
            return next((p for p in self.payloads(kind) if predicate(p)), None)

        return wait_until(found, timeout, description)


def tags(payload: dict) -> dict:
    raw = payload.get("tags") or {}
    return dict(raw) if isinstance(raw, dict) else {k: v for k, v in raw}


def trace_id(payload: dict) -> str:
    return payload["contexts"]["trace"]["trace_id"]


def request_transaction(payload: dict, method: str, rule: str) -> bool:
    return (
        payload.get("transaction") == rule
        and (payload.get("request") or {}).get("method") == method
    )


@pytest.fixture(scope="module")
def receiver():
    r = Receiver()
    r.thread.start()
    yield r
    r.server.shutdown()
    r.server.server_close()


@pytest.fixture(scope="module")
def sentry_env(receiver) -> dict[str, str]:
    return {
        "SENTRY_DSN": receiver.dsn,
        "SENTRY_ENVIRONMENT": "acceptance",
        "SENTRY_TRACES_SAMPLE_RATE": "1.0",
    }


@pytest.fixture(scope="module")
def web(sentry_env):
    # It outlives each test's database: connections are pinged before use, so that the
    # first request after a test finds none of the dropped database's.
    process = Gunicorn("sentry-web", {**sentry_env, "DATABASE_IDLE_PING_SECONDS": "0"})
    process.start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def sentry_worker(app, celery_worker, sentry_env):
    """A worker with the DSN instead of the session's (which the ``worker`` fixture restarts)."""
    stop_worker(app, celery_worker)
    process = Worker("sentry-worker", sentry_env)
    process.start(app.extensions["celery"])
    yield process
    process.stop()


def test_a_failing_step_sends_an_error_with_its_job_tags_logs_and_trace(
    web, sentry_worker, receiver, user, files
):
    """Given a step that keeps failing, when its job is created by a POST to the real web
    process, then the worker sends an error event tagged with the job, the job type and the
    step, whose breadcrumbs are the job's logs (the web's "queued" line and the earlier
    attempts' errors) and whose trace is the POST's: through the outbox, the Celery chain,
    and the retries the beat sweep published."""
    files.broken.touch()
    job = Http(web.url, user.token).enqueue("test-flaky", files.input())

    post = receiver.find(
        "transaction",
        "the POST's transaction",
        lambda t: (
            request_transaction(t, "POST", "/api/agent-jobs") and tags(t)["job_id"] == job["id"]
        ),
    )
    error = receiver.find(
        "event",
        "the error event of the step's last attempt",
        lambda e: tags(e).get("job_id") == job["id"] and tags(e).get("step_outcome") == "failed",
        timeout=60,
    )

    assert error["level"] == "error"
    assert {k: tags(error).get(k) for k in ("job_id", "job_type", "step")} == {
        "job_id": job["id"],
        "job_type": "test-flaky",
        "step": "break",
    }
    assert "checkpoint_id" not in tags(error)
    exception = error["exception"]["values"][-1]
    assert (exception["type"], exception["value"]) == ("RuntimeError", "the broken file is there")
    crumbs = [c for c in error["breadcrumbs"]["values"] if c.get("category") == "job.log"]
    messages = [c["message"] for c in crumbs]
    assert messages[0] == "Job queued at priority 5"
    retried = [m for m in messages if m.startswith("Step break failed (attempt")]
    assert len(retried) == 2, messages
    # The last line is this failure's own, committed before the event was sent.
    assert messages[-1] == "Step break failed: RuntimeError: the broken file is there"
    assert [c["data"]["kind"] for c in crumbs] == ["queued", "error", "error", "error"]
    assert [c["level"] for c in crumbs] == ["info", "error", "error", "error"]
    assert trace_id(error) == trace_id(post)
    # The attempts before it were sent too, as warnings, in the same trace.
    warnings = [
        e
        for e in receiver.payloads("event")
        if tags(e).get("job_id") == job["id"] and tags(e).get("step_outcome") == "retrying"
    ]
    assert len(warnings) == 2
    assert {w["level"] for w in warnings} == {"warning"}
    assert {trace_id(w) for w in warnings} == {trace_id(post)}
    # The step transactions are in the POST's trace as well, and tagged.
    steps = receiver.find(
        "transaction",
        "the prepare step's transaction",
        lambda t: (
            t.get("transaction") == "agentq.test-flaky.prepare"
            and tags(t).get("job_id") == job["id"]
        ),
    )
    assert trace_id(steps) == trace_id(post)
    assert tags(steps)["step"] == "prepare"


def test_approve_and_reject_carry_the_admin_and_the_trace_goes_on(
    web, sentry_worker, receiver, user, admin, files
):
    """Given two jobs parked at an approval checkpoint, when an admin approves one and rejects
    the other through the real web process, then each decision's transaction carries the
    admin's id and IP and the checkpoint, and the approved job's next step runs in the
    approval's trace, tagged with the checkpoint it continues from."""
    as_user, as_admin = Http(web.url, user.token), Http(web.url, admin.token)
    approved = as_user.enqueue("test-runtime-approval", {"ask_in_plan": True, **files.input()})
    rejected = as_user.enqueue("test-runtime-approval", {"ask_in_plan": True, **files.input()})
    checkpoints = {}
    for job in (approved, rejected):
        waiting = as_user.wait_for(job["id"], "WAITING_APPROVAL")
        checkpoints[job["id"]] = next(
            c["id"] for c in waiting["checkpoints"] if c["status"] == "PENDING"
        )

    done = as_admin.request("POST", f"/api/admin/agent-checkpoints/{checkpoints[approved['id']]}")
    assert done.status_code == 200, done.text
    no = as_admin.request(
        "DELETE",
        f"/api/admin/agent-checkpoints/{checkpoints[rejected['id']]}",
        json={"reason": "not today"},
    )
    assert no.status_code == 200, no.text

    rule = "/api/admin/agent-checkpoints/<uuid:checkpoint_id>"
    for job, method in ((approved, "POST"), (rejected, "DELETE")):
        decision = receiver.find(
            "transaction",
            f"the {method} decision's transaction",
            lambda t, job=job, method=method: (
                request_transaction(t, method, rule) and tags(t).get("job_id") == job["id"]
            ),
        )
        assert decision["user"] == {"id": str(admin.id), "ip_address": "127.0.0.1"}
        assert tags(decision)["checkpoint_id"] == checkpoints[job["id"]]
        assert tags(decision)["job_type"] == "test-runtime-approval"
        if method == "POST":
            approval = decision

    continuation = receiver.find(
        "transaction",
        "the transaction of the step after the approval",
        lambda t: (
            t.get("transaction") == "agentq.test-runtime-approval.review"
            and tags(t).get("job_id") == approved["id"]
        ),
    )
    assert trace_id(continuation) == trace_id(approval)
    assert tags(continuation)["checkpoint_id"] == checkpoints[approved["id"]]
    assert "user" not in continuation
    # And on to the last step, through the outbox again (the review step ends its chain).
    last = receiver.find(
        "transaction",
        "the last step's transaction",
        lambda t: (
            t.get("transaction") == "agentq.test-runtime-approval.apply"
            and tags(t).get("job_id") == approved["id"]
        ),
    )
    assert trace_id(last) == trace_id(approval)
    # The step that opened the checkpoint names it too, once it has one.
    plan = receiver.find(
        "transaction",
        "the plan step's transaction",
        lambda t: (
            t.get("transaction") == "agentq.test-runtime-approval.plan"
            and tags(t).get("job_id") == approved["id"]
        ),
    )
    assert tags(plan)["checkpoint_id"] == checkpoints[approved["id"]]
    assert trace_id(plan) != trace_id(approval)


def test_without_a_dsn_sentry_stays_off(app):
    """Given no SENTRY_DSN (the test process has none), then Sentry is off and outbox rows
    keep no trace: nothing is made up, nothing fails."""
    from app.observability import sentry

    assert app.config["SENTRY_DSN"] is None
    assert sentry.init_app(app) is False
    assert sentry.enabled() is False
    assert sentry.trace_headers() == {}
    with sentry.continued_trace("0" * 32 + "-" + "0" * 16 + "-1", None):
        pass
