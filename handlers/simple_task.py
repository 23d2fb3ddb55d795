"""Log the work, record an INFO checkpoint that does not block, complete."""

from __future__ import annotations

from app.framework import INFO
from app.framework import Handler
from app.framework import StepContext
from app.framework import registry

handler = registry.register(Handler("simple-task", description="Log, note progress, complete"))


@handler.step("run")
def run(ctx: StepContext) -> dict:
    ctx.log("thinking", f"Working on: {ctx.task_description}")
    keys = sorted(ctx.input)
    ctx.checkpoint(INFO, "Input received", data={"keys": keys})
    ctx.log("completed", "Task completed")
    return {"success": True, "inputKeys": keys}
