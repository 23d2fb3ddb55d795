"""Propose file changes, wait for a reviewer, then write them into the job's workspace."""

from __future__ import annotations

from marshmallow import Schema
from marshmallow import ValidationError
from marshmallow import fields
from marshmallow import validate

from app.framework import APPROVAL_REQUIRED
from app.framework import FileDiff
from app.framework import Handler
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


handler = registry.register(
    Handler(
        "code-generation",
        description="Write proposed files into the job's workspace after approval",
        input_schema=CodeGenerationInput,
    )
)


@handler.step("propose", approval=True, edits=CodeGenerationInput, view=FileDiff("files"))
def propose(ctx: StepContext) -> dict:
    files = ctx.input["files"]
    for f in files:
        ctx.workspace.resolve(f["path"])
    ctx.log(
        "thinking", f"Proposing {len(files)} file(s)", data={"paths": [f["path"] for f in files]}
    )
    ctx.checkpoint(APPROVAL_REQUIRED, "Review file changes", data={"files": files})
    return {"proposed": [f["path"] for f in files]}


@handler.step("write")
def write(ctx: StepContext) -> dict:
    files = ctx.approved("files", default=ctx.input["files"])
    written = ctx.workspace.write_all(files)
    ctx.log("completed", f"Wrote {len(written)} file(s)", data={"written": written})
    return {"written": written, "workspace": str(ctx.workspace.root)}
