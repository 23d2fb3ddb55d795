"""The one way a checkpoint is decided, whatever the channel (the API, the admin pages,
bulk decisions, the CLI, the deadline).

``decide`` names the checkpoint on the request's log lines and Sentry events, records the
vote through the state machine (``state.decide``: one statement, exactly once; it
dispatches the continuation after its commit, and announces the vote to the metrics),
then logs it and makes the decider the Sentry user of the request. ``time_out`` is the
deadline's decision, as the policy's ``onTimeout`` says, by ``system:timeout``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from app import events
from app import state
from app.errors import InvalidTransition
from app.errors import NotFoundError
from app.observability import logs
from app.observability import sentry
from app.policy import TIMEOUT_ACTOR
from app.status import OnTimeout
from app.status import Outcome


@dataclass(frozen=True)
class Actor:
    """Who decides, and how they came: a signed-in user (``user_id``), the holder of an API
    token (``token_hash``, checked in the decision's statement), or a system actor
    (``system``: ``system:timeout``)."""

    #: Where the decision came from: ``api``, ``admin``, ``bulk``, ``system``.
    channel: str
    user_id: uuid.UUID | None = None
    token_hash: str | None = None
    ip: str | None = None
    user_agent: str | None = None
    system: str | None = None


#: The deadline, deciding as a checkpoint's ``onTimeout`` says.
TIMEOUT = Actor("system", system=TIMEOUT_ACTOR)


def decide(
    checkpoint_id: uuid.UUID,
    outcome: Outcome,
    actor: Actor,
    *,
    version: int | None = None,
    reason: str | None = None,
    data: Any = None,
    option: str | None = None,
    now: datetime | None = None,
) -> state.DecidedCheckpoint:
    """Vote ``outcome`` on a pending checkpoint as ``actor``; see ``state.decide`` for what
    it raises (auth, forbidden, not found, invalid data or option, stale version, already
    decided or voted, revisions exhausted, job not waiting)."""
    logs.bind(checkpoint_id=checkpoint_id)
    if actor.user_id is not None:
        sentry.set_decider(actor.user_id, actor.ip, checkpoint_id=checkpoint_id)
    decided = state.decide(
        checkpoint_id,
        outcome,
        user_id=actor.user_id,
        token_hash=actor.token_hash,
        system_actor=actor.system,
        now=now,
        version=version,
        reason=reason,
        data=data,
        option=option,
        ip=actor.ip,
        user_agent=actor.user_agent,
    )
    vote = decided.vote
    if actor.user_id is None and vote.user_id is not None:
        # A token's holder is known once the statement has checked the token.
        sentry.set_decider(vote.user_id, actor.ip, checkpoint_id=checkpoint_id)
    logs.decided(decided, outcome, by=vote.decided_by, channel=actor.channel)
    sentry.tag(job_id=decided.job_id, job_type=decided.handler)
    return decided


def time_out(checkpoint_id: uuid.UUID, on_timeout: OnTimeout, reason: str, now: datetime) -> bool:
    """Decide a checkpoint whose deadline passed by ``now`` as ``on_timeout`` says; False
    when someone decided it first (or it was cancelled).

    Its log fields (the checkpoint, its job) are bound for this decision only: a sweep
    decides many, and its later lines are about none of them.
    """
    try:
        with logs.bound():
            decided = decide(checkpoint_id, on_timeout.outcome, TIMEOUT, reason=reason, now=now)
    except (InvalidTransition, NotFoundError):
        return False
    events.checkpoint_timed_out.send(decided.handler, on_timeout=on_timeout)
    return True
