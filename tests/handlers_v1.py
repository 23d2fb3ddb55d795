"""Release 1 of the ``test-release`` job type, for the deploy-while-parked test.

``tests.handlers_v2`` is release 2 of the same job type. A job parked at ``propose``
under release 1 is approved after a deploy of release 2 and must continue with it.
Loaded through ``AGENTQ_HANDLER_MODULES`` by that test's processes only.
"""

from __future__ import annotations

from app.framework import APPROVAL_REQUIRED
from app.framework import Handler
from app.framework import StepContext
from app.framework import registry

handler = registry.register(Handler("test-release", description="Release 1"))


@handler.step("propose", approval=True)
def propose(ctx: StepContext) -> dict:
    ctx.checkpoint(APPROVAL_REQUIRED, "Apply the change?", data={"change": ctx.input["change"]})
    return {"proposedBy": "release 1"}


@handler.step("apply")
def apply(ctx: StepContext) -> dict:
    return {"appliedBy": "release 1", "change": ctx.input["change"]}
