"""The statement census: Postgres statements and Redis commands per job, per process and
per phase (submit, each step, each approval), counted exactly on the servers.

Postgres logs every statement (``log_statement = 'all'``) with the pid of its backend;
``pg_stat_activity`` gives the backend's client port, and psutil the process holding
that socket. BEGIN and COMMIT are statements like any other. Redis's MONITOR shows
every command with the client's port, mapped the same way. So each statement and
command is put down to the process that sent it: the web's gunicorn workers, the
worker's pool processes (which run the steps), or the worker's main process (which
consumes messages and checks the fleet's paused flag every few seconds, whatever the
jobs). One job of each type runs alone, phase after phase, with no beat (its sweeps
would mix in); each phase ends when the job reached its next state and the processes
went quiet.

``tests/acceptance/test_census.py`` gates the Postgres counts; ``make bench`` reports
them with the Redis counts.
"""

from __future__ import annotations

import collections
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path

import psutil

from bench.harness import Bench
from bench.harness import Result
from bench.harness import measured
from bench.harness import say
from bench.harness import wait_until

NAME = "census"
TITLE = "Statement census"

#: The jobs counted: job type and input.
JOBS = {
    "simple-task": {"note": "census"},
    "code-generation": {"files": [{"path": "src/census.py", "content": "print('census')\n"}]},
    "data-processing": {"records": [{"name": "ada"}, {"name": "grace"}]},
}
#: The worker's main process: it consumes the messages; its pool processes run the steps.
MAIN = "worker (main)"
#: The processes whose statements are counted.
COUNTED = ("web", "worker", MAIN)
#: How long every process must stay quiet before a phase is closed.
QUIET = 0.5
BUDGET = 6

_STATEMENT = re.compile(r"^[^|]*\|(\d+)\|.*?LOG:  statement: (.*)$")


class Processes:
    """Which process of the system holds a client socket: a role by local port."""

    def __init__(self, roles: dict[str, Callable[[], set[int]]]) -> None:
        self.roles = roles
        self._ports: dict[int, str] = {}

    def role_of_port(self, port: int) -> str:
        if port not in self._ports:
            pids = {
                c.pid for c in psutil.net_connections("tcp") if c.laddr and c.laddr.port == port
            }
            self._ports[port] = next(
                (role for role, tree in self.roles.items() if pids & tree()), "other"
            )
        return self._ports[port]


class PgStatements:
    """Every statement the server runs, read from its log, by the process that sent it."""

    def __init__(self, log_path: Path, sql, processes: Processes) -> None:
        self.log_path = log_path
        self.sql = sql
        self.processes = processes
        self._backends: dict[int, str] = {}

    def __enter__(self) -> PgStatements:
        self.sql("ALTER SYSTEM SET log_line_prefix = '%m|%p|'")
        self.sql("ALTER SYSTEM SET log_statement = 'all'")
        self.sql("SELECT pg_reload_conf()")
        return self

    def __exit__(self, *exc) -> None:
        self.sql("ALTER SYSTEM RESET log_statement")
        self.sql("ALTER SYSTEM RESET log_line_prefix")
        self.sql("SELECT pg_reload_conf()")

    def mark(self) -> int:
        return self.log_path.stat().st_size

    def role_of_backend(self, pid: int) -> str:
        if pid not in self._backends:
            rows = self.sql("SELECT client_port FROM pg_stat_activity WHERE pid = %s", (pid,))
            port = rows[0][0] if rows else None
            self._backends[pid] = self.processes.role_of_port(port) if port else "other"
        return self._backends[pid]

    def since(self, mark: int) -> list[tuple[str, str]]:
        """(role, statement) of each statement logged after ``mark``."""
        with open(self.log_path, "rb") as log:
            log.seek(mark)
            text = log.read().decode(errors="replace")
        out = []
        for line in text.splitlines():
            match = _STATEMENT.match(line)
            if match:
                out.append((self.role_of_backend(int(match.group(1))), match.group(2)))
        return out


class RedisMonitor:
    """Every command Redis runs, by the process that sent it (MONITOR, in a thread)."""

    def __init__(self, redis, processes: Processes) -> None:
        self.redis = redis
        self.processes = processes
        self.lines: list[tuple[int, str]] = []
        self._thread = threading.Thread(target=self._run, name="bench-monitor", daemon=True)
        self._stop = False

    def __enter__(self) -> RedisMonitor:
        self._ready = threading.Event()
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc) -> None:
        self._stop = True
        self.redis.ping()  # wakes the monitor up to see the stop
        self._thread.join(5)

    def _run(self) -> None:
        with self.redis.monitor() as monitor:
            self._ready.set()
            for command in monitor.listen():
                if self._stop:
                    return
                port = int(command.get("client_port") or 0)
                name = command["command"].split(" ", 1)[0].upper()
                self.lines.append((port, name))

    def mark(self) -> int:
        return len(self.lines)

    def since(self, mark: int) -> list[tuple[str, str]]:
        """(role, command) of each command after ``mark``."""
        return [(self.processes.role_of_port(port), name) for port, name in self.lines[mark:]]


@dataclass
class Phase:
    """What one phase of one job cost in one process."""

    job_type: str
    #: ``submit``, ``approve`` (web) or ``step <name>`` (worker).
    name: str
    role: str
    statements: list[str] = field(default_factory=list)
    commands: collections.Counter = field(default_factory=collections.Counter)


def shape(statement: str) -> str:
    """A named statement's name (``claim_step``; ``PREPARE claim_step`` for its first
    use on a connection), or a statement's verb and first table (``INSERT jobs``)."""
    named = re.match(r"(?:/\* agentq\.|EXECUTE agentq_)(\w+)", statement)
    if named:
        return named.group(1)
    prepared = re.match(r"PREPARE agentq_(\w+)", statement)
    if prepared:
        return f"PREPARE {prepared.group(1)}"
    words = statement.replace("(", " ").split()
    upper = [w.upper() for w in words]
    verb = upper[0] if upper else ""
    for keyword in ("INTO", "UPDATE", "FROM"):
        if keyword in upper[1:] or (keyword == "UPDATE" and verb == "UPDATE"):
            i = upper.index(keyword, 0 if keyword == verb else 1)
            if i + 1 < len(words):
                return f"{verb} {words[i + 1].strip(',').split('.')[-1]}"
    return verb


def run_job(
    submitter, reviewer, job_type: str, input_data: dict, *, statements, monitor, progress
) -> list[Phase]:
    """Run one job alone, window by window, and count what each process did in each.

    The first window opens with the submission (``submitter``'s), each later one with an
    approval (``reviewer``'s: an admin, not the submitter, who may not decide); each
    ends when the job has run one more step and settled (waiting for approval or
    completed) and the processes went quiet. ``progress(job_id)`` reads, on a
    connection that is not counted, ``(status, succeeded step names, pending
    checkpoint id)``.
    """
    phases: list[Phase] = []
    job_id = checkpoint = None
    window = 0
    while True:
        pg_mark, redis_mark = statements.mark(), monitor.mark() if monitor else 0
        if job_id is None:
            job_id, web_phase = submitter.submit(job_type, input_data)["id"], "submit"
        else:
            web_phase = "approve"
            reviewer.call(
                "POST", f"/api/admin/agent-checkpoints/{checkpoint}", {"reason": "census"}
            )
        window += 1

        def settled(window=window, job_id=job_id):
            status, steps, pending = progress(job_id)
            done = status in ("WAITING_APPROVAL", "COMPLETED") and len(steps) == window
            return done and (status, steps, pending)

        status, steps, checkpoint = wait_until(settled, 30, f"{job_type} to settle")
        _until_quiet(statements)
        by_role = {
            "web": Phase(job_type, web_phase, "web"),
            "worker": Phase(job_type, f"step {steps[-1]}", "worker"),
            MAIN: Phase(job_type, f"step {steps[-1]}", MAIN),
        }
        for role, text in statements.since(pg_mark):
            if role in by_role:
                by_role[role].statements.append(text)
        if monitor:
            for role, command in monitor.since(redis_mark):
                if role in by_role:
                    by_role[role].commands[command] += 1
        phases += by_role.values()
        if status == "COMPLETED":
            return phases


def _until_quiet(statements: PgStatements, most: float = 10.0) -> None:
    """Wait until the counted processes sent no statement for ``QUIET`` seconds (the web
    deletes published dispatch intents a moment after it published them)."""
    deadline = time.monotonic() + most
    while time.monotonic() < deadline:
        mark = statements.mark()
        time.sleep(QUIET)
        if not any(role in COUNTED for role, _text in statements.since(mark)):
            return


def progress_reader(bench_sql):
    """``progress(job_id)`` for :func:`run_job`, over ``bench_sql(statement, params)``."""

    def progress(job_id: str):
        rows = bench_sql(
            "SELECT j.status, "
            "  (SELECT array_agg(s.step ORDER BY s.finished_at) FROM job_steps s "
            "    WHERE s.job_id = j.id AND s.status = 'succeeded'), "
            "  (SELECT c.id FROM checkpoints c WHERE c.job_id = j.id AND c.status = 'PENDING') "
            "FROM jobs j WHERE j.id = %s",
            (job_id,),
        )
        status, steps, pending = rows[0]
        return status, steps or [], pending and str(pending)

    return progress


def run(bench: Bench) -> Result:
    result = Result(NAME, TITLE)
    if bench.servers.pg is None:
        result.notes.append(
            "Not run: the census reads the server log of the bench's own Postgres "
            "(DATABASE_URL was set)."
        )
        return result
    from app import routing
    from bench.client import Api

    with measured(bench, result):
        web = bench.web(WEB_CONCURRENCY="1")
        steps_only = ",".join(routing.step_queues(bench.app.config))
        worker = bench.worker(queues=steps_only, concurrency=1)
        submitter, reviewer = Api(web.url, bench.submitter_token), Api(web.url, bench.admin_token)
        progress = progress_reader(bench.sql)
        say("census: warming up (one job of each type, not counted)")
        processes = Processes(
            {
                "web": web.proc.pids,
                "worker": lambda: {c.pid for c in worker.children()},
                MAIN: lambda: {worker.proc.pid},
            }
        )
        statements = PgStatements(bench.servers.pg.log_path, bench.sql, processes)
        for job_type, input_data in JOBS.items():
            run_job(
                submitter,
                reviewer,
                job_type,
                input_data,
                statements=statements,
                monitor=None,
                progress=progress,
            )
        phases: list[Phase] = []
        with statements, RedisMonitor(bench.redis(), processes) as monitor:
            for job_type, input_data in JOBS.items():
                phases += run_job(
                    submitter,
                    reviewer,
                    job_type,
                    input_data,
                    statements=statements,
                    monitor=monitor,
                    progress=progress,
                )
                say(f"census: {job_type} counted")
        bench.stop_all()
        bench.reset()
    _tables(result, phases)
    return result


def budget(phases: list[Phase]) -> dict[str, int]:
    """The most statements any submission, step (in the process that ran it) or approval
    took."""
    most: dict[str, int] = {}
    for p in phases:
        if p.role != MAIN:
            kind = p.name.split()[0]
            most[kind] = max(most.get(kind, 0), len(p.statements))
    return most


def _tables(result: Result, phases: list[Phase]) -> None:
    most = budget(phases)
    result.tables.append(
        (
            f"Postgres statements (BEGIN and COMMIT included) against the budget of "
            f"{BUDGET}, the most any job of the three types took:",
            [["phase", "statements", "budget", ""]]
            + [
                [kind, str(n), str(BUDGET), "pass" if n <= BUDGET else "**FAIL**"]
                for kind, n in most.items()
            ],
        )
    )
    result.tables.append(
        (
            "Each phase of one job of each type, as the servers saw it (Postgres statements "
            "in order; Redis commands by name). The worker's main process takes the messages "
            "from Redis and hands them to its pool process, which runs the step; it also "
            "reads the fleet's paused flag every 3 seconds, whatever the jobs do:",
            [["job type", "phase", "process", "Postgres", "statements", "Redis commands"]]
            + [
                [
                    p.job_type,
                    p.name,
                    p.role,
                    str(len(p.statements)),
                    ", ".join(shape(s) for s in p.statements),
                    ", ".join(f"{name} {n}" for name, n in sorted(p.commands.items()))
                    + f" ({sum(p.commands.values())})",
                ]
                for p in phases
            ],
        )
    )
