"""Whether this process can do its work: the database reachable and migrated, the broker
reachable. ``/api/ready`` and ``agentq verify`` ask it."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask import current_app

from app.extensions import db


def readiness() -> dict[str, str]:
    """Each dependency and "ok", or what is wrong with it."""
    checks: dict[str, str] = {}
    try:
        with db.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
            current = set(MigrationContext.configure(conn).get_current_heads())
        migrate = current_app.extensions["migrate"]
        script = ScriptDirectory(migrate.directory)
        heads = set(script.get_heads())
        checks["database"] = "ok"
        checks["migrations"] = (
            "ok"
            if current == heads
            else f"database at {sorted(current) or 'no revision'}, code at {sorted(heads)}: "
            "run `agentq db upgrade`"
        )
    except sa.exc.SQLAlchemyError as exc:
        checks["database"] = f"unreachable: {exc.__class__.__name__}: {str(exc).splitlines()[0]}"
        checks["migrations"] = "unknown: database unreachable"
    try:
        with current_app.extensions["celery"].connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        checks["broker"] = "ok"
    except Exception as exc:  # any failure to reach the broker means "not ready"
        checks["broker"] = f"unreachable: {exc}"
    return checks
