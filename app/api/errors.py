"""What the API says of one of agentq's errors: the ``error`` object of its envelope."""

from __future__ import annotations

from app.errors import AgentqError
from app.schemas import CheckpointSchema


def error_object(error: AgentqError) -> dict:
    """``{"code", "message", "details"}``; a refusal that names a checkpoint (decided
    first, a stale version) carries it, with its votes, in ``details.checkpoint``."""
    details = error.details
    checkpoint = getattr(error, "checkpoint", None)
    if checkpoint is not None:
        details = {"checkpoint": CheckpointSchema().dump(checkpoint)}
    return {"code": error.code, "message": error.message, "details": details}
