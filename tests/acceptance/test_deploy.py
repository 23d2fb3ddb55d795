"""The image's HEALTHCHECK against the web as docker-compose.yml runs it (``agentq serve
--no-migrate`` with the web service's environment), without Docker: the probe is the
Dockerfile's command, run here. The other container checks are ``tests/unit/test_deploy.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from app.dev.embedded import free_port
from tests.conftest import TMP
from tests.conftest import Process
from tests.conftest import wait_until
from tests.deploy import agentq_services
from tests.deploy import argv
from tests.deploy import environment
from tests.deploy import exec_form


def healthy(port: int) -> bool:
    """Whether the image's HEALTHCHECK command passes against a web on ``port``."""
    command = exec_form("HEALTHCHECK")
    assert command[0] == "python"
    done = subprocess.run(
        [sys.executable, *command[1:]],
        env={**os.environ, "PORT": str(port)},
        capture_output=True,
        timeout=30,
    )
    return done.returncode == 0


def test_the_healthcheck_passes_while_the_web_serves_with_no_database_and_fails_once_it_stops():
    """Liveness: /api/health answers while the process serves, even with Postgres and Redis
    unreachable (restarting the web would not bring them back); nothing serving fails it."""
    web = agentq_services()["web"]
    port, nowhere = free_port(), free_port()
    env = {
        **environment(web),
        "PORT": str(port),
        "WEB_CONCURRENCY": "1",
        "AGENTQ_HOME": str(TMP / "deploy-home"),
        "DATABASE_URL": f"postgresql://agentq@127.0.0.1:{nowhere}/agentq",
        "REDIS_URL": f"redis://127.0.0.1:{nowhere}/0",
    }
    serve = Process(
        "deploy-web", [str(Path(sys.executable).parent / "agentq"), *argv(web)[1:]], env
    )
    assert not healthy(port)
    serve.start()
    try:
        wait_until(lambda: serve.alive() and healthy(port), 60, "the HEALTHCHECK to pass")
    finally:
        serve.stop()
    assert not healthy(port)
