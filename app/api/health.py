"""Liveness and readiness probes."""

from __future__ import annotations

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema
from marshmallow import fields

from app.health import readiness

blp = Blueprint("health", __name__, url_prefix="/api", description="Health probes")


class HealthSchema(Schema):
    status = fields.String()
    checks = fields.Dict(keys=fields.String(), values=fields.String())


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
