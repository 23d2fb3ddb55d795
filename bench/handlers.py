"""A handler for the bench (loaded through AGENTQ_HANDLER_MODULES): when does the
continuation of an approval start?"""

from __future__ import annotations

import time

from app.framework import APPROVAL_REQUIRED
from app.framework import Handler
from app.framework import StepContext
from app.framework import registry

handler = registry.register(
    Handler("bench-approval", description="Ask for approval, then note when the next step starts")
)


@handler.step("ask", approval=True)
def ask(ctx: StepContext) -> dict:
    ctx.checkpoint(APPROVAL_REQUIRED, "Go on?")
    return {}


@handler.step("go")
def go(ctx: StepContext) -> dict:
    return {"startedAt": time.time()}
