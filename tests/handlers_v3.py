"""Release 3 of the ``test-release`` job type (release 1: ``tests.handlers_v1``): its
``apply`` step renamed ``execute``, so a job parked under release 1 has a next step this
release does not have.
"""

from __future__ import annotations

from app.framework import APPROVAL_REQUIRED
from app.framework import Handler
from app.framework import StepContext
from app.framework import registry

handler = registry.register(Handler("test-release", description="Release 3"))


@handler.step("propose", approval=True)
def propose(ctx: StepContext) -> dict:
    ctx.checkpoint(APPROVAL_REQUIRED, "Apply the change?", data={"change": ctx.input["change"]})
    return {"proposedBy": "release 3"}


@handler.step("execute")
def execute(ctx: StepContext) -> dict:
    return {"executedBy": "release 3"}
