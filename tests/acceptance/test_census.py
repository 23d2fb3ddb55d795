"""The statement census as a gate: what each submission, step and approval of the seed job
types costs in Postgres statements, counted exactly on the server (its statement log),
per process: the web (gunicorn) and the worker's pool process that ran the step.

The counts are exact, so they gate regressions here (``make bench`` reports them with
Redis's commands, and the timings, in docs/PERFORMANCE.md). DESIGN's budget is at most
6 statements, BEGIN and COMMIT included, per submission, step and decision.
"""

from __future__ import annotations

import contextlib
import uuid

import psycopg2
import pytest

from app import routing
from bench import census
from bench.client import Api
from tests.acceptance.running import Gunicorn
from tests.conftest import answers
from tests.conftest import celery_process
from tests.conftest import wait_until

pytestmark = [pytest.mark.acceptance, pytest.mark.slow]

BUDGET = 6
#: Every statement of each phase, in order, by name (``app/sql/hot.sql``).
EXPECTED = {
    "submit": ["enqueue", "published"],
    "step": ["claim_step", "finish_step"],
    "approve": ["decide", "published"],
}


#: The phases of one job of each type: the web's submission and approvals, and each step
#: in the worker's pool process.
PHASES = [
    ("simple-task", "submit"),
    ("simple-task", "step run"),
    ("code-generation", "submit"),
    ("code-generation", "step propose"),
    ("code-generation", "approve"),
    ("code-generation", "step write"),
    ("data-processing", "submit"),
    ("data-processing", "step validate"),
    ("data-processing", "approve"),
    ("data-processing", "step transform"),
    ("data-processing", "approve"),
    ("data-processing", "step complete"),
]


@pytest.fixture
def counted(servers, app, no_worker):
    """A web and a worker of their own (the worker runs steps only: no sweeps), whose
    statements are read from the server's log; the session's worker is stopped."""
    if servers.pg is None:
        pytest.skip("the census reads the statement log of the tests' own embedded Postgres")
    web = Gunicorn("census-web", {"WEB_CONCURRENCY": "1"})
    worker = celery_process(
        "worker",
        *("-Q", ",".join(routing.step_queues(app.config))),
        *("--concurrency", "1", "--without-mingle", "--without-gossip"),
        *("--hostname", f"census-{uuid.uuid4().hex[:6]}@%h"),
        name="census-worker",
    )
    observer = psycopg2.connect(servers.database_url)
    observer.autocommit = True
    try:
        worker.start()  # starting while the web does
        web.start()
        celery = app.extensions["celery"]
        wait_until(lambda: answers(celery), 60, "the census worker to answer")

        def sql(statement: str, params=None) -> list[tuple]:
            with observer.cursor() as cursor:
                cursor.execute(statement, params)
                return cursor.fetchall() if cursor.description else []

        processes = census.Processes(
            {
                "web": lambda: {p.pid for p in _tree(web.proc.pid)},
                "worker": lambda: {p.pid for p in _tree(worker.proc.pid)[1:]},
                census.MAIN: lambda: {worker.proc.pid},
            }
        )
        yield web, census.PgStatements(servers.pg.log_path, sql, processes), sql
    finally:
        observer.close()
        worker.stop()
        web.stop()


def _tree(pid: int):
    import psutil

    with contextlib.suppress(psutil.NoSuchProcess):
        parent = psutil.Process(pid)
        return [parent, *parent.children(recursive=True)]
    return []


def test_each_submission_step_and_approval_takes_its_statements(counted, user, admin):
    """Given a web and a worker warmed up (their connections have prepared the hot
    statements), when one job of each seed type runs alone through its approvals, then
    every submission, step and approval runs exactly the statements it should: one for
    the write (which checks the request's token too), plus deleting the published
    dispatch intent on the web, well within the budget. A user submits, an admin
    approves."""
    web, statements, sql = counted
    submitter, reviewer = Api(web.url, user.token), Api(web.url, admin.token)
    progress = census.progress_reader(sql)
    for job_type, input_data in census.JOBS.items():  # warm-up, not counted
        census.run_job(
            submitter,
            reviewer,
            job_type,
            input_data,
            statements=statements,
            monitor=None,
            progress=progress,
        )
    with statements:
        phases = [
            phase
            for job_type, input_data in census.JOBS.items()
            for phase in census.run_job(
                submitter,
                reviewer,
                job_type,
                input_data,
                statements=statements,
                monitor=None,
                progress=progress,
            )
        ]

    seen = [
        (p.job_type, p.name, [census.shape(s) for s in p.statements])
        for p in phases
        if p.role != census.MAIN
    ]
    assert seen == [(job_type, name, EXPECTED[name.split()[0]]) for job_type, name in PHASES]
    assert all(len(shapes) <= BUDGET for _job_type, _name, shapes in seen)
