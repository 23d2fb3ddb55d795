"""What a step raises to fail its job at once."""

from __future__ import annotations

from app.errors import AgentqError


class PermanentError(AgentqError):
    """Raised by a step: the job fails at once, with no retry.

    Any other exception a step raises is retried with backoff while attempts remain.

    >>> raise PermanentError("not an address")
    """

    code = "permanent"
