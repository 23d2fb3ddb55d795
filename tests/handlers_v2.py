"""Release 2 of the ``test-release`` job type (release 1: ``tests.handlers_v1``).

The step the parked jobs wait at, ``propose``, keeps its name; ``apply`` changed, and a
step was added after it.
"""

from __future__ import annotations

from app.framework import APPROVAL_REQUIRED
from app.framework import Handler
from app.framework import StepContext
from app.framework import registry

handler = registry.register(Handler("test-release", description="Release 2"))


@handler.step("propose", approval=True)
def propose(ctx: StepContext) -> dict:
    ctx.checkpoint(APPROVAL_REQUIRED, "Apply the change?", data={"change": ctx.input["change"]})
    return {"proposedBy": "release 2"}


@handler.step("apply")
def apply(ctx: StepContext) -> dict:
    change = ctx.approved("change", default=ctx.input["change"])
    return {"appliedBy": "release 2", "change": change}


@handler.step("announce")
def announce(ctx: StepContext) -> dict:
    return {"announcedBy": "release 2", "applied": ctx.outputs["apply"]}
