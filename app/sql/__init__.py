"""Named SQL statements, loaded once from the ``.sql`` files beside this module, and how
the hot paths run them.

Each statement is a block headed ``-- name --`` and a ``--`` description, as
procrastinate keeps its queries. ``statements["claim_outbox"]`` is a ``sa.text`` for the
ORM session; its text starts with ``/* agentq.claim_outbox */``, which names it in the
server's logs and in ``pg_stat_activity``. Statuses and outcomes are never spelled out
in a statement: it names them as parameters of the vocabulary (``:job_pending``,
``:step_succeeded``; ``VOCABULARY``), whose values come from ``app.status``.

The hot paths (a submission, a step's claim and result, a decision) are each one
statement that commits on its own (``hot.sql``). ``run(name, **params)`` executes one on
a pooled connection switched to autocommit for that statement, and returns its rows;
the connection goes back to the pool at once, so a request never holds two. Each is
prepared once per connection (``PREPARE agentq_<name>``) and then run with ``EXECUTE``,
so the server plans it once rather than at every call (planning these statements costs
the server more than running them). No ORM and no SQLAlchemy result machinery on that
path: the rows are named tuples.

Connections are not pinged on every checkout (``pool_pre_ping`` costs a round trip
each time): one that sat idle in the pool for ``IDLE_PING_SECONDS`` is pinged before
use. A statement that finds its connection dropped by the server throws the pool's
connections away, and runs once more if it is safe to repeat (``REPEATABLE``).
"""

from __future__ import annotations

import collections
import re
import time
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.errors
import sqlalchemy as sa
from flask import Flask
from sqlalchemy.dialects.postgresql import psycopg2 as pg_dialect
from sqlalchemy.pool import Pool

from app.extensions import db
from app.status import CheckpointEventKind
from app.status import CheckpointStatus
from app.status import JobStatus
from app.status import Outcome
from app.status import StepStatus

_HEADER = re.compile(r"^-- ([a-z_]+) --$", re.MULTILINE)

#: Seconds a pooled connection may idle before it is pinged at checkout, in this process
#: (``DATABASE_IDLE_PING_SECONDS``, set by ``init_app``).
IDLE_PING_SECONDS = 10.0

#: Hot statements that may run a second time when the first found its connection dropped
#: (the first may have reached the server): reads; the claim (a repeat finds the claim
#: taken, skips, and the lease sweep re-dispatches the step); idempotent bookkeeping.
REPEATABLE = {"authenticate", "claim_step", "renew_leases", "published", "unpublished"}


#: The vocabulary's values, by the parameter names the statements use for them
#: (``:job_pending``, ``:step_running``, ``:checkpoint_pending``, ``:outcome_approved``,
#: ``:event_reminder``).
VOCABULARY = {
    f"{prefix}_{member.name.lower()}": member.value
    for prefix, vocabulary in (
        ("job", JobStatus),
        ("step", StepStatus),
        ("checkpoint", CheckpointStatus),
        ("outcome", Outcome),
        ("event", CheckpointEventKind),
    )
    for member in vocabulary
}
_VOCABULARY_PARAM = re.compile(rf"(?<!:):({'|'.join(VOCABULARY)})\b")


def _bind_vocabulary(sql: str) -> str:
    """``sql`` with its vocabulary parameters bound, once, when the statements load.

    They are bound into the text, not sent with each execution: the planner must see the
    value to use the partial indexes (``WHERE status = 'PENDING'``) in a prepared plan.
    """
    return _VOCABULARY_PARAM.sub(lambda m: f"'{VOCABULARY[m.group(1)]}'", sql)


def init_app(app: Flask) -> None:
    """Ping connections idle for the app's ``DATABASE_IDLE_PING_SECONDS`` (process-wide: the
    pool's checkout hook serves every engine of the process)."""
    global IDLE_PING_SECONDS
    IDLE_PING_SECONDS = app.config["DATABASE_IDLE_PING_SECONDS"]


def _load() -> dict[str, sa.TextClause]:
    statements: dict[str, sa.TextClause] = {}
    for path in sorted(Path(__file__).parent.glob("*.sql")):
        parts = _HEADER.split(path.read_text())
        for name, body in zip(parts[1::2], parts[2::2], strict=True):
            if name in statements:
                raise ValueError(f"{path.name}: statement {name!r} is defined twice")
            sql = "\n".join(ln for ln in body.strip().splitlines() if not ln.startswith("--"))
            statements[name] = sa.text(f"/* agentq.{name} */ {_bind_vocabulary(sql)}")
    return statements


statements = _load()


def _prepared(name: str, clause: sa.TextClause) -> tuple[str, str]:
    """``PREPARE`` and ``EXECUTE`` of a statement; ``EXECUTE`` in psycopg2's style."""
    compiled = clause.compile(dialect=pg_dialect.dialect(paramstyle="numeric_dollar"))
    arguments = ", ".join(f"%({param})s" for param in compiled.positiontup)
    execute = f"EXECUTE agentq_{name}" + (f" ({arguments})" if arguments else "")
    return f"PREPARE agentq_{name} AS {compiled}", execute


_prepared_by_name = {name: _prepared(name, clause) for name, clause in statements.items()}
_row_types: dict[tuple[str, ...], type] = {}


def _row_type(description) -> type:
    names = tuple(column.name for column in description)
    row_type = _row_types.get(names)
    if row_type is None:
        row_type = _row_types[names] = collections.namedtuple("Row", names)
    return row_type


def _execute(cursor, prepared: set[str], name: str, params: dict) -> None:
    prepare, execute = _prepared_by_name[name]
    if name not in prepared:
        cursor.execute(prepare)
        prepared.add(name)
    try:
        cursor.execute(execute, params)
    except psycopg2.errors.InvalidSqlStatementName:
        # The server forgot it (a DISCARD ALL, a connection pooler): prepare it again.
        cursor.execute(prepare)
        cursor.execute(execute, params)


def run(name: str, /, **params: Any) -> list:
    """Run the statement ``name`` on its own, in autocommit; its rows, as named tuples."""
    engine = db.engine
    for attempt in (1, 2):
        fairy = engine.raw_connection()
        conn = fairy.dbapi_connection
        try:
            conn.autocommit = True
            with conn.cursor() as cursor:
                _execute(cursor, fairy.info.setdefault("agentq_prepared", set()), name, params)
                if cursor.description is None:
                    return []
                row_type = _row_type(cursor.description)
                return [row_type(*row) for row in cursor.fetchall()]
        except psycopg2.Error as exc:
            if not engine.dialect.is_disconnect(exc, conn, None):
                raise
            # The server dropped the connection (restart, failover, idle timeout): it and
            # its pool-mates are gone. Once more on a fresh connection, when that is safe.
            fairy.invalidate(exc)
            engine.dispose()
            if attempt == 2 or name not in REPEATABLE:
                raise
        finally:
            if not conn.closed:
                conn.autocommit = False
            fairy.close()
    raise AssertionError("unreachable")


def run_one(name: str, /, **params: Any):
    """:func:`run` for a statement that returns at most one row: the row, or None."""
    rows = run(name, **params)
    return rows[0] if rows else None


#: SQLSTATEs of a server that cannot serve now: too many connections, shutting down,
#: starting up (connection exceptions, class 08, are checked by their class).
UNAVAILABLE_SQLSTATES = {"53300", "57P01", "57P02", "57P03"}


def database_unavailable(error: BaseException) -> bool:
    """Whether ``error`` says the database cannot be reached, rather than what a statement did.

    A refused or lost connection (libpq's errors carry no SQLSTATE), a connection
    SQLAlchemy invalidated, a server shutting down or starting, and a pool with no free
    connection in time; not a deadlock or a statement timeout, which are statements' errors.
    """
    if isinstance(error, sa.exc.TimeoutError):
        return True
    if isinstance(error, sa.exc.DBAPIError):
        if error.connection_invalidated:
            return True
        error = error.orig
    if isinstance(error, psycopg2.InterfaceError):
        return True
    if isinstance(error, psycopg2.OperationalError):
        code = error.pgcode
        return code is None or code.startswith("08") or code in UNAVAILABLE_SQLSTATES
    return False


@sa.event.listens_for(Pool, "checkin")
def _idle_since(_dbapi_connection, record) -> None:
    record.info["idle_since"] = time.monotonic()


@sa.event.listens_for(Pool, "checkout")
def _ping_if_idle(dbapi_connection, record, _proxy) -> None:
    idle_since = record.info.get("idle_since")
    if idle_since is None or time.monotonic() - idle_since < IDLE_PING_SECONDS:
        return
    try:
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        dbapi_connection.rollback()
    except Exception as exc:  # any driver error: the pool replaces the connection
        raise sa.exc.DisconnectionError(f"idle connection is gone: {exc}") from exc
