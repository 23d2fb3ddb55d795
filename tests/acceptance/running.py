"""Real web and worker processes with an environment of their own, for the Sentry and logs tests.

The session's worker (``tests.conftest``) inherits the test process's environment; these
take extra variables (``SENTRY_DSN``, ``LOG_FORMAT``) without touching ``os.environ``.
"""

from __future__ import annotations

import uuid

import requests

from app import processes
from app.dev.embedded import free_port
from tests.conftest import Process
from tests.conftest import answers
from tests.conftest import wait_until


class Gunicorn(Process):
    """The web process as the Procfile runs it: gunicorn with
    ``app.observability.gunicorn_conf``."""

    def __init__(self, name: str, env: dict[str, str], *, workers: int = 1) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        argv = processes.web_argv(f"127.0.0.1:{self.port}", "--workers", str(workers))
        super().__init__(name, argv, env)

    def start(self) -> None:
        super().start()
        self.wait_ready()

    def wait_ready(self) -> None:
        """Wait until it answers ``/api/health``."""
        wait_until(self._answers, 60, "gunicorn to answer /api/health")

    def _answers(self) -> bool:
        self.alive()
        try:
            return requests.get(f"{self.url}/api/health", timeout=2).ok
        except requests.ConnectionError:
            return False


class Worker(Process):
    """``agentq worker`` as the Procfile runs it, ``concurrency`` pool processes."""

    def __init__(self, name: str, env: dict[str, str], *, concurrency: int = 1) -> None:
        self.hostname = f"test-{uuid.uuid4().hex[:6]}@%h"
        argv = processes.worker_argv(
            *("--concurrency", str(concurrency), "--hostname", self.hostname),
            *("--without-mingle", "--without-gossip"),
        )
        super().__init__(name, argv, env)

    def start(self, celery) -> None:
        """Start it and wait until it answers a ping through ``celery`` (the test app's)."""
        super().start()
        self.wait_ready(celery)

    def wait_ready(self, celery) -> None:
        """Wait until it answers a ping through ``celery``."""
        wait_until(
            lambda: self.alive() and answers(celery, self.hostname), 60, "the worker to answer"
        )


class Http:
    """Calls to a real web process with a user's token."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.headers = {"Authorization": f"Bearer {token}"}

    def request(self, method: str, path: str, **kwargs) -> requests.Response:
        headers = {**self.headers, **kwargs.pop("headers", {})}
        return requests.request(method, self.url + path, headers=headers, timeout=10, **kwargs)

    def enqueue(self, job_type: str, input_data: dict) -> dict:
        response = self.request(
            "POST",
            "/api/agent-jobs",
            json={"jobType": job_type, "taskDescription": "observed", "inputData": input_data},
        )
        assert response.status_code == 201, response.text
        return response.json()["job"]

    def job(self, job_id: str) -> dict:
        response = self.request("GET", f"/api/agent-jobs/{job_id}")
        assert response.status_code == 200, response.text
        return response.json()["job"]

    def wait_for(self, job_id: str, *statuses: str, timeout: float = 30) -> dict:
        return wait_until(
            lambda: (job := self.job(job_id))["status"] in statuses and job,
            timeout,
            f"job {job_id} to be {'/'.join(statuses)}",
        )
