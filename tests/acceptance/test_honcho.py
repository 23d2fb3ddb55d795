"""The shipped Procfile under ``honcho start``, as an operator runs it: web (``agentq serve``,
which migrates first) on ``$PORT`` exactly, worker and beat, on a database nothing has
migrated; one job's whole lifecycle through the HTTP API; Ctrl-C leaves nothing running."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import psutil
import pytest
import requests
import sqlalchemy as sa

from app.dev.embedded import free_port
from tests.acceptance.running import Http
from tests.conftest import ROOT
from tests.conftest import wait_until

pytestmark = [pytest.mark.acceptance, pytest.mark.slow]

BIN = Path(sys.executable).parent


@pytest.fixture
def empty_database(servers):
    """The URL of a database of its own, empty: no table, no migration."""
    name = f"agentq_honcho_{uuid.uuid4().hex[:8]}"
    with servers.admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        url = sa.engine.make_url(servers.database_url).set(database=name)
        yield url.render_as_string(hide_password=False)
    finally:
        with servers.admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def port_is_free(port: int) -> bool:
    """Whether nothing listens on ``port`` (connections closing there do not count)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("0.0.0.0", port))
        except OSError:
            return False
        return True


def test_honcho_runs_the_procfile_for_a_jobs_lifecycle_and_ctrl_c_stops_it_all(
    tmp_path, servers, empty_database, no_worker
):
    """Given the Procfile in a directory, an empty database and `PORT` set, when an operator
    runs `honcho start`, then the web answers on `$PORT` with the database migrated, the
    worker and beat run, a code-generation job waits for approval and completes once
    approved; and when they press Ctrl-C, every process honcho started ends and the port
    is free."""
    shutil.copy(ROOT / "Procfile", tmp_path / "Procfile")
    port = free_port()
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "PORT": str(port),
        "DATABASE_URL": empty_database,
        "AGENTQ_HOME": str(tmp_path / "home"),
        "WORKSPACE_ROOT": str(tmp_path / "workspaces"),
        "WEB_CONCURRENCY": "1",
        "LOG_FORMAT": "text",
    }
    log = tmp_path / "honcho.log"
    with open(log, "wb") as out:
        honcho = subprocess.Popen(
            [str(BIN / "honcho"), "start"],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    started: list[psutil.Process] = []
    try:

        def answers() -> bool:
            assert honcho.poll() is None, f"honcho stopped:\n{log.read_text()[-4000:]}"
            try:
                return requests.get(f"http://127.0.0.1:{port}/api/ready", timeout=2).ok
            except requests.ConnectionError:
                return False

        wait_until(answers, 90, "the web to be ready on $PORT")

        def new_token(*user: str) -> str:
            made = subprocess.run(
                [str(BIN / "agentq"), "users", "create", *user],
                env=env,
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert made.returncode == 0, made.stdout + made.stderr
            return made.stdout.strip().splitlines()[-1]

        # An agent submits and the operator reviews: a submitter may not decide.
        api = Http(f"http://127.0.0.1:{port}", new_token("operator", "--admin"))
        agent = Http(f"http://127.0.0.1:{port}", new_token("agent"))

        files = [{"path": "hello.py", "content": "print('hello')\n"}]
        job = agent.enqueue("code-generation", {"files": files})
        api.wait_for(job["id"], "WAITING_APPROVAL", timeout=60)
        checkpoint = api.request("GET", f"/api/agent-jobs/{job['id']}/checkpoints")
        checkpoint_id = checkpoint.json()["checkpoints"][0]["id"]
        approved = api.request("POST", f"/api/admin/agent-checkpoints/{checkpoint_id}", json={})
        assert approved.status_code == 200, approved.text
        done = api.wait_for(job["id"], "COMPLETED", timeout=60)
        assert (tmp_path / "workspaces" / job["id"] / "hello.py").exists()
        assert {step["worker"].split("@")[0] for step in done["steps"]} == {"celery"}

        started = psutil.Process(honcho.pid).children(recursive=True)
        commands = [" ".join(p.cmdline()) for p in started]
        for program in ("gunicorn", "celery -A worker worker", "celery -A worker beat"):
            assert any(program in command for command in commands), commands
    finally:
        honcho.send_signal(signal.SIGINT)
        try:
            code = honcho.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(honcho.pid, signal.SIGKILL)
            raise
    output = log.read_text()
    assert code == 130, output[-4000:]
    assert "SIGINT received" in output
    assert re.search(r"web\.1 +\| INFO  \[alembic\.runtime\.migration\] Running upgrade", output)
    assert re.search(rf"web\.1 +\| agentq serve: gunicorn on 0\.0\.0\.0:{port}, 1 workers", output)
    # Beat sent a sweep every SWEEP_INTERVAL, each saying so at DEBUG only.
    assert "beat.1" in output and "Sending due task" not in output
    assert "started (pid=" in output and output.count("started (pid=") == 3, output[-4000:]
    wait_until(
        lambda: not [p for p in started if p.is_running() and p.status() != psutil.STATUS_ZOMBIE],
        30,
        "every process honcho started to end",
    )
    assert port_is_free(port)
