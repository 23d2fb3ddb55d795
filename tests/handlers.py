"""Handlers used only by the tests (loaded through AGENTQ_HANDLER_MODULES).

Steps coordinate with the tests through files whose paths come in ``inputData``:
a test holds a step with a gate file, and reads the marks a step leaves to see
how often it ran.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from celery.signals import before_task_publish

from app.framework import APPROVAL_REQUIRED
from app.framework import BeforeAfter
from app.framework import Handler
from app.framework import StepContext
from app.framework import registry


def mark(ctx: StepContext) -> None:
    """Append this step's name to the job's marks file: one line per run."""
    with open(ctx.input["marks"], "a") as out:
        out.write(f"{ctx.step}\n")


gated = registry.register(Handler("test-gated", description="A middle step that waits on a file"))


@gated.step("first")
def first(ctx: StepContext) -> dict:
    mark(ctx)
    return {"first": True}


@gated.step("wait")
def wait(ctx: StepContext) -> dict:
    """Run until the gate file exists (the test opens it), at most a minute."""
    mark(ctx)
    ctx.log("thinking", "waiting for the gate")
    deadline = time.monotonic() + 60
    while not Path(ctx.input["gate"]).exists():
        if time.monotonic() > deadline:
            raise TimeoutError("gate never opened")
        time.sleep(0.05)
    return {"waited": True}


@gated.step("last")
def last(ctx: StepContext) -> dict:
    mark(ctx)
    return {"done": True}


dies = registry.register(
    Handler("test-dies-sending", description="Its worker dies between a step and the next")
)
#: The file whose existence kills this process as it sends ``two`` (``inputData.die``).
_die_file: str | None = None


@dies.step("one")
def one(ctx: StepContext) -> dict:
    global _die_file
    mark(ctx)
    _die_file = ctx.input.get("die")
    return {"one": True}


@dies.step("two")
def two(ctx: StepContext) -> dict:
    mark(ctx)
    return {"two": True}


@before_task_publish.connect
def _die_before_sending_two(sender=None, **_kwargs) -> None:
    """SIGKILL this process once, as the chain sends ``two``: after ``one``'s result was
    committed, before the next message exists."""
    global _die_file
    if sender == dies.get_step("two").task_name and _die_file and Path(_die_file).exists():
        Path(_die_file).unlink()
        _die_file = None
        os.kill(os.getpid(), signal.SIGKILL)


flaky = registry.register(Handler("test-flaky", description="Fails while a file says so"))


@flaky.step("prepare")
def prepare(ctx: StepContext) -> dict:
    mark(ctx)
    return {"prepared": True}


@flaky.step("break", retry_backoff=0.2)
def maybe_break(ctx: StepContext) -> dict:
    """Fail while the ``broken`` file exists."""
    mark(ctx)
    if Path(ctx.input["broken"]).exists():
        raise RuntimeError("the broken file is there")
    return {"fixed": True}


@flaky.step("finish")
def finish(ctx: StepContext) -> dict:
    mark(ctx)
    return {"finished": True, "prepared": ctx.outputs["prepare"]["prepared"]}


runtime = registry.register(
    Handler("test-runtime-approval", description="Approvals decided by the steps at run time")
)


@runtime.step("plan")
def plan(ctx: StepContext) -> dict:
    """Opens an approval no declaration announced, when the input asks for one."""
    mark(ctx)
    if ctx.input.get("ask_in_plan"):
        ctx.checkpoint(APPROVAL_REQUIRED, "Approve the plan", data={"plan": "x"})
    return {"planned": True}


@runtime.step("review", approval=True)
def review(ctx: StepContext) -> dict:
    """Declared as an approval step, but opens none unless the input asks for one."""
    mark(ctx)
    if ctx.input.get("ask_in_review"):
        ctx.checkpoint(
            APPROVAL_REQUIRED, "Approve quickly", data={}, expires_in=ctx.input.get("expires_in")
        )
    return {"reviewed": True}


@runtime.step("apply")
def apply(ctx: StepContext) -> dict:
    mark(ctx)
    return {"applied": True}


renamed = registry.register(
    Handler("test-before-after", description="A checkpoint shown as before and after")
)


@renamed.step("rename", approval=True, view=BeforeAfter(before="old", after="new"))
def rename(ctx: StepContext) -> dict:
    """Propose the input's name upper-cased."""
    name = ctx.input["name"]
    ctx.checkpoint(APPROVAL_REQUIRED, "Rename", data={"old": name, "new": name.upper()})
    return {"new": name.upper()}


@renamed.step("keep")
def keep(ctx: StepContext) -> dict:
    return {"name": ctx.approved("new", default=ctx.outputs["rename"]["new"])}


flood = registry.register(Handler("test-flood", description="A short step, sent by the hundred"))


@flood.step("work")
def work(ctx: StepContext) -> dict:
    """Take a twentieth of a second, as a short real step might."""
    time.sleep(0.05)
    return {"n": ctx.input.get("n")}
