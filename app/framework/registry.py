"""The registry of handlers by job type, which the runtime builds chains from.

A handler module registers its handler and declares its steps with a decorator::

    handler = registry.register(Handler("code-generation", description="Write files"))

    @handler.step("propose", approval=True, view=FileDiff("files"))
    def propose(ctx: StepContext) -> dict:
        ctx.checkpoint(APPROVAL_REQUIRED, "Review file changes", data={"files": ctx.input["files"]})
        return {"proposed": [f["path"] for f in ctx.input["files"]]}

Each step becomes a Celery task named ``agentq.<handler>.<step>``. ``approval=True``
declares that the step opens an APPROVAL_REQUIRED checkpoint, so the chain the
runtime builds ends there; a step may also open one at run time without declaring
it, and the chain stops at it all the same.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator

from app.errors import UnknownHandlerError
from app.framework.handler import Handler
from app.framework.views import Json
from app.framework.views import View

#: The package whose every module is a job type, loaded by ``load_handlers``.
HANDLERS_PACKAGE = "handlers"


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

    def view(self, handler: str, step: str) -> View:
        """How the checkpoints opened by ``step`` of ``handler`` are shown to reviewers;
        ``Json()`` when that handler or step is not deployed (any more)."""
        found = self._handlers.get(handler)
        if found is None or not any(s.name == step for s in found.steps):
            return Json()
        return found.view_of(step)

    def names(self) -> list[str]:
        return sorted(self._handlers)

    def __iter__(self) -> Iterator[Handler]:
        return iter(self._handlers.values())


registry = Registry()


def load_handlers(extra_modules: list[str] = ()) -> Registry:
    """Import every module of the ``handlers`` package and the extra modules named.

    Each handler module registers itself on import, so adding a job type is one
    module in ``handlers/`` (or one listed in ``AGENTQ_HANDLER_MODULES``).

    :raises ValueError: when a handler has no steps, or an option of a step's policy
        resumes at a step it does not have.
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
    for handler in registry:
        for step in handler.steps:
            handler.check_options(step.policy)
    return registry
