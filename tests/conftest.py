"""Fixtures: a real Postgres, a real Redis, a real Celery worker and beat.

Postgres and Redis come from the embedded wheels, started once per session in a
temporary directory, unless ``DATABASE_URL`` and ``REDIS_URL`` are set (``.ci/run``
points them at the machine's servers). ``BROKER_URL`` puts the session's broker elsewhere:
with ``BROKER_URL=amqp://...`` and ``DATABASE_URL`` set, the session runs on that RabbitMQ
and no Redis at all (``.ci/run`` does so in a virtual host of its own); with
``BROKER_URL`` alone, on the embedded Postgres and Redis, Redis then only counting the
rate limits. The schema is made by ``agentq db upgrade``.
The worker and beat are ``agentq worker`` and ``agentq beat`` subprocesses. Every test
that uses the servers starts with a fresh copy of the migrated database and empty queues.
"""

from __future__ import annotations

import collections
import itertools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from celery.utils.nodenames import host_format

ROOT = Path(__file__).resolve().parent.parent
EXTERNAL = bool(
    os.environ.get("DATABASE_URL") and (os.environ.get("REDIS_URL") or os.environ.get("BROKER_URL"))
)
TMP = Path(tempfile.mkdtemp(prefix="agentq-tests-"))

# The app reads its settings from the environment when it is created, and the
# worker subprocesses inherit it: set everything before anything imports the app.
os.environ.update(
    {
        "AGENTQ_HOME": str(TMP / "home"),
        "WORKSPACE_ROOT": str(TMP / "workspaces"),
        "AGENTQ_HANDLER_MODULES": "tests.handlers",
        "STEP_LEASE_SECONDS": "3",
        "SWEEP_INTERVAL": "0.5",
        "OUTBOX_GRACE_SECONDS": "1",
        "STALL_SECONDS": "5",
        "FLEET_TIMEOUT": "1",
        "SECRET_KEY": "tests",
        # No metrics port for the session's worker: tests that scrape workers start their
        # own on free ports, and parallel sessions would fight over the default.
        "WORKER_METRICS_PORT": "0",
        # Subprocesses (the agentq script, celery) import tests.handlers from here.
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
)


#: Ends every backend on a database; how many were still there.
TERMINATE = sa.text(
    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = :database"
)


class Servers:
    """The Postgres and Redis of this test session, and the test database's template.

    Every process of the session (this one, the worker, the web processes that acceptance
    tests start) reaches the test database by one fixed name, ``DATABASE_URL``'s. Once
    migrated, it is copied to a template, ``<name>_template``, as procrastinate's tests do.
    :meth:`fresh_database` puts a copy of the template in the test database's place,
    whoever is connected to it. The copies (``CREATE DATABASE ... TEMPLATE ...``, slower
    than many a short test) are made ahead by a thread, ``SPARES`` at most, and the
    databases they replace are dropped by the same thread, so a test waits only for renames.
    """

    #: Copies of the template kept ready.
    SPARES = 3

    def __init__(self) -> None:
        self.pg = self.redis = None
        if EXTERNAL:
            self.database_url = os.environ["DATABASE_URL"]
            # None on RabbitMQ without Redis: the rate limits count in each process.
            self.redis_url = os.environ.get("REDIS_URL")
        else:
            from app.dev.embedded import EmbeddedPostgres
            from app.dev.embedded import EmbeddedRedis

            self.pg = EmbeddedPostgres(TMP / "postgres", database="agentq_test", durable=False)
            self.redis = EmbeddedRedis(TMP / "redis")
            self.database_url = self.pg.start()
            self.redis_url = self.redis.start()
            os.environ["DATABASE_URL"] = self.database_url
            os.environ["REDIS_URL"] = self.redis_url
        url = sa.engine.make_url(self.database_url)
        self.database = url.database
        self.template = f"{url.database}_template"
        # On the maintenance database, pinged at checkout (acceptance tests restart Postgres).
        self.admin = sa.create_engine(
            url.set(drivername="postgresql+psycopg2", database="postgres"),
            isolation_level="AUTOCOMMIT",
            pool_pre_ping=True,
        )
        self._made = itertools.count()
        self._ready: collections.deque[str] = collections.deque()
        self._retired: list[str] = []
        self._changed = threading.Condition()
        self._stopping = False
        self._maker: threading.Thread | None = None

    def _execute(self, *statements: str) -> None:
        with self.admin.connect() as conn:
            for statement in statements:
                conn.exec_driver_sql(statement)

    def keep_as_template(self) -> None:
        """Copy the migrated test database to the template (which nobody may connect to, so
        that it can always be copied), and start making spares."""
        # Vacuumed first: copies of the database as the migrations leave it were at times
        # 10 to 20 times as slow to make.
        database = sa.create_engine(
            self.admin.url.set(database=self.database),
            isolation_level="AUTOCOMMIT",
            poolclass=sa.pool.NullPool,
        )
        with database.connect() as conn:
            conn.exec_driver_sql("VACUUM")
        self._execute(
            f'DROP DATABASE IF EXISTS "{self.template}"',
            f'CREATE DATABASE "{self.template}" TEMPLATE "{self.database}"',
            f'ALTER DATABASE "{self.template}" WITH ALLOW_CONNECTIONS false',
        )
        self._maker = threading.Thread(target=self._make_spares, name="spares", daemon=True)
        self._maker.start()

    def _make_spares(self) -> None:
        """Drop the databases that were replaced, and keep ``SPARES`` copies ready."""
        while True:
            with self._changed:
                while not self._stopping and not self._retired and len(self._ready) >= self.SPARES:
                    self._changed.wait()
                if self._stopping:
                    return
                retired, self._retired = self._retired, []
            spare = f"{self.database}_spare_{next(self._made)}"
            try:
                for name in retired:
                    self._execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                # Through the WAL: a file-by-file copy (FILE_COPY) forces two checkpoints, and
                # took 100 to 300 ms a copy while tests wrote; this, a tenth of that.
                self._execute(
                    f'CREATE DATABASE "{spare}" TEMPLATE "{self.template}" STRATEGY WAL_LOG'
                )
            except sa.exc.DBAPIError:
                # Postgres is down (acceptance tests stop it): try again in a moment.
                with self._changed:
                    self._retired.extend(retired)
                time.sleep(0.2)
                continue
            with self._changed:
                self._ready.append(spare)
                self._changed.notify_all()

    def fresh_database(self) -> None:
        """Put a ready copy of the template in the test database's place, ending every
        connection to it. Processes' pools find their connections gone and replace them."""
        with self._changed:
            while not self._ready:
                self._changed.wait()
            spare = self._ready.popleft()
        retired = f"{self.database}_retired_{next(self._made)}"
        with self.admin.connect() as conn:
            conn.exec_driver_sql(f'ALTER DATABASE "{self.database}" WITH ALLOW_CONNECTIONS false')
            # Renaming waits for no backend: end them here and watch them go.
            while conn.execute(TERMINATE, {"database": self.database}).scalar():
                time.sleep(0.002)
            conn.exec_driver_sql(f'ALTER DATABASE "{self.database}" RENAME TO "{retired}"')
            conn.exec_driver_sql(f'ALTER DATABASE "{spare}" RENAME TO "{self.database}"')
        with self._changed:
            self._retired.append(retired)
            self._changed.notify_all()

    def stop(self) -> None:
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
        if self._maker is not None:
            self._maker.join()
        if EXTERNAL:
            leftovers = [*self._ready, *self._retired, self.template]
            self._execute(*(f'DROP DATABASE IF EXISTS "{name}"' for name in leftovers))
        self.admin.dispose()
        for server in (self.redis, self.pg):
            if server is not None:
                server.stop()


class Process:
    """A subprocess in a session of its own, its output in ``TMP/<name>.log``.

    ``env`` adds to the test process's environment as it is when the process starts.
    Its own session lets ``kill`` and ``stop`` reach the whole group (pool children too).
    """

    def __init__(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.name = name
        self.argv = argv
        self.env = env or {}
        self.log = TMP / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=ROOT,
                env={**os.environ, **self.env},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def output(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def alive(self) -> bool:
        """True while it runs; fails the test, showing its output, once it has exited."""
        assert self.running(), f"{self.name} exited:\n{self.output()[-3000:]}"
        return True

    def kill(self) -> None:
        """SIGKILL the whole process group: the main process and its pool children."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self, timeout: float = 20) -> None:
        if self.running():
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()


def celery_process(kind: str, *args: str, name: str | None = None, env=None) -> Process:
    """``agentq worker|beat *args`` (as the Procfile runs them, ``args`` going to celery)
    as a :class:`Process`."""
    from app import processes

    return Process(name or kind, processes.argv(kind, *args), env)


def answers(celery, hostname: str | None = None) -> bool:
    """Whether a worker answers a ping (the worker ``hostname``, Celery's ``%h`` in it
    expanded, when given). It returns with the first answer: a ping without a limit waits
    out its timeout, half a second, even once every worker has answered."""
    destination = None if hostname is None else [host_format(hostname)]
    return bool(celery.control.ping(destination=destination, timeout=0.5, limit=1))


def wait_until(predicate, timeout: float = 30.0, message: str = "condition"):
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {message}")
        time.sleep(0.1)


@pytest.fixture(scope="session")
def servers():
    s = Servers()
    try:
        agentq = str(Path(sys.executable).parent / "agentq")
        done = subprocess.run([agentq, "db", "upgrade"], cwd=ROOT, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
        s.keep_as_template()
        yield s
    finally:
        s.stop()


def pytest_sessionfinish(session, exitstatus):
    """Remove the session's files, unless AGENTQ_KEEP_TEST_FILES asks to keep the logs."""
    if os.environ.get("AGENTQ_KEEP_TEST_FILES"):
        print(f"\nkept the worker and beat logs in {TMP}")
    else:
        shutil.rmtree(TMP, ignore_errors=True)


@pytest.fixture(scope="session")
def app(servers):
    from app import create_app

    # No app context is kept pushed: each request, and each helper below, pushes its own,
    # so every one gets a fresh database session (a kept one would serve stale rows, and
    # keep a connection to a database that the next test's ``clean_state`` drops).
    return create_app({"TESTING": True})


@pytest.fixture(scope="session")
def celery_worker(servers):
    worker = celery_process(
        "worker",
        "--concurrency",
        "1",
        "--without-mingle",
        "--without-gossip",
        "--hostname",
        f"test-{uuid.uuid4().hex[:6]}@%h",
    )
    beat = celery_process("beat")
    worker.start()
    beat.start()
    yield worker
    worker.stop()
    beat.stop()


@pytest.fixture(autouse=True)
def own_log_fields():
    """The log fields a test binds end with it: a decision a test makes in its own thread
    binds its checkpoint to that thread, as a request's binds it to the request."""
    from app.observability import logs

    with logs.bound():
        yield


@pytest.fixture(autouse=True)
def clean_state(request):
    """A fresh test database, empty queues and no rate-limit counters before each test that
    uses the servers, even indirectly; a test that uses none (all of ``tests/unit``) starts
    none."""
    if "servers" not in request.fixturenames:
        return
    from app.extensions import db
    from app.extensions import limiter

    app = request.getfixturevalue("app")
    request.getfixturevalue("servers").fresh_database()
    with app.app_context():
        # Its pooled connections were to the database just dropped.
        db.engine.dispose()
    app.extensions["celery"].control.purge()
    # Every test signs in from 127.0.0.1, many as "admin": each starts with no attempts.
    limiter.reset()


@pytest.fixture
def worker(celery_worker, app):
    """The running Celery worker process (restarted if a test killed it)."""
    if not celery_worker.running():
        celery_worker.start()
    celery = app.extensions["celery"]
    wait_until(lambda: answers(celery), 60, "the worker to answer a ping")
    return celery_worker


#: The password tests give users who sign in to the admin pages.
PASSWORD = "correct horse battery"


def give_password(app, person) -> str:
    """Set ``PASSWORD`` as ``person``'s password for the admin pages; returns it."""
    from app.auth import set_password
    from app.extensions import db
    from app.models import User

    with app.app_context():
        set_password(db.session.get(User, person.id), PASSWORD)
    return PASSWORD


def stop_worker(app, celery_worker) -> None:
    """Stop the session's worker, if it runs (or is still starting), and wait until no
    worker answers."""
    celery = app.extensions["celery"]
    celery_worker.stop()
    wait_until(lambda: not answers(celery), 30, "no worker to answer")


@pytest.fixture(scope="module")
def jobs_stay_pending(app, celery_worker):
    """No worker runs during the module's tests (``worker`` restarts it for later ones)."""
    stop_worker(app, celery_worker)


@pytest.fixture
def no_worker(app, celery_worker):
    """No worker runs during the test (the ``worker`` fixture restarts it for later ones)."""
    stop_worker(app, celery_worker)


@pytest.fixture
def client(app):
    return app.test_client()


class ApiUser:
    """A user with a token, calling the API through the test client."""

    def __init__(self, client, name: str, token: str, user_id) -> None:
        self.client = client
        self.name = name
        self.token = token
        self.id = user_id

    def headers(self, **extra: str) -> dict:
        return {"Authorization": f"Bearer {self.token}", **extra}

    def request(self, method: str, path: str, **kwargs):
        headers = self.headers(**kwargs.pop("headers", {}))
        return self.client.open(path, method=method, headers=headers, **kwargs)

    def enqueue(
        self,
        job_type: str,
        input_data: dict | None = None,
        *,
        priority: int = 5,
        description: str = "a test job",
    ) -> dict:
        response = self.request(
            "POST",
            "/api/agent-jobs",
            json={
                "jobType": job_type,
                "taskDescription": description,
                "inputData": input_data or {},
                "priority": priority,
            },
        )
        assert response.status_code == 201, response.get_json()
        return response.get_json()["job"]

    def job(self, job_id: str) -> dict:
        response = self.request("GET", f"/api/agent-jobs/{job_id}")
        assert response.status_code == 200, response.get_json()
        return response.get_json()["job"]

    def wait_for(self, job_id: str, *statuses: str, timeout: float = 30.0) -> dict:
        """Poll the job until its status is one of ``statuses``."""
        seen = []

        def reached():
            job = self.job(job_id)
            if not seen or seen[-1] != job["status"]:
                seen.append(job["status"])
            return job if job["status"] in statuses else None

        return wait_until(
            reached, timeout, f"job {job_id} to be {'/'.join(statuses)} (went through {seen})"
        )

    def pending_checkpoint(self, job_id: str) -> dict:
        job = self.job(job_id)
        pending = [c for c in job["checkpoints"] if c["status"] == "PENDING"]
        assert len(pending) == 1, job["checkpoints"]
        return pending[0]

    def approve(self, checkpoint_id: str, **body):
        return self.request("POST", f"/api/admin/agent-checkpoints/{checkpoint_id}", json=body)

    def reject(self, checkpoint_id: str, reason: str):
        return self.request(
            "DELETE", f"/api/admin/agent-checkpoints/{checkpoint_id}", json={"reason": reason}
        )

    def patch(self, job_id: str, action: str):
        return self.request("PATCH", f"/api/agent-jobs/{job_id}", json={"action": action})


def _make_user(app, client, name: str, admin: bool) -> ApiUser:
    from app.auth import create_user

    with app.app_context():
        user, _row, token = create_user(name, admin=admin)
        return ApiUser(client, name, token, user.id)


@pytest.fixture
def user(app, client):
    return _make_user(app, client, "user", admin=False)


@pytest.fixture
def other_user(app, client):
    return _make_user(app, client, "other", admin=False)


@pytest.fixture
def admin(app, client):
    return _make_user(app, client, "admin", admin=True)


@pytest.fixture
def files(tmp_path):
    """Paths the test handlers use to coordinate: marks, gate, broken."""

    class Files:
        marks = tmp_path / "marks"
        gate = tmp_path / "gate"
        broken = tmp_path / "broken"

        def input(self) -> dict:
            return {"marks": str(self.marks), "gate": str(self.gate), "broken": str(self.broken)}

        def runs(self) -> list[str]:
            return self.marks.read_text().split() if self.marks.exists() else []

    return Files()
