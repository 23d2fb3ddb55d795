"""A job type: a ``Handler`` and its ordered steps (``Step``)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from marshmallow import Schema

from app.errors import UnknownStepError
from app.framework.context import StepContext
from app.framework.views import Json
from app.framework.views import View
from app.policy import Policy

_STEP_OPTIONS = {
    "approval",
    "edits",
    "view",
    "policy",
    "max_attempts",
    "retry_backoff",
    "retry_backoff_max",
}


@dataclass(frozen=True)
class Step:
    """One step of a handler: a function the runtime runs as the Celery task ``task_name``."""

    handler: str
    name: str
    fn: Callable[[StepContext], Any]
    #: Declares that the step opens an APPROVAL_REQUIRED checkpoint: chains end here.
    approval: bool = False
    #: The schema of the data an approver may send with an approval of the checkpoint this
    #: step opens (usually the schema of the checkpoint's own data). None: any JSON.
    edits: type[Schema] | None = None
    #: How reviewers see the data of the checkpoints this step opens; None: the handler's.
    view: View | None = None
    #: The review policy of the checkpoints this step opens, over the system's defaults.
    policy: Policy | None = None
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
    """A job type: a name, a description, an optional input schema, ordered steps, and the
    view of its checkpoints' data for the steps that declare none (default ``Json()``)."""

    def __init__(
        self,
        name: str,
        *,
        description: str = "",
        input_schema: type[Schema] | None = None,
        view: View | None = None,
    ) -> None:
        self.name = name
        self.description = description
        self.input_schema = input_schema
        self.view = view or Json()
        self.steps: list[Step] = []

    def step(self, name: str, **options: Any) -> Callable[[Callable], Callable]:
        """Declare the next step; options: approval, edits, view, policy, max_attempts,
        retry_backoff(_max).

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
        """:raises KeyError: when the handler has no such step."""
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
        if name not in names:
            raise UnknownStepError(
                f"Job type {self.name!r} has no step {name!r}; its steps: {', '.join(names)}"
            )
        run: list[Step] = []
        for s in self.steps[names.index(name) :]:
            run.append(s)
            if s.approval:
                break
        return run

    def loosened_by(self, review: Policy, defaults: Policy) -> dict[str, str]:
        """What a submission's ``review`` would loosen in the policy of any step that
        declares an approval (or a policy), by camelCase field; empty when it only tightens."""
        found: dict[str, str] = {}
        for step in self.steps:
            if step.approval or step.policy is not None:
                found.update(defaults.resolved().merged(step.policy).loosened(review))
        return found

    def check_options(self, policy: Policy | None) -> None:
        """:raises ValueError: when one of ``policy``'s options resumes at a step the
        handler does not have."""
        names = {s.name for s in self.steps}
        for option in (policy.options if policy else None) or ():
            if option.step is not None and option.step not in names:
                raise ValueError(
                    f"{self.name}: option {option.name!r} resumes at {option.step!r}, which is"
                    f" not a step; its steps: {', '.join(s.name for s in self.steps)}"
                )

    def view_of(self, name: str) -> View:
        """How the checkpoints of step ``name`` are shown: its view, else the handler's.

        :raises KeyError: when the handler has no such step.
        """
        return self.get_step(name).view or self.view

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
