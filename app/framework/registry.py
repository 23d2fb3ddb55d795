"""Handlers: named, ordered steps, and the registry the runtime builds chains from.

A handler module declares its steps with a decorator and registers itself::

    handler = Handler("code-generation", description="Write proposed files after approval")

    @handler.step("propose", approval=True)
    def propose(ctx: StepContext) -> dict:
        ctx.checkpoint(APPROVAL_REQUIRED, "Review file changes", data={"files": ctx.input["files"]})
        return {"proposed": [f["path"] for f in ctx.input["files"]]}

Each step becomes a Celery task named ``agentq.<handler>.<step>``. ``approval=True``
declares that the step opens an APPROVAL_REQUIRED checkpoint, so the chain the
runtime builds ends there; a step may also open one at run time without declaring
it, and the chain stops at it all the same.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from marshmallow import Schema

from app.errors import UnknownHandlerError

INFO = "INFO"
APPROVAL_REQUIRED = "APPROVAL_REQUIRED"

#: The package whose every module is a job type, loaded by ``load_handlers``.
HANDLERS_PACKAGE = "handlers"

_STEP_OPTIONS = {"approval", "edits", "max_attempts", "retry_backoff", "retry_backoff_max"}


@dataclass(frozen=True)
class Decision:
    """The last approval on the job's way to a step, as the step sees it (None before any
    checkpoint): a retry after a later rejection still sees the earlier approval, with the
    approver's edit."""

    outcome: str
    approver: str | None
    reason: str | None
    #: The data as the approver edited it; None when approved as proposed.
    data: Any
    #: The data the checkpoint proposed.
    proposed: Any
    #: The decided checkpoint's id.
    checkpoint_id: str | None = None


@dataclass
class StepContext:
    """What a step receives: the job's input, earlier outputs, the last approval on its
    job's way to it, and tools.

    ``log(kind, message, data=None)`` writes a job log line at once (progress shows
    while the step runs); ``checkpoint(type, title, data=None, expires_in=None)``
    opens a checkpoint that is recorded with the step's result.
    """

    job_id: str
    job_type: str
    step: str
    attempt: int
    task_description: str
    input: dict
    #: What earlier steps returned, by step name.
    outputs: dict[str, Any]
    decision: Decision | None
    workspace: Any
    log: Callable[..., None]
    checkpoints: list[dict] = field(default_factory=list)

    def checkpoint(
        self, type: str, title: str, data: Any = None, expires_in: float | None = None
    ) -> None:
        """Open a checkpoint; an APPROVAL_REQUIRED one ends the chain after this step."""
        if type not in (INFO, APPROVAL_REQUIRED):
            raise ValueError(f"checkpoint type must be {INFO} or {APPROVAL_REQUIRED}, not {type!r}")
        if type == APPROVAL_REQUIRED and self.blocks:
            raise ValueError("a step can open at most one APPROVAL_REQUIRED checkpoint")
        self.checkpoints.append(
            {
                "id": str(uuid.uuid4()),
                "type": type,
                "title": title,
                "data": data,
                "expires_in": expires_in,
            }
        )

    @property
    def blocks(self) -> bool:
        """Whether this step opened an APPROVAL_REQUIRED checkpoint."""
        return self.approval_checkpoint_id is not None

    @property
    def approval_checkpoint_id(self) -> str | None:
        """The id of the APPROVAL_REQUIRED checkpoint this step opened, if it opened one."""
        return next((c["id"] for c in self.checkpoints if c["type"] == APPROVAL_REQUIRED), None)


@dataclass(frozen=True)
class Step:
    handler: str
    name: str
    fn: Callable[[StepContext], Any]
    #: Declares that the step opens an APPROVAL_REQUIRED checkpoint: chains end here.
    approval: bool = False
    #: The schema of the data an approver may send with an approval of the checkpoint this
    #: step opens (usually the schema of the checkpoint's own data). None: any JSON.
    edits: type[Schema] | None = None
    #: Attempts before the job fails (exceptions other than PermanentError are retried).
    max_attempts: int = 3
    #: Seconds before the second attempt; doubled for each further one.
    retry_backoff: float = 1.0
    retry_backoff_max: float = 300.0

    @property
    def task_name(self) -> str:
        return f"agentq.{self.handler}.{self.name}"

    def validate_edit(self, data: Any) -> Any:
        """Check an approver's edited data against ``edits``; returns it unchanged.

        :raises marshmallow.ValidationError: naming the fields that are wrong.
        """
        return _validated(self.edits, data)

    def backoff(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        return min(self.retry_backoff * 2 ** (attempt - 1), self.retry_backoff_max)


class Handler:
    """A job type: a name, a description, an optional input schema and ordered steps."""

    def __init__(
        self, name: str, *, description: str = "", input_schema: type[Schema] | None = None
    ) -> None:
        self.name = name
        self.description = description
        self.input_schema = input_schema
        self.steps: list[Step] = []

    def step(self, name: str, **options: Any) -> Callable[[Callable], Callable]:
        """Declare the next step; options: approval, edits, max_attempts, retry_backoff(_max).

        :raises ValueError: for an unknown option or a step name used twice.
        """
        unknown = set(options) - _STEP_OPTIONS
        if unknown:
            raise ValueError(
                f"{self.name}.{name}: unknown step options {sorted(unknown)}; "
                f"known: {sorted(_STEP_OPTIONS)}"
            )
        if any(s.name == name for s in self.steps):
            raise ValueError(f"{self.name}: step {name!r} declared twice")

        def register(fn: Callable) -> Callable:
            self.steps.append(Step(self.name, name, fn, **options))
            return fn

        return register

    def get_step(self, name: str) -> Step:
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(f"{self.name} has no step {name!r}")

    def next_step(self, name: str) -> Step | None:
        """The step after ``name``, or None when it is the last."""
        names = [s.name for s in self.steps]
        i = names.index(name)
        return self.steps[i + 1] if i + 1 < len(self.steps) else None

    def chain_from(self, name: str) -> list[Step]:
        """The steps that run as one chain from ``name``: up to the next declared approval."""
        names = [s.name for s in self.steps]
        run: list[Step] = []
        for s in self.steps[names.index(name) :]:
            run.append(s)
            if s.approval:
                break
        return run

    def validate_input(self, data: dict) -> dict:
        """Validate ``inputData`` with the handler's schema; returns it unchanged.

        :raises marshmallow.ValidationError: naming the fields that are wrong.
        """
        return _validated(self.input_schema, data)


def _validated(schema: type[Schema] | None, data: Any) -> Any:
    """``data`` unchanged once ``schema`` (if any) loaded it.

    :raises marshmallow.ValidationError: naming the fields that are wrong.
    """
    if schema is not None:
        _instance(schema).load(data)
    return data


@functools.cache
def _instance(schema: type[Schema]) -> Schema:
    # One instance for every call: building a schema costs more than loading with it.
    return schema()


class Registry:
    """Handlers by job type."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def register(self, handler: Handler) -> Handler:
        """Add ``handler`` (its steps are declared after this, in its module).

        :raises ValueError: when another handler has the same name.
        """
        if self._handlers.get(handler.name, handler) is not handler:
            raise ValueError(f"two handlers are named {handler.name!r}")
        self._handlers[handler.name] = handler
        return handler

    def get(self, name: str) -> Handler:
        """:raises UnknownHandlerError: listing the known job types."""
        try:
            return self._handlers[name]
        except KeyError:
            raise UnknownHandlerError(
                f"Unknown jobType {name!r}; known job types: {', '.join(self.names())}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._handlers)

    def __iter__(self):
        return iter(self._handlers.values())


registry = Registry()


def load_handlers(extra_modules: list[str] = ()) -> Registry:
    """Import every module of the ``handlers`` package and the extra modules named.

    Each handler module registers itself on import, so adding a job type is one
    module in ``handlers/`` (or one listed in ``AGENTQ_HANDLER_MODULES``).
    """
    # By name, not by an import: the job types build on this module, not it on them.
    package = importlib.import_module(HANDLERS_PACKAGE)
    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{HANDLERS_PACKAGE}.{info.name}")
    for name in extra_modules:
        importlib.import_module(name)
    empty = [h.name for h in registry if not h.steps]
    if empty:
        raise ValueError(f"handlers without steps: {', '.join(empty)}")
    return registry
