"""The one way a checkpoint is decided, whatever the channel (the API, the admin pages).

``decide`` names the checkpoint on the request's log lines and Sentry events, records the
decision through the state machine (``state.decide``: one statement, exactly once; it
dispatches the continuation after its commit, and announces the decision to the metrics),
then logs it and makes the decider the Sentry user of the request.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from app import state
from app.observability import logs
from app.observability import sentry
from app.status import Outcome


@dataclass(frozen=True)
class Actor:
    """Who decides, and how they came: a signed-in user (``user_id``) or the holder of an
    API token (``token_hash``, checked in the decision's statement)."""

    #: Where the decision came from: ``api``, ``admin``.
    channel: str
    user_id: uuid.UUID | None = None
    token_hash: str | None = None
    ip: str | None = None
    user_agent: str | None = None


def decide(
    checkpoint_id: uuid.UUID,
    outcome: Outcome,
    actor: Actor,
    *,
    reason: str | None = None,
    data: Any = None,
) -> state.DecidedCheckpoint:
    """Approve or reject a pending checkpoint as ``actor``; see ``state.decide`` for what it
    raises (auth, forbidden, not found, invalid edit, already decided, job not waiting)."""
    logs.bind(checkpoint_id=checkpoint_id)
    if actor.user_id is not None:
        sentry.set_decider(actor.user_id, actor.ip, checkpoint_id=checkpoint_id)
    decided = state.decide(
        checkpoint_id,
        outcome,
        user_id=actor.user_id,
        token_hash=actor.token_hash,
        reason=reason,
        data=data,
        ip=actor.ip,
        user_agent=actor.user_agent,
    )
    decision = decided.decision
    if actor.user_id is None:
        # A token's holder is known once the statement has checked the token.
        sentry.set_decider(decision.user_id, actor.ip, checkpoint_id=checkpoint_id)
    logs.decided(decided, outcome, by=decision.decided_by, channel=actor.channel)
    sentry.tag(job_id=decided.job_id, job_type=decided.handler)
    return decided
