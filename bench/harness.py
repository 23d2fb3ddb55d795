"""The bench's machinery: servers, the system's processes, repetitions, figures, progress.

Each benchmark module (``bench/<name>.py``) has a ``run(bench)`` that starts the
processes it needs through :class:`Bench`, runs agentq and its bare baseline in
the same run, alternated, at least three times each, and returns a
:class:`Result`. ``python -m bench`` (``make bench``) runs them all and writes the
report (``bench.report``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path

import psutil
import requests

ROOT = Path(__file__).resolve().parent.parent


def say(message: str) -> None:
    """One progress line, with the time since the bench started."""
    print(f"[{time.monotonic() - _STARTED:6.1f}s] {message}", flush=True)


_STARTED = time.monotonic()


# -- Figures ---------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    """The ``p``-th percentile (0..100) of ``values``, linearly interpolated."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    k = (len(ordered) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def median(values: list[float]) -> float:
    return statistics.median(values)


@dataclass
class Row:
    """One line of the report's main table: agentq against its baseline on one path."""

    path: str
    agentq: float
    baseline: float
    #: How the two figures compare: ``agentq / baseline`` for throughputs (higher is
    #: better), ``agentq / baseline`` as a factor for latencies (lower is better).
    unit: str
    higher_is_better: bool
    target: str
    passed: bool
    agentq_text: str = ""
    baseline_text: str = ""
    note: str = ""

    @property
    def ratio(self) -> float:
        return self.agentq / self.baseline if self.baseline else float("nan")


@dataclass
class Result:
    """What a benchmark module reports."""

    name: str
    title: str
    rows: list[Row] = field(default_factory=list)
    #: Extra tables: a title and its lines (first line the header).
    tables: list[tuple[str, list[list[str]]]] = field(default_factory=list)
    #: Latency samples in milliseconds for the plot: {"series name": [ms, ...]}.
    latencies: dict[str, list[float]] = field(default_factory=dict)
    load: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


# -- Settings --------------------------------------------------------------------------


@dataclass
class Settings:
    quick: bool
    #: Repetitions of each agentq/baseline pair (the median is reported).
    reps: int = 3
    keep: bool = False

    def pick(self, full, quick):
        """``full`` in a full run, ``quick`` with QUICK=1."""
        return quick if self.quick else full


# -- Servers ---------------------------------------------------------------------------


class Servers:
    """Postgres (fsync on) and Redis: the bench's own embedded ones, or DATABASE_URL/REDIS_URL."""

    def __init__(self, tmp: Path) -> None:
        self.pg = self.redis = None
        self.external = bool(os.environ.get("DATABASE_URL") and os.environ.get("REDIS_URL"))
        if self.external:
            self.database_url = os.environ["DATABASE_URL"]
            self.redis_url = os.environ["REDIS_URL"]
            return
        from app.dev.embedded import EmbeddedPostgres
        from app.dev.embedded import EmbeddedRedis

        self.pg = EmbeddedPostgres(tmp / "postgres", database="agentq_bench", durable=True)
        self.redis = EmbeddedRedis(tmp / "redis")
        self.database_url = self.pg.start()
        self.redis_url = self.redis.start()

    def pids(self) -> set[int]:
        """The server processes' pids (the embedded ones only)."""
        return self.pids_of("pg")() | self.pids_of("redis")()

    def pids_of(self, server: str) -> Callable[[], set[int]]:
        """A function giving the pids of the embedded ``pg`` or ``redis`` (none when
        external): Postgres's backends come and go."""

        def pids() -> set[int]:
            if server == "pg" and self.pg is not None and self.pg._pid:
                return tree(self.pg._pid)
            if server == "redis" and self.redis is not None and self.redis._proc is not None:
                return tree(self.redis._proc.pid)
            return set()

        return pids

    def stop(self) -> None:
        for server in (self.redis, self.pg):
            if server is not None:
                server.stop()


def tree(pid: int) -> set[int]:
    """``pid`` and its descendants."""
    try:
        proc = psutil.Process(pid)
        return {pid, *(c.pid for c in proc.children(recursive=True))}
    except psutil.NoSuchProcess:
        return set()


# -- Processes -------------------------------------------------------------------------


class Proc:
    """A process of the system under test, in a session of its own, its output in a log file."""

    def __init__(self, name: str, argv: list[str], log: Path, env: dict[str, str]) -> None:
        self.name = name
        self.argv = argv
        self.log = log
        self.env = env
        self.proc: subprocess.Popen | None = None

    def start(self) -> Proc:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def check(self) -> None:
        """:raises RuntimeError: with the tail of its log, when it has exited."""
        if self.proc is None or self.proc.poll() is not None:
            tail = self.log.read_text()[-3000:] if self.log.exists() else ""
            raise RuntimeError(f"{self.name} exited:\n{tail}")

    def pids(self) -> set[int]:
        return tree(self.proc.pid) if self.proc is not None else set()

    def children(self) -> list[psutil.Process]:
        """The processes that do the work: gunicorn's workers, Celery's pool processes."""
        try:
            return psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def stop(self, timeout: float = 20) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def wait_until(predicate: Callable[[], object], timeout: float, what: str, *procs: Proc):
    """Poll ``predicate`` until it is truthy; fail after ``timeout`` or when a process exits."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        for proc in procs:
            proc.check()
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.02)


# -- The bench ---------------------------------------------------------------------------


class Bench:
    """Servers, environment and processes shared by every benchmark of one run."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.tmp = Path(tempfile.mkdtemp(prefix="agentq-bench-"))
        self.servers = Servers(self.tmp)
        self.env = {
            **os.environ,
            "DATABASE_URL": self.servers.database_url,
            "REDIS_URL": self.servers.redis_url,
            "AGENTQ_HOME": str(self.tmp / "home"),
            "WORKSPACE_ROOT": str(self.tmp / "workspaces"),
            "AGENTQ_HANDLER_MODULES": "bench.handlers",
            "SECRET_KEY": "bench",
            # One token submits ~1,000 jobs a second and an admin's approves as fast as it
            # can: limits that they never reach, but that each request still checks in Redis.
            "RATE_LIMIT_JOBS": "1000000/minute",
            "RATE_LIMIT_DECISIONS": "1000000/minute",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        }
        os.environ.update(self.env)
        self._procs: list[Proc] = []
        self._conn = None
        self._migrate()
        from app import create_app

        self.app = create_app()
        self.admin_token = self._admin()
        self.submitter_token = self._submitter()

    # -- setup

    def _migrate(self) -> None:
        agentq = str(Path(sys.executable).parent / "agentq")
        done = subprocess.run(
            [agentq, "db", "upgrade"], cwd=ROOT, env=self.env, capture_output=True, text=True
        )
        if done.returncode != 0:
            raise RuntimeError(f"agentq db upgrade failed:\n{done.stdout}{done.stderr}")
        from bench import bare

        bare.create_tables(self.servers.database_url)

    def _admin(self) -> str:
        from app.auth import create_user
        from app.auth import set_password

        with self.app.app_context():
            user, _row, token = create_user(f"bench-{os.getpid()}", admin=True)
            set_password(user, self.password)
            self.admin_name = user.name
        return token

    def _submitter(self) -> str:
        """A token of a user who is not an admin, who submits the bench's jobs: a job's
        submitter may not decide its checkpoints, so the admin reviews them."""
        from app.auth import create_user

        with self.app.app_context():
            _user, _row, token = create_user(f"bench-submitter-{os.getpid()}")
        return token

    password = "bench password"

    # -- processes

    def _log(self, name: str) -> Path:
        return self.tmp / f"{name}.log"

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Proc:
        proc = Proc(name, argv, self._log(name), {**self.env, **(env or {})}).start()
        self._procs.append(proc)
        return proc

    def web(self, app_spec: str = "app:create_app()", *, name: str = "web", **env: str) -> Web:
        """gunicorn as the Procfile runs it (``app.observability.gunicorn_conf``), serving
        ``app_spec``."""
        from app import processes
        from app.dev.embedded import free_port

        port = free_port()
        argv = processes.web_argv(f"127.0.0.1:{port}", app=app_spec)
        web = Web(self.spawn(name, argv, env), f"http://127.0.0.1:{port}")
        wait_until(web.answers, 60, f"{name} to answer", web.proc)
        return web

    def worker(
        self,
        app: str = "worker",
        *,
        queues: str | None = None,
        concurrency: int = 2,
        name: str = "worker",
        **env: str,
    ) -> Proc:
        """A Celery worker, waiting until it answers a ping: agentq's as the Procfile runs
        it (``agentq worker``), or another ``app``'s (``celery -A bench.bare worker``);
        on ``queues`` instead of its default ones when given."""
        from app import processes

        if app == "worker":
            argv = processes.worker_argv()
        else:
            argv = [sys.executable, "-m", "celery", "-A", app, "worker", "--loglevel", "INFO"]
        hostname = f"{name}-{os.getpid()}@%h"
        argv += [*(("-Q", queues) if queues else ()), "--concurrency", str(concurrency)]
        argv += ["--hostname", hostname, "--without-mingle", "--without-gossip"]
        proc = self.spawn(name, argv, env)
        celery = self.app.extensions["celery"]
        prefix = hostname.split("@")[0] + "@"

        def answers() -> bool:
            replies = celery.control.ping(timeout=0.5) or []
            return any(n.startswith(prefix) for reply in replies for n in reply)

        wait_until(answers, 60, f"{name} to answer a ping", proc)
        return proc

    def beat(self) -> Proc:
        """``agentq beat`` as the Procfile runs it."""
        from app import processes

        return self.spawn("beat", processes.beat_argv())

    def stop_all(self) -> None:
        """Stop every process this bench started (between benchmarks)."""
        for proc in reversed(self._procs):
            proc.stop()
        self._procs.clear()

    def pids(self) -> set[int]:
        """The bench's own processes: itself, its children, the embedded servers."""
        return tree(os.getpid()) | self.servers.pids()

    # -- state

    def sql(self, statement: str, params=None) -> list[tuple]:
        """Run one statement on the bench's own connection (not through the system under test)."""
        import psycopg2

        if self._conn is None or self._conn.closed:
            self._conn = psycopg2.connect(self.servers.database_url)
            self._conn.autocommit = True
        with self._conn.cursor() as cur:
            cur.execute(statement, params)
            return cur.fetchall() if cur.description else []

    def versions(self) -> dict[str, str]:
        where = "external" if self.servers.external else "embedded"
        pg = self.sql("SHOW server_version")[0][0]
        settings = dict(
            self.sql(
                "SELECT name, setting FROM pg_settings WHERE name IN "
                "('fsync', 'synchronous_commit')"
            )
        )
        return {
            "PostgreSQL": f"{pg} ({where}; fsync {settings['fsync']}, "
            f"synchronous_commit {settings['synchronous_commit']})",
            "Redis": f"{self.redis().info()['redis_version']} ({where})",
        }

    def redis(self):
        import redis

        return redis.Redis.from_url(self.servers.redis_url)

    def reset(self) -> None:
        """Empty agentq's tables (users kept) and the bare tables, and every Redis queue;
        then a checkpoint, so that no run pays for the writes of the one before."""
        import psycopg2

        self.sql(
            "TRUNCATE jobs, job_steps, checkpoints, decisions, job_logs, outbox, "
            "bare_jobs, bare_checkpoints CASCADE"
        )
        self.redis().flushdb()
        with contextlib.suppress(psycopg2.errors.InsufficientPrivilege):
            self.sql("CHECKPOINT")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self.stop_all()
        self.servers.stop()
        if self.settings.keep:
            say(f"kept the bench's logs and data in {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


class Web:
    """A gunicorn serving agentq or the bare app."""

    def __init__(self, proc: Proc, url: str) -> None:
        self.proc = proc
        self.url = url

    def admin_cookie(self, name: str, password: str) -> str:
        """Sign in to the admin pages; the ``Cookie`` header of the signed-in session."""
        session = requests.Session()
        page = session.get(f"{self.url}/admin/login", timeout=10).text
        csrf = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page)
        if csrf is None:
            raise RuntimeError("no CSRF token on the login page")
        answer = session.post(
            f"{self.url}/admin/login",
            data={"name": name, "password": password, "csrf_token": csrf.group(1)},
            timeout=10,
        )
        if "session" not in session.cookies or "/login" in answer.url:
            raise RuntimeError(f"signing in as {name} failed")
        return "; ".join(f"{k}={v}" for k, v in session.cookies.items())

    def answers(self) -> bool:
        try:
            return requests.get(f"{self.url}/api/health", timeout=2).ok
        except requests.ConnectionError:
            return False


# -- Machine load ------------------------------------------------------------------------


class LoadMonitor:
    """Samples the machine while a benchmark runs: load average, CPU busy, and the CPU
    used by processes that are not the bench's (other tenants of a shared machine)."""

    def __init__(self, ours: Callable[[], set[int]], interval: float = 1.0) -> None:
        self.ours = ours
        self.interval = interval
        self.samples: list[tuple[float, float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-load", daemon=True)

    def __enter__(self) -> LoadMonitor:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _cpu_by_pid(self) -> dict[int, float]:
        seconds = {}
        for proc in psutil.process_iter(["pid", "cpu_times"]):
            times = proc.info["cpu_times"]
            if times is not None:
                seconds[proc.info["pid"]] = times.user + times.system
        return seconds

    def _run(self) -> None:
        psutil.cpu_percent(interval=None)
        before = self._cpu_by_pid()
        while not self._stop.wait(self.interval):
            after = self._cpu_by_pid()
            ours = self.ours()
            other = sum(
                max(after[pid] - before.get(pid, 0.0), 0.0) for pid in after if pid not in ours
            )
            cores = psutil.cpu_count() or 1
            self.samples.append(
                (
                    os.getloadavg()[0],
                    psutil.cpu_percent(interval=None),
                    100 * other / self.interval / cores,
                )
            )
            before = after

    def summary(self) -> dict[str, float]:
        if not self.samples:
            return {}
        load, busy, other = zip(*self.samples, strict=True)
        return {
            "loadavg": statistics.mean(load),
            "cpu_busy_pct": statistics.mean(busy),
            "other_cpu_pct": statistics.mean(other),
        }


def cpu_seconds(pids: set[int]) -> dict[int, float]:
    """CPU time (user and system) each of the processes ``pids`` has used so far."""
    seconds = {}
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.NoSuchProcess:
            continue
        seconds[pid] = times.user + times.system
    return seconds


class CpuMeter:
    """CPU used by groups of processes between ``start()`` and ``stop(units)``, in
    milliseconds per unit (per request, per job): where the time goes. A process that
    appears in between (a new Postgres backend) counts whole; one that ends is left out."""

    def __init__(self, groups: dict[str, Callable[[], set[int]]]) -> None:
        self.groups = groups
        self._before: dict[str, dict[int, float]] = {}

    def start(self) -> CpuMeter:
        self._before = {name: cpu_seconds(pids()) for name, pids in self.groups.items()}
        return self

    def stop(self, units: int) -> dict[str, float]:
        used = {}
        for name, pids in self.groups.items():
            before = self._before[name]
            now = cpu_seconds(pids())
            used[name] = 1000 * sum(t - before.get(pid, 0.0) for pid, t in now.items()) / units
        return used


def cpu_table(title: str, runs: dict[str, list[dict[str, float]]], unit: str):
    """A report table of the median CPU per ``unit`` of each process group, by variant."""
    groups = list(next(iter(runs.values()))[0])
    rows = [["", *groups, "total"]]
    for variant, measures in runs.items():
        medians = [median([m[g] for m in measures]) for g in groups]
        rows.append([variant, *(f"{v:.2f}" for v in medians), f"{sum(medians):.2f}"])
    return (f"{title} (median CPU milliseconds per {unit}, by process group):", rows)


@contextlib.contextmanager
def measured(bench: Bench, result: Result) -> Iterator[None]:
    """Time the benchmark and record the machine's load while it runs."""
    started = time.monotonic()
    with LoadMonitor(bench.pids) as monitor:
        yield
    result.seconds = time.monotonic() - started
    result.load = monitor.summary()


def alternate(reps: int, *variants: tuple[str, Callable[[int], object]]) -> dict[str, list]:
    """Run each variant ``reps`` times, alternating their order (ABBA...); results by name."""
    results: dict[str, list] = {name: [] for name, _fn in variants}
    order = list(variants)
    for rep in range(reps):
        for name, fn in order:
            results[name].append(fn(rep))
        order.reverse()
    return results


def dump(value) -> str:
    return json.dumps(value, separators=(",", ":"))
