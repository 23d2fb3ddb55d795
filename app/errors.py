"""agentq's exceptions.

::

    AgentqError
    ├── AuthError                401: no token, or an unknown or revoked one
    ├── ForbiddenError           403: an admin endpoint called by a user
    ├── NotFoundError            404: no such job or checkpoint, or not yours
    ├── InvalidTransition        409: the job or checkpoint is not in a state that allows it
    │   ├── AlreadyDecided       409: the checkpoint was decided first by someone else
    │   ├── StaleVersion         409: a decision on a version that is not the current one
    │   ├── AlreadyVoted         409: a second vote of the same reviewer
    │   └── RevisionsExhausted   409: changes requested past the policy's maxRevisions
    ├── ConflictError            409: an Idempotency-Key reused for another request, or a
    │                            group name taken
    ├── UnknownHandlerError      422: the job type has no registered handler
    ├── InvalidEdit              422: an approver's edited data does not fit the checkpoint
    ├── InvalidName              422: a name (of a group) that breaks its rule
    ├── ConfigError              a setting is missing or wrong
    └── PermanentError           raised by a step: fails the job at once, no retry
                                 (``app.framework``; any other exception is retried)
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AgentqError",
    "AlreadyDecided",
    "AlreadyVoted",
    "AuthError",
    "ConfigError",
    "ConflictError",
    "ForbiddenError",
    "InvalidEdit",
    "InvalidName",
    "InvalidTransition",
    "NotFoundError",
    "RevisionsExhausted",
    "StaleVersion",
    "UnknownHandlerError",
    "field_messages",
]


class AgentqError(Exception):
    """Base of every agentq error; ``status`` and ``code`` shape its API answer."""

    status = 500
    code = "internal_error"

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class ConfigError(AgentqError):
    """A setting is missing or wrong; the message says which and how to set it."""

    code = "config_error"


class AuthError(AgentqError):
    status = 401
    code = "unauthorized"


class ForbiddenError(AgentqError):
    status = 403
    code = "forbidden"


class NotFoundError(AgentqError):
    status = 404
    code = "not_found"


class InvalidTransition(AgentqError):
    status = 409
    code = "invalid_transition"


class AlreadyDecided(InvalidTransition):
    """The checkpoint was decided first; ``checkpoint`` is it, with that decision."""

    code = "already_decided"

    def __init__(self, checkpoint: Any) -> None:
        super().__init__(f"Checkpoint {checkpoint.id} is already {checkpoint.status}")
        self.checkpoint = checkpoint


class StaleVersion(InvalidTransition):
    """A decision on a version of the checkpoint that is not the current one: ``checkpoint``
    is the current version (which the reviewer has not seen)."""

    code = "stale_version"

    def __init__(self, decided_version: int, checkpoint: Any) -> None:
        super().__init__(
            f"Version {decided_version} of this checkpoint is not the current one:"
            f" version {checkpoint.version} ({checkpoint.id}) is {checkpoint.status}"
        )
        self.checkpoint = checkpoint


class AlreadyVoted(InvalidTransition):
    code = "already_voted"


class RevisionsExhausted(InvalidTransition):
    code = "revisions_exhausted"


class ConflictError(AgentqError):
    status = 409
    code = "conflict"


class UnknownHandlerError(AgentqError):
    status = 422
    code = "unknown_job_type"


class UnknownStepError(UnknownHandlerError):
    """A step its job type does not have (any more: a deploy renamed or removed it)."""

    code = "unknown_step"


class InvalidEdit(AgentqError):
    """An approver's edited data does not fit the checkpoint's edit schema; ``details``
    holds the messages by dotted field name (``data.files.0.path``)."""

    status = 422
    code = "validation_error"

    def __init__(self, messages: Any, *, field: str = "data") -> None:
        fields = field_messages(messages, field)
        #: What is wrong, field by field: ``data.files.0.path: ...; data.foo: ...``.
        self.problems = "; ".join(f"{name}: {' '.join(msgs)}" for name, msgs in fields.items())
        super().__init__(f"Invalid request: {self.problems}", details=fields)


class InvalidName(AgentqError):
    """A name that breaks its rule (a group's: 1-100 of ``A-Z a-z 0-9 . _ -``); the message
    says the rule."""

    status = 422
    code = "validation_error"


def field_messages(messages: Any, prefix: str = "") -> dict[str, list[str]]:
    """marshmallow's nested messages keyed by dotted path: ``{"inputData.files.0.path": [...]}``
    (a schema-level message, ``_schema``, goes to the field that holds the schema)."""
    flat: dict[str, list[str]] = {}
    if isinstance(messages, dict):
        for key, value in messages.items():
            name = prefix if key == "_schema" else f"{prefix}.{key}" if prefix else str(key)
            flat.update(field_messages(value, name))
    elif isinstance(messages, list) and all(isinstance(m, str) for m in messages):
        flat[prefix or "body"] = messages
    elif isinstance(messages, list):
        for value in messages:
            flat.update(field_messages(value, prefix))
    else:
        flat[prefix or "body"] = [str(messages)]
    return flat
