"""A running agentq under faults: its processes, a client stream, and the checks after a fault.

``System`` is gunicorn, one or more Celery workers and the session's beat on the test
session's Postgres and Redis, with production-like settings except a short lease.
``Stream`` is a client: one thread submits data-processing jobs (two approvals each)
over HTTP at a steady rate, another approves every checkpoint as it appears, and both
count what they were answered. ``settle`` waits for every job answered 201 to reach
its expected final state and reads the ledger for what must never happen twice.
"""

from __future__ import annotations

import collections
import os
import random
import signal
import threading
import time
import uuid
from dataclasses import dataclass

import psutil
import requests
import sqlalchemy as sa

from tests.acceptance.running import Gunicorn
from tests.acceptance.running import Worker
from tests.conftest import Process

#: The settings of the system under faults: production defaults (the stall sweep's 300 s
#: included, so nothing here relies on it) except a 5 s lease, so that a lost worker's
#: steps come back in seconds; rate limits high enough for the stream, still in the path.
SETTINGS = {
    "STEP_LEASE_SECONDS": "5",
    "STALL_SECONDS": "300",
    "OUTBOX_GRACE_SECONDS": "3",
    "RATE_LIMIT_JOBS": "100000/minute",
    "RATE_LIMIT_DECISIONS": "100000/minute",
}

RECORDS = [{"name": "ada", "n": 1}, {"name": "grace", "n": 2}]


class System:
    """gunicorn and Celery workers of agentq, each a process of its own."""

    def __init__(self, celery, name: str, *, workers: int = 1) -> None:
        self.celery = celery
        self.name = name
        self.web = Gunicorn(f"{name}-web", SETTINGS, workers=2)
        self.workers = [self._worker(i) for i in range(workers)]
        self.restarts = 0

    def _worker(self, index: int) -> Worker:
        return Worker(f"{self.name}-worker-{index}", SETTINGS, concurrency=2)

    def start(self) -> None:
        """Start the web and the workers together (each spends its first seconds importing
        agentq), then wait until each answers."""
        for process in (self.web, *self.workers):
            Process.start(process)
        self.web.wait_ready()
        for worker in self.workers:
            worker.wait_ready(self.celery)

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.web.stop()

    def restart_worker(self, index: int) -> None:
        """Start worker ``index`` again (a new process) after it was killed or stopped."""
        self.workers[index] = self._worker(index)
        self.workers[index].name = f"{self.name}-worker-{index}-{self.restarts}"
        self.restarts += 1
        self.workers[index].start(self.celery)

    def pool_children(self, index: int) -> list[psutil.Process]:
        return psutil.Process(self.workers[index].proc.pid).children()

    def output(self) -> str:
        return "\n".join(w.output()[-4000:] for w in [self.web, *self.workers])


@dataclass
class Answers:
    """What one client thread was answered, by status code."""

    codes: collections.Counter
    #: Bodies of 5xx answers other than the 503 of an unreachable database.
    errors: list

    @classmethod
    def new(cls) -> Answers:
        return cls(collections.Counter(), [])

    def add(self, response: requests.Response) -> None:
        self.codes[response.status_code] += 1
        if response.status_code >= 500 and not unavailable(response):
            self.errors.append(f"{response.status_code} {response.text[:300]}")

    @property
    def unavailable(self) -> int:
        return self.codes[503]


def unavailable(response: requests.Response) -> bool:
    """A 503 that says the database is unavailable, with ``Retry-After``."""
    if response.status_code != 503 or "Retry-After" not in response.headers:
        return False
    try:
        return response.json()["error"]["code"] == "database_unavailable"
    except (ValueError, KeyError, TypeError):
        return False


class Stream:
    """Submits data-processing jobs at ``rate`` a second and approves every checkpoint."""

    def __init__(self, url: str, user_token: str, admin_token: str, *, rate: float = 8.0):
        self.url = url
        self.rate = rate
        self.user = {"Authorization": f"Bearer {user_token}"}
        self.admin = {"Authorization": f"Bearer {admin_token}"}
        self.jobs: list[str] = []
        self.submitted = Answers.new()
        self.decided = Answers.new()
        self._submitting = threading.Event()
        self._running = threading.Event()
        self._threads = [
            threading.Thread(target=self._submit, name="submitter", daemon=True),
            threading.Thread(target=self._approve, name="approver", daemon=True),
        ]

    def __enter__(self) -> Stream:
        self._submitting.set()
        self._running.set()
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self.stop()

    def stop_submitting(self) -> None:
        """Stop submitting; returns once the last submission's answer is counted."""
        self._submitting.clear()
        self._threads[0].join(30)

    def settle(self, app, *, since: float, bound: float) -> Settled:
        """Stop submitting, and :func:`settle` every job answered 201."""
        self.stop_submitting()
        return settle(app, self.jobs, bound=bound, since=since)

    def stop(self) -> None:
        self._submitting.clear()
        self._running.clear()
        for thread in self._threads:
            thread.join(30)

    @property
    def errors(self) -> list[str]:
        return self.submitted.errors + self.decided.errors

    @property
    def unavailable(self) -> int:
        return self.submitted.unavailable + self.decided.unavailable

    def _call(self, session: requests.Session, method: str, path: str, headers, **kwargs):
        try:
            return session.request(method, self.url + path, headers=headers, timeout=15, **kwargs)
        except requests.RequestException as exc:  # counted: a client sees it as a failure
            response = requests.Response()
            response.status_code = 599
            response._content = repr(exc).encode()
            return response

    def _submit(self) -> None:
        session = requests.Session()
        n = 0
        while self._submitting.is_set():
            started = time.monotonic()
            n += 1
            response = self._call(
                session,
                "POST",
                "/api/agent-jobs",
                self.user,
                json={
                    "jobType": "data-processing",
                    "taskDescription": f"fault stream {n}",
                    "inputData": {"records": RECORDS},
                },
            )
            self.submitted.add(response)
            if response.status_code == 201:
                self.jobs.append(response.json()["job"]["id"])
            time.sleep(max(0.0, 1 / self.rate - (time.monotonic() - started)))

    def _approve(self) -> None:
        session = requests.Session()
        while self._running.is_set():
            response = self._call(
                session, "GET", "/api/admin/agent-checkpoints?limit=100", self.admin
            )
            if response.status_code != 200:
                self.decided.add(response)
                time.sleep(0.5)
                continue
            pending = response.json()["checkpoints"]
            for checkpoint in pending:
                if not self._running.is_set():
                    return
                self.decided.add(
                    self._call(
                        session,
                        "POST",
                        f"/api/admin/agent-checkpoints/{checkpoint['id']}",
                        self.admin,
                        json={},
                    )
                )
            if not pending:
                time.sleep(0.1)


@dataclass
class Settled:
    """What ``settle`` found."""

    lost: int
    stuck: int
    duplicated: int
    #: Seconds from the end of the last fault until every job was final (None: some never
    #: were).
    seconds: float | None
    #: Seconds from submission to final state of the slowest job.
    slowest: float | None
    #: Jobs by status at the end, and a few that were not final, for the failure message.
    statuses: dict
    not_final: list


def settle(app, job_ids: list[str], *, bound: float, since: float, final=("COMPLETED",)) -> Settled:
    """Wait up to ``bound`` seconds for every job to be in a ``final`` status; then count
    the jobs missing, those not final, and the steps and decisions recorded twice.
    ``since``: when the last fault ended (``time.monotonic``), for ``Settled.seconds``."""
    ids = [uuid.UUID(j) for j in job_ids]
    with app.app_context():
        from app.extensions import db

        db.engine.dispose()  # connections from before a Postgres restart are gone
    started = time.monotonic()
    seconds = None
    while True:
        statuses = _statuses(app, ids)
        if sum(n for status, n in statuses.items() if status in final) == len(ids):
            seconds = time.monotonic() - since
            break
        if time.monotonic() - started > bound:
            break
        time.sleep(0.5)
    with app.app_context():
        from app.extensions import db

        twice = db.session.execute(
            sa.text(
                "SELECT (SELECT count(*) FROM (SELECT FROM job_steps WHERE job_id = ANY(:ids)"
                "         AND status = 'succeeded' GROUP BY job_id, step"
                "         HAVING count(*) > 1) s)"
                "     + (SELECT count(*) FROM (SELECT FROM decisions d"
                "         JOIN checkpoints c ON c.id = d.checkpoint_id"
                "        WHERE c.job_id = ANY(:ids) GROUP BY d.checkpoint_id"
                "        HAVING count(*) > 1) d)"
            ),
            {"ids": ids},
        ).scalar_one()
    present = sum(statuses.values())
    with app.app_context():
        from app.extensions import db

        slowest = db.session.execute(
            sa.text(
                "SELECT extract(epoch FROM max(coalesce(finished_at, updated_at) - created_at))"
                " FROM jobs WHERE id = ANY(:ids)"
            ),
            {"ids": ids},
        ).scalar()
        not_final = db.session.execute(
            sa.text(
                "SELECT id::text, status, current_step, claim_step_id::text FROM jobs"
                " WHERE id = ANY(:ids) AND NOT status = ANY(:final) LIMIT 5"
            ),
            {"ids": ids, "final": list(final)},
        ).all()
    return Settled(
        lost=len(ids) - present,
        stuck=present - sum(n for status, n in statuses.items() if status in final),
        duplicated=twice,
        seconds=seconds,
        slowest=float(slowest) if slowest is not None else None,
        statuses=statuses,
        not_final=[tuple(row) for row in not_final],
    )


def figures(fault: str, injected: str, behaviour: str, stream, settled, faults: int):
    """The report row of a fault run with ``stream`` that ended as ``settled``."""
    from tests.faults.report import Figures

    return Figures(
        fault=fault,
        injected=injected,
        behaviour=behaviour,
        jobs=len(stream.jobs),
        faults=faults,
        lost=settled.lost,
        duplicated=settled.duplicated,
        stuck=settled.stuck,
        errors_5xx=len(stream.errors),
        unavailable_503=stream.unavailable,
        worst_recovery_s=settled.seconds,
        slowest_job_s=settled.slowest,
    )


def check(stream, settled, system, *, unavailable_ok: bool = False) -> None:
    """Fail when a job was lost, stuck or advanced twice, or a client saw a 5xx."""
    context = f"{settled}\n{stream.errors[:5]}\n{system.output()[-3000:]}"
    assert settled.lost == 0, context
    assert settled.stuck == 0, context
    assert settled.duplicated == 0, context
    assert stream.errors == [], context
    if not unavailable_ok:
        assert stream.unavailable == 0, context


def _statuses(app, ids: list[uuid.UUID]) -> dict[str, int]:
    with app.app_context():
        from app.extensions import db

        rows = db.session.execute(
            sa.text("SELECT status, count(*) FROM jobs WHERE id = ANY(:ids) GROUP BY status"),
            {"ids": ids},
        ).all()
        db.session.remove()
    return dict(rows)


def kill_at_random(system: System, rng: random.Random, *, main_share: float = 0.4) -> str:
    """SIGKILL a pool process of a worker, or (``main_share`` of the time) a worker's main
    process, whose pool processes die with it (Celery sets their parent-death signal), and
    start that worker again. Returns what was killed."""
    index = rng.randrange(len(system.workers))
    worker = system.workers[index]
    children = system.pool_children(index)
    if children and rng.random() >= main_share:
        rng.choice(children).send_signal(signal.SIGKILL)
        return "pool process"
    os.kill(worker.proc.pid, signal.SIGKILL)
    worker.proc.wait()
    system.restart_worker(index)
    return "main process"
