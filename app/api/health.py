"""Liveness and readiness probes."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask import current_app
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema
from marshmallow import fields

from app.extensions import db

blp = Blueprint("health", __name__, url_prefix="/api", description="Health probes")


class HealthSchema(Schema):
    status = fields.String()
    checks = fields.Dict(keys=fields.String(), values=fields.String())


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


@blp.route("/health")
class Health(MethodView):
    @blp.response(200, HealthSchema)
    def get(self):
        """The process is alive"""
        return {"status": "ok", "checks": {}}


@blp.route("/ready")
class Ready(MethodView):
    @blp.response(200, HealthSchema)
    @blp.alt_response(503, schema=HealthSchema, description="Names what is not ready")
    def get(self):
        """Database, migrations and broker are ready"""
        checks = readiness()
        failing = [name for name, value in checks.items() if value != "ok"]
        if failing:
            return {"status": f"not ready: {', '.join(failing)}", "checks": checks}, 503
        return {"status": "ok", "checks": checks}
