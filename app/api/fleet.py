"""The worker fleet (admin): status, resume and pause consuming the jobs queue."""

from __future__ import annotations

from flask.views import MethodView
from marshmallow import Schema
from marshmallow import fields

from app import fleet
from app.api.blueprint import Blueprint
from app.auth import BEARER
from app.auth import current_user
from app.auth import login_required

blp = Blueprint(
    "fleet", __name__, url_prefix="/api/admin/agent-worker", description="Worker fleet (admin)"
)


class FleetSchema(Schema):
    success = fields.Boolean(dump_default=True)
    worker = fields.Dict(
        metadata={
            "description": "isRunning, paused, activeJobs, maxConcurrentJobs, pollInterval, message"
        }
    )
    workers = fields.List(fields.Dict())
    jobs = fields.Dict(keys=fields.String(), values=fields.Integer())


def _status() -> dict:
    return {"success": True, **fleet.status()}


@blp.route("")
class Fleet(MethodView):
    @login_required(admin=True)
    @blp.doc(security=[BEARER])
    @blp.response(200, FleetSchema)
    def get(self):
        """Show the workers, what they run, and job counts by status"""
        return _status()

    @login_required(admin=True)
    @blp.doc(security=[BEARER])
    @blp.response(200, FleetSchema)
    def post(self):
        """Resume consuming the jobs queue on every worker"""
        fleet.set_paused(False, user_id=current_user().id)
        return _status()

    @login_required(admin=True)
    @blp.doc(security=[BEARER])
    @blp.response(200, FleetSchema)
    def delete(self):
        """Pause consuming the jobs queue on every worker; running steps finish"""
        fleet.set_paused(True, user_id=current_user().id)
        return _status()
