"""Admin review of approval checkpoints: list the pending ones, show one with its versions,
approve, reject, request changes, and decide many at once."""

from __future__ import annotations

import uuid
from typing import Any

from flask import g
from flask import request
from flask.views import MethodView
from marshmallow import ValidationError

from app import queries
from app import review
from app.api.blueprint import Blueprint
from app.api.errors import error_object
from app.auth import BEARER
from app.auth import current_user
from app.auth import login_required
from app.errors import AgentqError
from app.errors import field_messages
from app.extensions import db
from app.limits import api_decisions
from app.paging import decode_cursor
from app.paging import page_of
from app.schemas import ApiCheckpointListArgs
from app.schemas import ApprovalSchema
from app.schemas import BulkDecisionsSchema
from app.schemas import BulkItemSchema
from app.schemas import BulkResultsEnvelopeSchema
from app.schemas import CheckpointDetailEnvelopeSchema
from app.schemas import CheckpointEnvelopeSchema
from app.schemas import PendingListEnvelopeSchema
from app.schemas import RejectionSchema
from app.schemas import RequestChangesSchema
from app.status import Outcome

blp = Blueprint(
    "checkpoints",
    __name__,
    url_prefix="/api/admin/agent-checkpoints",
    description="Approval checkpoints (admin): review, vote, request changes",
)

STALE = "Stale version: details.checkpoint is the current one, which you have not seen"
SETTLED = "Already decided (details carry the checkpoint and its decision), or already voted"
REFUSED = (
    "Not among the checkpoint's approvers, or the job's submitter where the review policy "
    "does not allow self-approval"
)


def _actor(channel: str, **who: Any) -> review.Actor:
    return review.Actor(
        channel, ip=request.remote_addr, user_agent=request.user_agent.string or None, **who
    )


def _decide(checkpoint_id: uuid.UUID, outcome: Outcome, body: dict, **words: Any) -> dict:
    checkpoint = review.decide(
        checkpoint_id,
        outcome,
        _actor("api", token_hash=g.token_hash),
        version=body.get("version"),
        data=body.get("data"),
        **words,
    )
    return {"success": True, "checkpoint": checkpoint}


@blp.route("")
class PendingCheckpoints(MethodView):
    @login_required(admin=True)
    @blp.doc(security=[BEARER])
    @blp.arguments(ApiCheckpointListArgs(), location="query")
    @blp.response(200, PendingListEnvelopeSchema)
    def get(self, args: dict):
        """List pending checkpoints, oldest first, with their jobs and votes

        Each says whether you may vote on it (``mayDecide``); ``mine=true`` lists only
        those.
        """
        cursor = args.get("cursor")
        rows = queries.pending_checkpoints_page(
            job_type=args.get("job_type"),
            after=decode_cursor(cursor) if cursor else None,
            limit=args["limit"] + 1,
            viewer=current_user(),
            mine=args["mine"],
        )
        checkpoints, next_cursor = page_of(rows, args["limit"])
        return {"success": True, "checkpoints": checkpoints, "next_cursor": next_cursor}


@blp.route("/<uuid:checkpoint_id>")
class CheckpointDecision(MethodView):
    @login_required(admin=True)
    @blp.doc(security=[BEARER])
    @blp.response(200, CheckpointDetailEnvelopeSchema)
    def get(self, checkpoint_id: uuid.UUID):
        """Show a checkpoint with its job and every version its step proposed

        ``versions`` are oldest first, each with its votes: a request for changes (its
        feedback in ``reason``) stands between a version and the next.
        """
        checkpoint, versions = queries.checkpoint_versions(checkpoint_id)
        return {"success": True, "checkpoint": checkpoint, "versions": versions}

    @login_required(admin=True, in_statement=True)
    @api_decisions
    @blp.doc(security=[BEARER])
    @blp.arguments(ApprovalSchema(), required=False)
    @blp.response(200, CheckpointEnvelopeSchema)
    @blp.refusal(403, REFUSED)
    @blp.refusal(409, f"{SETTLED}; or {STALE}")
    @blp.refusal(429, "Over RATE_LIMIT_DECISIONS for this token: see Retry-After")
    def post(self, body: dict, checkpoint_id: uuid.UUID):
        """Approve a pending checkpoint (a vote, when its policy needs more than one)

        ``data``, when given, replaces the checkpoint's data for the steps that
        follow (a reviewer's edit); the decision keeps both. ``option`` chooses one of
        the policy's named outcomes, which the continuation sees (and which may choose
        the step it resumes at).
        """
        return _decide(
            checkpoint_id,
            Outcome.APPROVED,
            body,
            reason=body.get("reason"),
            option=body.get("option"),
        )

    @login_required(admin=True, in_statement=True)
    @api_decisions
    @blp.doc(security=[BEARER])
    @blp.arguments(RejectionSchema())
    @blp.response(200, CheckpointEnvelopeSchema)
    @blp.refusal(403, REFUSED)
    @blp.refusal(409, f"{SETTLED}; or {STALE}")
    @blp.refusal(429, "Over RATE_LIMIT_DECISIONS for this token: see Retry-After")
    def delete(self, body: dict, checkpoint_id: uuid.UUID):
        """Reject a pending checkpoint: the job fails with the reason

        Unless its policy says ``vetoOnReject: false``: then the rejection is a vote
        against, and the checkpoint is rejected once too few could still approve.
        """
        return _decide(checkpoint_id, Outcome.REJECTED, body, reason=body["reason"])


@blp.route("/<uuid:checkpoint_id>/request-changes")
class ChangesRequest(MethodView):
    @login_required(admin=True, in_statement=True)
    @api_decisions
    @blp.doc(security=[BEARER])
    @blp.arguments(RequestChangesSchema())
    @blp.response(200, CheckpointEnvelopeSchema)
    @blp.refusal(403, REFUSED)
    @blp.refusal(409, f"{SETTLED}; {STALE}; or past the policy's maxRevisions")
    @blp.refusal(429, "Over RATE_LIMIT_DECISIONS for this token: see Retry-After")
    def post(self, body: dict, checkpoint_id: uuid.UUID):
        """Send a pending checkpoint back with feedback

        The step that opened it runs again with the feedback (``ctx.feedback``: the
        text, ``data``, who asked) and opens the next version of the checkpoint.
        """
        return _decide(checkpoint_id, Outcome.CHANGES_REQUESTED, body, reason=body["feedback"])


@blp.route("/decisions")
class BulkDecisions(MethodView):
    @login_required(admin=True)
    @api_decisions
    @blp.doc(security=[BEARER])
    @blp.arguments(BulkDecisionsSchema())
    @blp.response(200, BulkResultsEnvelopeSchema)
    @blp.refusal(429, "Over RATE_LIMIT_DECISIONS for this token: see Retry-After")
    def post(self, body: dict):
        """Decide many checkpoints: a result for each, in order

        Each decision is made on its own, as if sent alone: one refused (its ``status``
        403, 404, 409 or 422, with its ``error``) changes nothing for the others.
        """
        actor = _actor("bulk", user_id=current_user().id)
        return {
            "success": True,
            "results": [_decide_one(item, actor) for item in body["decisions"]],
        }


def _decide_one(raw: dict, actor: review.Actor) -> dict:
    """One bulk decision's result: ``{id, status, checkpoint}`` or ``{id, status, error}``."""
    try:
        item = BulkItemSchema().load(raw)
    except ValidationError as exc:
        fields = field_messages(exc.messages)
        text = "; ".join(f"{name}: {' '.join(msgs)}" for name, msgs in fields.items())
        error = {
            "code": "validation_error",
            "message": f"Invalid decision: {text}",
            "details": fields,
        }
        return {"id": raw.get("id"), "status": 422, "error": error}
    try:
        decided = review.decide(
            item["id"],
            Outcome(item["outcome"]),
            actor,
            version=item.get("version"),
            reason=item.get("reason"),
            data=item.get("data"),
            option=item.get("option"),
        )
    except AgentqError as exc:
        db.session.rollback()
        return {"id": str(item["id"]), "status": exc.status, "error": error_object(exc)}
    return {"id": str(item["id"]), "status": 200, "checkpoint": decided}
