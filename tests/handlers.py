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
from app.framework import FileDiff
from app.framework import Handler
from app.framework import Policy
from app.framework import StepContext
from app.framework import registry
from app.status import OnTimeout


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


def mark_if_asked(ctx: StepContext) -> None:
    """``mark`` the step when the job's input names a marks file."""
    if "marks" in ctx.input:
        mark(ctx)


policy_review = registry.register(
    Handler("policy-review", description="A review under the policy its input says")
)


@policy_review.step("propose", approval=True)
def policy_propose(ctx: StepContext) -> dict:
    """Open a checkpoint whose own policy layer is ``inputData.policy`` (camelCase)."""
    mark_if_asked(ctx)
    policy = Policy.from_json(ctx.input.get("policy"))
    ctx.checkpoint(APPROVAL_REQUIRED, "Review the proposal", data={"n": 1}, policy=policy)
    return {"proposed": True}


@policy_review.step("apply")
def policy_apply(ctx: StepContext) -> dict:
    mark_if_asked(ctx)
    return {"applied": True}


@policy_review.step("staging")
def policy_staging(ctx: StepContext) -> dict:
    """The last step; an option may resume here. Returns the option the approver chose."""
    mark_if_asked(ctx)
    return {"option": ctx.decision.option}


policy_self = registry.register(
    Handler("policy-self-approval", description="Its submitter may approve its checkpoints")
)


@policy_self.step("propose", approval=True, policy=Policy(allow_self_approval=True))
def policy_self_propose(ctx: StepContext) -> dict:
    ctx.checkpoint(APPROVAL_REQUIRED, "Review your own proposal", data={"n": 1})
    return {"proposed": True}


@policy_self.step("apply")
def policy_self_apply(ctx: StepContext) -> dict:
    return {"applied": True}


policy_declared = registry.register(
    Handler("policy-declared", description="A step that declares its review policy")
)


@policy_declared.step(
    "propose",
    approval=True,
    policy=Policy(min_approvals=2, expires_in=3600, on_timeout=OnTimeout.REJECT, max_revisions=3),
)
def policy_declared_propose(ctx: StepContext) -> dict:
    ctx.checkpoint(APPROVAL_REQUIRED, "Review under the declared policy", data={"n": 1})
    return {"proposed": True}


@policy_declared.step("apply")
def policy_declared_apply(ctx: StepContext) -> dict:
    return {"applied": True}


revisions = registry.register(
    Handler("test-revisions", description="Proposes files, revised on a reviewer's feedback")
)


@revisions.step("propose", approval=True, view=FileDiff("files"))
def propose_revision(ctx: StepContext) -> dict:
    """Propose the input's files; sent back with feedback, end each with it as a comment."""
    note = f"# {ctx.feedback.text} (v{ctx.feedback.version + 1})\n" if ctx.feedback else ""
    files = [{"path": f["path"], "content": f["content"] + note} for f in ctx.input["files"]]
    ctx.checkpoint(APPROVAL_REQUIRED, "Review the files", data={"files": files})
    return {"proposed": len(files)}


@revisions.step("finish")
def finish_revision(ctx: StepContext) -> dict:
    return {"finished": True}
