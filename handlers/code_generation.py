"""Propose file changes, wait for a reviewer, then write them into the job's workspace."""

from __future__ import annotations

from marshmallow import Schema
from marshmallow import ValidationError
from marshmallow import fields
from marshmallow import validate

from app.framework import APPROVAL_REQUIRED
from app.framework import FileDiff
from app.framework import Handler
from app.framework import Policy
from app.framework import StepContext
from app.framework import registry
from app.framework.workspace import NAME_MAX
from app.framework.workspace import PATH_PATTERN
from app.framework.workspace import path_problem


def _inside_workspace(path: str) -> None:
    problem = path_problem(path)
    if problem:
        raise ValidationError(problem)


class FileSchema(Schema):
    path = fields.String(
        required=True,
        validate=[validate.Length(min=1, max=1000), _inside_workspace],
        metadata={
            "pattern": PATH_PATTERN,
            "description": f"Relative to the job's workspace, each part at most {NAME_MAX} bytes",
        },
    )
    content = fields.String(required=True)


class CodeGenerationInput(Schema):
    files = fields.List(fields.Nested(FileSchema), required=True, validate=validate.Length(min=1))


class ProposalEdit(CodeGenerationInput):
    """What a reviewer may send back with an approval or a request for changes: the files,
    as edited."""

    #: A revised proposal says what it revised; sending it back changes nothing.
    revision = fields.Dict()


handler = registry.register(
    Handler(
        "code-generation",
        description="Write proposed files into the job's workspace after approval",
        input_schema=CodeGenerationInput,
    )
)


@handler.step(
    "propose",
    approval=True,
    edits=ProposalEdit,
    view=FileDiff("files"),
    policy=Policy(max_revisions=5),
)
def propose(ctx: StepContext) -> dict:
    """Propose the input's files; after a request for changes, the reviewer's files when
    they sent some, else the last proposal's, with their feedback recorded."""
    files = ctx.revised("files", last=_last_proposal(ctx)) if ctx.feedback else ctx.input["files"]
    for f in files:
        ctx.workspace.resolve(f["path"])
    ctx.log(
        "thinking", f"Proposing {len(files)} file(s)", data={"paths": [f["path"] for f in files]}
    )
    ctx.checkpoint(APPROVAL_REQUIRED, "Review file changes", data=ctx.proposal(files=files))
    output = {"proposed": [f["path"] for f in files]}
    return output if ctx.feedback is None else {**output, "files": files}


@handler.step("write")
def write(ctx: StepContext) -> dict:
    files = ctx.approved("files", default=_last_proposal(ctx))
    written = ctx.workspace.write_all(files)
    ctx.log("completed", f"Wrote {len(written)} file(s)", data={"written": written})
    return {"written": written, "workspace": str(ctx.workspace.root)}


def _last_proposal(ctx: StepContext) -> list[dict]:
    """The files propose last proposed: a revision's (its output keeps them), else the
    input's."""
    return ctx.outputs.get("propose", {}).get("files", ctx.input["files"])
