"""Validate records, get approval, transform them, get the output approved, complete."""

from __future__ import annotations

from marshmallow import Schema
from marshmallow import fields
from marshmallow import validate

from app.framework import APPROVAL_REQUIRED
from app.framework import Handler
from app.framework import PermanentError
from app.framework import Policy
from app.framework import RecordsTable
from app.framework import StepContext
from app.framework import registry


class DataProcessingInput(Schema):
    records = fields.List(fields.Dict(), required=True, validate=validate.Length(min=1))
    #: Field names whose string values are upper-cased by the transform (default: all).
    uppercase = fields.List(fields.String(), load_default=None)


class RecordsEdit(Schema):
    """What an approver may send back at either checkpoint: the records, as edited."""

    records = fields.List(fields.Dict(), required=True, validate=validate.Length(min=1))
    #: The first checkpoint shows the columns it found; sending them back changes nothing.
    columns = fields.List(fields.String())
    #: A revised proposal says what it revised; sending it back changes nothing.
    revision = fields.Dict()


handler = registry.register(
    Handler(
        "data-processing",
        description="Validate, approve, transform, approve the output",
        input_schema=DataProcessingInput,
    )
)


@handler.step(
    "validate",
    approval=True,
    edits=RecordsEdit,
    view=RecordsTable("records"),
    policy=Policy(max_revisions=5),
)
def validate_records(ctx: StepContext) -> dict:
    """Propose the input's records; after a request for changes, the reviewer's records
    when they sent some, else the last proposal's, with their feedback recorded."""
    records = ctx.revised("records", last=_validated(ctx)) if ctx.feedback else ctx.input["records"]
    columns = sorted({key for record in records for key in record})
    ctx.log("thinking", f"Validated {len(records)} record(s) with columns {', '.join(columns)}")
    ctx.checkpoint(
        APPROVAL_REQUIRED,
        f"Approve processing {len(records)} record(s)",
        data=ctx.proposal(records=records, columns=columns),
    )
    output = {"count": len(records), "columns": columns}
    return output if ctx.feedback is None else {**output, "records": records}


@handler.step(
    "transform",
    approval=True,
    edits=RecordsEdit,
    view=RecordsTable("records"),
    policy=Policy(max_revisions=5),
)
def transform(ctx: StepContext) -> dict:
    """Upper-case the approved records' strings; after a request for changes, propose the
    reviewer's records when they sent some, else the last proposal's."""
    if ctx.feedback is not None:
        output = ctx.revised("records", last=ctx.outputs["transform"]["records"])
    else:
        output = _transformed(ctx, ctx.approved("records", default=_validated(ctx)))
    ctx.log("thinking", f"Transformed {len(output)} record(s)")
    ctx.checkpoint(
        APPROVAL_REQUIRED, "Approve the transformed output", data=ctx.proposal(records=output)
    )
    return {"records": output}


def _transformed(ctx: StepContext, records: list) -> list[dict]:
    """:raises PermanentError: when ``records`` is not a list of objects."""
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise PermanentError("records must be a list of objects")
    only = ctx.input.get("uppercase")
    return [
        {
            key: value.upper()
            if isinstance(value, str) and (only is None or key in only)
            else value
            for key, value in record.items()
        }
        for record in records
    ]


@handler.step("complete")
def complete(ctx: StepContext) -> dict:
    records = ctx.approved("records", default=ctx.outputs["transform"]["records"])
    ctx.log("completed", f"Processed {len(records)} record(s)")
    return {"processed": len(records), "records": records}


def _validated(ctx: StepContext) -> list[dict]:
    """The records validate last proposed: a revision's (its output keeps them), else the
    input's."""
    return ctx.outputs.get("validate", {}).get("records", ctx.input["records"])
