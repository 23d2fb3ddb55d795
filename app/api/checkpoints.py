"""Admin review of approval checkpoints: list the pending ones, approve, reject."""

from __future__ import annotations

import uuid

from flask import g
from flask import request
from flask.views import MethodView

from app import queries
from app import review
from app.api.blueprint import Blueprint
from app.auth import BEARER
from app.auth import login_required
from app.limits import api_decisions
from app.paging import decode_cursor
from app.paging import page_of
from app.schemas import ApiCheckpointListArgs
from app.schemas import ApprovalSchema
from app.schemas import CheckpointEnvelopeSchema
from app.schemas import PendingListEnvelopeSchema
from app.schemas import RejectionSchema
from app.status import Outcome

blp = Blueprint(
    "checkpoints",
    __name__,
    url_prefix="/api/admin/agent-checkpoints",
    description="Pending approval checkpoints (admin)",
)


def _decide(checkpoint_id: uuid.UUID, outcome: Outcome, body: dict) -> dict:
    actor = review.Actor(
        "api",
        token_hash=g.token_hash,
        ip=request.remote_addr,
        user_agent=request.user_agent.string or None,
    )
    checkpoint = review.decide(
        checkpoint_id, outcome, actor, reason=body.get("reason"), data=body.get("data")
    )
    return {"success": True, "checkpoint": checkpoint}


@blp.route("")
class PendingCheckpoints(MethodView):
    @login_required(admin=True)
    @blp.doc(security=[BEARER])
    @blp.arguments(ApiCheckpointListArgs(), location="query")
    @blp.response(200, PendingListEnvelopeSchema)
    def get(self, args: dict):
        """List pending checkpoints, oldest first, with their jobs"""
        cursor = args.get("cursor")
        rows = queries.pending_checkpoints_page(
            job_type=args.get("job_type"),
            after=decode_cursor(cursor) if cursor else None,
            limit=args["limit"] + 1,
        )
        checkpoints, next_cursor = page_of(rows, args["limit"])
        return {"success": True, "checkpoints": checkpoints, "next_cursor": next_cursor}


@blp.route("/<uuid:checkpoint_id>")
class CheckpointDecision(MethodView):
    @login_required(admin=True, in_statement=True)
    @api_decisions
    @blp.doc(security=[BEARER])
    @blp.arguments(ApprovalSchema(), required=False)
    @blp.response(200, CheckpointEnvelopeSchema)
    @blp.refusal(409, "Already decided: details carry the first decision")
    @blp.refusal(429, "Over RATE_LIMIT_DECISIONS for this token: see Retry-After")
    def post(self, body: dict, checkpoint_id: uuid.UUID):
        """Approve a pending checkpoint

        ``data``, when given, replaces the checkpoint's data for the steps that
        follow (a reviewer's edit); the decision keeps both.
        """
        return _decide(checkpoint_id, Outcome.APPROVED, body)

    @login_required(admin=True, in_statement=True)
    @api_decisions
    @blp.doc(security=[BEARER])
    @blp.arguments(RejectionSchema())
    @blp.response(200, CheckpointEnvelopeSchema)
    @blp.refusal(409, "Already decided: details carry the first decision")
    @blp.refusal(429, "Over RATE_LIMIT_DECISIONS for this token: see Retry-After")
    def delete(self, body: dict, checkpoint_id: uuid.UUID):
        """Reject a pending checkpoint: the job fails with the reason"""
        return _decide(checkpoint_id, Outcome.REJECTED, body)
