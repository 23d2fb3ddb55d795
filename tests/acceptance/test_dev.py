"""``agentq dev``, the embedded default, and ``agentq demo`` against it, as a user runs them."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import psutil
import pytest

from app.dev.embedded import free_port
from tests.conftest import wait_until

pytestmark = [pytest.mark.acceptance, pytest.mark.slow]

AGENTQ = str(Path(sys.executable).parent / "agentq")
#: What the test session sets; a user's shell has none of it.
SESSION_ONLY = {
    "DATABASE_URL",
    "REDIS_URL",
    "AGENTQ_HOME",
    "WORKSPACE_ROOT",
    "SECRET_KEY",
    "AGENTQ_HANDLER_MODULES",
    "STEP_LEASE_SECONDS",
    "SWEEP_INTERVAL",
    "OUTBOX_GRACE_SECONDS",
    "STALL_SECONDS",
    "FLEET_TIMEOUT",
}


class Dev:
    """``agentq dev`` run in a project directory, its output in a file."""

    def __init__(self, project: Path, port: int) -> None:
        self.project = project
        self.env = {k: v for k, v in os.environ.items() if k not in SESSION_ONLY}
        self.env["PORT"] = str(port)
        self.url = f"http://127.0.0.1:{port}"
        self.output = project / "dev.out"
        self.proc: subprocess.Popen | None = None

    def start(self) -> str:
        """Start it; returns its output up to the line saying it runs."""
        with open(self.output, "w") as out:
            self.proc = subprocess.Popen(
                [AGENTQ, "dev"],
                cwd=self.project,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return wait_until(self._ready, 120, "agentq dev to say it is running")

    def _ready(self) -> str | None:
        assert self.proc.poll() is None, self.output.read_text()
        text = self.output.read_text()
        return text if "Ctrl-C stops everything" in text else None

    def stop(self, sig: signal.Signals) -> str:
        self.proc.send_signal(sig)
        self.proc.wait(timeout=60)
        return self.output.read_text()

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [AGENTQ, *args],
            cwd=self.project,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def get(self, path: str, token: str) -> dict:
        request = urllib.request.Request(
            self.url + path, headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())


def processes_using(directory: Path) -> list[psutil.Process]:
    """Live processes whose command line mentions ``directory``."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if str(directory) in cmdline and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(proc)
    return found


def test_dev_runs_the_guide_workflow_and_keeps_its_data(tmp_path):
    """Given a project directory and no DATABASE_URL or REDIS_URL, when a user runs
    `agentq dev`, then it serves the API with an admin token it prints, `agentq demo` and
    `agentq check-db` find it on their own, Ctrl-C stops everything, a second start finds
    the data of the first, and a third one beside it is refused at once, naming the running
    one, which keeps running."""
    dev = Dev(tmp_path, free_port())
    banner = dev.start()
    try:
        token = re.search(r"export TOKEN=(\S+)", banner).group(1)
        assert f"agentq is running at {dev.url}" in banner

        demo = dev.run("demo")
        assert demo.returncode == 0, demo.stdout + demo.stderr
        assert "Demo complete" in demo.stdout
        assert "status: WAITING_APPROVAL" in demo.stdout
        check = dev.run("check-db")
        assert check.returncode == 0, check.stdout + check.stderr
        assert "\u2717" not in check.stdout
        jobs = dev.get("/api/agent-jobs", token)["jobs"]
        assert [(j["jobType"], j["status"]) for j in jobs] == [("code-generation", "COMPLETED")]
        written = tmp_path / "var" / "workspaces" / jobs[0]["id"] / "lib" / "auth.py"
        assert written.read_text().startswith("def authenticate")
    finally:
        out = dev.stop(signal.SIGINT)
    assert "Stopped: web, worker, beat, Redis and Postgres." in out
    wait_until(lambda: not processes_using(tmp_path), 30, "every process of agentq dev to end")
    assert not (tmp_path / "var" / "dev.json").exists()

    banner = dev.start()
    try:
        assert "export TOKEN" not in banner
        jobs = dev.get("/api/agent-jobs", token)["jobs"]
        assert [j["status"] for j in jobs] == ["COMPLETED"]

        beside = Dev(tmp_path, free_port()).run("dev")
        assert beside.returncode != 0
        assert f"already running here (pid {dev.proc.pid})" in beside.stdout + beside.stderr
        assert dev.proc.poll() is None
    finally:
        out = dev.stop(signal.SIGTERM)
    assert "Stopped" in out
    wait_until(lambda: not processes_using(tmp_path), 30, "every process of agentq dev to end")


def test_commands_say_how_to_start_when_nothing_runs(tmp_path):
    """Given a project directory where `agentq dev` is not running and no DATABASE_URL,
    when a user runs `agentq check-db`, then it fails with a line saying what to do."""
    env = {k: v for k, v in os.environ.items() if k not in SESSION_ONLY}

    done = subprocess.run(
        [AGENTQ, "check-db"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )

    assert done.returncode == 1
    assert "\u2717 DATABASE_URL is not set" in done.stdout
    assert "agentq dev" in done.stdout


def test_a_crashed_worker_is_restarted_and_said_so(tmp_path):
    """Given `agentq dev` running, when its worker dies (SIGKILL), then agentq dev says so,
    starts it again, and a job still runs through: one crash does not stop the system."""
    dev = Dev(tmp_path, free_port())
    dev.start()
    try:
        worker = next(
            child
            for child in psutil.Process(dev.proc.pid).children()
            if {"celery", "worker"} <= set(child.cmdline()[2:]) and "beat" not in child.cmdline()
        )
        worker.kill()
        wait_until(
            lambda: (
                "agentq dev: worker exited with code -9; restarting it" in dev.output.read_text()
            ),
            30,
            "agentq dev to say it restarts the worker",
        )

        demo = dev.run("demo")
        assert demo.returncode == 0, demo.stdout + demo.stderr
        assert "Demo complete" in demo.stdout
        assert dev.proc.poll() is None
    finally:
        out = dev.stop(signal.SIGINT)
    assert "Stopped: web, worker, beat, Redis and Postgres." in out
    wait_until(lambda: not processes_using(tmp_path), 30, "every process of agentq dev to end")
