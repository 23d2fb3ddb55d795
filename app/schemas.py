"""Request and response schemas, with the guide's camelCase JSON names."""

from __future__ import annotations

import functools
import math
import re
from typing import Any

from flask import current_app
from marshmallow import Schema
from marshmallow import ValidationError
from marshmallow import fields
from marshmallow import post_load
from marshmallow import validate
from marshmallow import validates
from marshmallow import validates_schema

from app.config import MAX_PRIORITY
from app.errors import UnknownHandlerError
from app.framework import Handler
from app.framework.registry import registry
from app.policy import Option
from app.policy import Policy
from app.policy import PolicyError
from app.status import JobStatus
from app.status import OnTimeout
from app.status import Outcome

#: The deepest nesting accepted in JSON data. Every later json.dumps of it (the jsonb
#: insert, the response, the worker) must manage it too, well within Python's recursion limit.
MAX_JSON_DEPTH = 64


def storable(value) -> None:
    """Check that Postgres can store ``value``: its strings, its numbers and its depth.

    Postgres text and jsonb hold neither NUL characters nor unpaired surrogates, and
    jsonb holds no NaN or infinity (Python's JSON reads ``NaN``, ``Infinity`` and
    ``1e400`` as floats); psycopg2 or Postgres would fail on them (a 500) instead of
    refusing them. A problem inside a list or an object is reported at its place:
    ``{"files": {0: {"content": [...]}}}``, which the API shows as ``files.0.content``.

    :raises ValidationError: saying what is wrong, and where.
    """
    stack: list[tuple[Any, tuple]] = [(value, ())]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            _check_text(item, path)
        elif isinstance(item, float) and not math.isfinite(item):
            raise _at(path, "Must be a finite number: NaN, Infinity and 1e400 are not JSON.")
        elif isinstance(item, dict | list):
            if len(path) >= MAX_JSON_DEPTH:
                raise _at(path, f"Must not be nested more than {MAX_JSON_DEPTH} levels deep.")
            if isinstance(item, dict):
                for key in item:
                    _check_text(key, path, "Keys must")
            children = item.items() if isinstance(item, dict) else enumerate(item)
            stack.extend((child, (*path, key)) for key, child in children)


def _check_text(text: str, path: tuple, subject: str = "Must") -> None:
    """:raises ValidationError: at ``path`` for a NUL character or an unpaired surrogate."""
    if "\x00" in text:
        raise _at(path, f"{subject} not contain NUL characters.")
    try:
        text.encode()
    except UnicodeEncodeError:
        raise _at(path, f"{subject} not contain unpaired surrogates.") from None


def _at(path: tuple, message: str) -> ValidationError:
    """A ValidationError whose messages nest ``message`` under ``path``."""
    messages: Any = [message]
    for key in reversed(path):
        messages = {key: messages}
    return ValidationError(messages)


#: What the OpenAPI document says of a string ``storable`` checks: no NUL characters. (Nor
#: unpaired surrogates, which JSON can escape but a pattern cannot name.)
STORABLE_TEXT = r"^[^\x00]*$"
#: A paging cursor (``app.paging``): the microseconds since the epoch of the last row's
#: creation (up to the year 2286), a dot, and the 32 hex digits of its id. Every string of this
#: form is a place in the order, so none that matches is refused.
CURSOR_PATTERN = r"^[0-9]{1,16}\.[0-9a-f]{32}$"


def known_job_type(name: str) -> None:
    """:raises ValidationError: for a job type without a handler, listing the known ones."""
    try:
        registry.get(name)
    except UnknownHandlerError as exc:
        raise ValidationError(exc.message) from None


def cursor_from_this_api(cursor: str) -> None:
    """:raises ValidationError: for a cursor that does not match ``CURSOR_PATTERN``."""
    if not re.fullmatch(CURSOR_PATTERN, cursor):
        raise ValidationError("Not a cursor from this API: send the nextCursor of the page before.")


class JobType(fields.String):
    """A registered job type. The OpenAPI document lists them as an enum, read from the
    registry when the document is built (:func:`job_type_enum`)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(validate=known_job_type, **kwargs)


class Cursor(fields.String):
    """A paging cursor: the ``nextCursor`` of the page before."""

    def __init__(self) -> None:
        super().__init__(
            validate=cursor_from_this_api,
            metadata={
                "pattern": CURSOR_PATTERN,
                "description": "The nextCursor of the previous page (opaque: "
                "send it back as it came); without it, the first page",
            },
        )


class NextCursor(fields.String):
    """The cursor of the next page; null on the last one."""

    def __init__(self) -> None:
        super().__init__(
            allow_none=True,
            metadata={
                "pattern": CURSOR_PATTERN,
                "description": "Send as cursor for the next page; null on the last page",
            },
        )


def job_type_enum(_converter, field: fields.Field, ret: dict, **_kwargs) -> dict:
    """apispec attribute function: a :class:`JobType` field is an enum of the job types
    registered when the document is built, unless the field names its own."""
    if isinstance(field, JobType) and "enum" not in ret:
        return {"enum": registry.names()}
    return {}


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


class CamelSchema(Schema):
    """Dumps and loads ``snake_case`` attributes as ``camelCase`` JSON names."""

    def on_bind_field(self, field_name: str, field_obj: fields.Field) -> None:
        field_obj.data_key = camel(field_obj.data_key or field_name)


# -- Requests ------------------------------------------------------------------------------


def _seconds(**metadata) -> fields.Float:
    return fields.Float(
        validate=validate.Range(min=0, min_inclusive=False, max=10 * 365 * 86400),
        allow_nan=False,
        metadata=metadata,
    )


def _names(**metadata) -> fields.List:
    return fields.List(
        fields.String(validate=[validate.Length(min=1, max=106), storable]),
        validate=validate.Length(min=1, max=100),
        metadata=metadata,
    )


class OptionSchema(CamelSchema):
    name = fields.String(required=True, validate=[validate.Length(min=1, max=100), storable])
    step = fields.String(
        allow_none=True,
        metadata={"description": "The step the job resumes at when chosen (null: the next)"},
    )


class ReviewPolicySchema(CamelSchema):
    """A checkpoint's review policy (``app.policy``). As a job's ``review``, each field given
    may only tighten what the job type's handler declares (422 naming the field)."""

    approvers = _names(
        description="Users and groups (group:<name>) who may decide; absent: any admin"
    )
    allow_self_approval = fields.Boolean(
        metadata={"description": "Whether the job's submitter may decide (default false)"}
    )
    min_approvals = fields.Integer(
        strict=True,
        validate=validate.Range(min=1, max=100),
        metadata={"description": "Distinct approvals needed (default 1)"},
    )
    veto_on_reject = fields.Boolean(
        metadata={"description": "Whether one rejection rejects (default true)"}
    )
    expires_in = _seconds(description="Seconds from opening to the deadline")
    on_timeout = fields.String(
        validate=validate.OneOf([t.value for t in OnTimeout]),
        metadata={"description": "What the deadline decides (default reject)"},
    )
    remind_at = fields.List(
        _seconds(),
        validate=validate.Length(max=10),
        metadata={"description": "Seconds before the deadline at which to remind"},
    )
    escalate_to = _names(description="Approvers added at escalateAfter")
    escalate_after = _seconds(description="Seconds from opening to the escalation")
    options = fields.List(
        fields.Nested(OptionSchema),
        validate=validate.Length(max=20),
        metadata={"description": "Named outcomes an approval may choose"},
    )
    data_schema = fields.Dict(
        allow_none=True,
        validate=storable,
        metadata={"description": "A JSON Schema for the data a reviewer sends"},
    )
    max_revisions = fields.Integer(
        strict=True,
        allow_none=True,
        validate=validate.Range(min=0, max=100),
        metadata={"description": "How many times changes may be requested"},
    )

    @post_load
    def to_policy(self, data: dict, **_kwargs) -> Policy:
        """The policy layer it says.

        :raises ValidationError: naming the fields that cannot hold together.
        """
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        if "options" in values:
            values["options"] = tuple(Option(**o) for o in values["options"])
        if "on_timeout" in values:
            values["on_timeout"] = OnTimeout(values["on_timeout"])
        try:
            return Policy(**values)
        except PolicyError as exc:
            raise ValidationError({k: [m] for k, m in exc.problems.items()}) from None


class JobCreateSchema(CamelSchema):
    job_type = JobType(required=True, metadata={"description": "A registered job type"})
    task_description = fields.String(
        required=True,
        validate=[validate.Length(min=1, max=10_000), storable],
        metadata={"pattern": STORABLE_TEXT},
    )
    input_data = fields.Dict(
        keys=fields.String(),
        load_default=dict,
        validate=storable,
        metadata={"description": "What the job type's handler takes"},
    )
    priority = fields.Integer(
        strict=True,
        load_default=5,
        validate=validate.Range(min=0, max=MAX_PRIORITY),
        metadata={"description": "0 (lowest) to 10 (highest); higher runs first"},
    )

    review = fields.Nested(
        ReviewPolicySchema,
        metadata={
            "description": "Tightens the review policy of every checkpoint the job opens: "
            "more approvals, fewer approvers, a shorter deadline, a stricter onTimeout"
        },
    )

    @validates("priority")
    def not_a_boolean(self, value: int, data_key: str) -> None:
        if isinstance(value, bool):
            raise ValidationError("Not a valid integer.")

    @validates_schema(skip_on_field_errors=True)
    def input_fits_handler(self, data: dict, **_kwargs) -> None:
        try:
            registry.get(data["job_type"]).validate_input(data["input_data"])
        except ValidationError as exc:
            raise ValidationError({"inputData": exc.messages}) from None

    @validates_schema(skip_on_field_errors=True)
    def review_only_tightens(self, data: dict, **_kwargs) -> None:
        """:raises ValidationError: naming each ``review`` field that would loosen the
        policy an approval step of the job type declares."""
        if "review" not in data:
            return
        defaults = current_app.config["REVIEW_DEFAULTS"]
        loosened = registry.get(data["job_type"]).loosened_by(data["review"], defaults)
        if loosened:
            raise ValidationError({"review": {k: [m] for k, m in loosened.items()}})


@functools.cache
def job_create_of(handler: Handler) -> type[JobCreateSchema]:
    """The body of a job of ``handler``'s type, as the OpenAPI document shows it: ``jobType``
    is the handler's name, ``inputData`` what its input schema loads (required when an empty
    object does not load). :class:`JobCreateSchema` validates; this only documents."""
    variant: dict[str, fields.Field] = {
        "job_type": JobType(required=True, metadata={"enum": [handler.name]})
    }
    if handler.input_schema is not None:
        try:
            handler.validate_input({})
            required = False
        except ValidationError:
            required = True
        variant["input_data"] = fields.Nested(
            handler.input_schema,
            required=required,
            metadata={"description": f"What {handler.name} takes"},
        )
    words = re.split(r"[^A-Za-z0-9]+", handler.name)
    return JobCreateSchema.from_dict(variant, name="JobCreate" + "".join(map(str.title, words)))


def job_create_doc() -> dict:
    """The OpenAPI schema of a job submission: one body per registered job type, told
    apart by ``jobType``."""
    variants = {handler.name: job_create_of(handler) for handler in registry}
    # apispec names each variant's component after its class (flask-smorest's resolver).
    mapping = {name: f"#/components/schemas/{cls.__name__}" for name, cls in variants.items()}
    return {
        "oneOf": [cls() for cls in variants.values()],
        "discriminator": {"propertyName": "jobType", "mapping": mapping},
    }


class JobActionSchema(Schema):
    action = fields.String(required=True, validate=validate.OneOf(["cancel", "retry"]))


class JobListArgs(CamelSchema):
    """A jobs list's filters and page, as the admin pages take them: a job type no handler
    serves any more can still be filtered on."""

    status = fields.String(validate=validate.OneOf([s.value for s in JobStatus]))
    job_type = fields.String(validate=storable)
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))
    cursor = Cursor()


class ApiJobListArgs(JobListArgs):
    """The API's: ``jobType`` is a registered job type, as the OpenAPI document's enum says."""

    job_type = JobType()


class CheckpointListArgs(CamelSchema):
    """The pending checkpoints' filter and page, as the admin pages take them."""

    job_type = fields.String(validate=storable)
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))
    cursor = Cursor()


class ApiCheckpointListArgs(CheckpointListArgs):
    """The API's: ``jobType`` is a registered job type, as the OpenAPI document's enum says."""

    job_type = JobType()
    mine = fields.Boolean(
        load_default=False,
        metadata={"description": "Only the checkpoints you may vote on"},
    )


#: The largest version a checkpoint can have: its column is a Postgres integer.
MAX_VERSION = 2**31 - 1


def _version() -> fields.Integer:
    return fields.Integer(
        strict=True,
        allow_none=True,
        validate=validate.Range(min=1, max=MAX_VERSION),
        metadata={
            "description": "The version of the checkpoint decided (absent: the current one; "
            "409 stale_version, carrying the current one, when it is not)"
        },
    )


def _text(required: bool) -> fields.String:
    return fields.String(
        required=required,
        allow_none=not required,
        validate=[validate.Length(min=1 if required else 0, max=10_000), storable],
        metadata={"pattern": STORABLE_TEXT},
    )


def _data(description: str) -> fields.Raw:
    return fields.Raw(allow_none=True, validate=storable, metadata={"description": description})


class ApprovalSchema(Schema):
    reason = _text(required=False)
    data = _data(
        "The checkpoint data as edited, checked against what the checkpoint's step accepts "
        "as an edit and its policy's dataSchema (422 naming the data field at fault)"
    )
    version = _version()
    option = fields.String(
        allow_none=True,
        validate=[validate.Length(min=1, max=100), storable],
        metadata={"description": "One of the policy's options (422 when it is not)"},
    )


class RejectionSchema(Schema):
    reason = _text(required=True)
    version = _version()


class RequestChangesSchema(Schema):
    feedback = _text(required=True)
    data = _data(
        "Data for the step's next proposal (an edit of this one), checked against the "
        "policy's dataSchema"
    )
    version = _version()


#: A bulk decision's outcome, and what it calls the reviewer's words.
BULK_OUTCOMES = (Outcome.APPROVED, Outcome.REJECTED, Outcome.CHANGES_REQUESTED)


class BulkItemSchema(CamelSchema):
    """One decision of a bulk request; ``reason`` is the feedback of a request for changes
    (and required for it and for a rejection)."""

    id = fields.UUID(required=True)
    outcome = fields.String(
        required=True, validate=validate.OneOf([o.value for o in BULK_OUTCOMES])
    )
    version = _version()
    reason = _text(required=False)
    data = _data("As for a single decision")
    option = fields.String(allow_none=True, validate=[validate.Length(min=1, max=100), storable])

    @validates_schema(skip_on_field_errors=True)
    def words_when_needed(self, data: dict, **_kwargs) -> None:
        if data["outcome"] != Outcome.APPROVED and not data.get("reason"):
            raise ValidationError(
                {"reason": ["Required for a rejection or a request for changes."]}
            )


class BulkDecisionsSchema(Schema):
    decisions = fields.List(
        fields.Dict(),
        required=True,
        validate=validate.Length(min=1, max=100),
        metadata={"description": "Up to 100 decisions, each a BulkItem: decided one by one"},
    )


# -- Responses -----------------------------------------------------------------------------


class PolicyField(fields.Nested):
    """A checkpoint's policy (a resolved ``Policy``), documented as ``ReviewPolicySchema``
    and written as the policy's own JSON, every field named (marshmallow's nested dump of
    each row's policy cost a page of 50 checkpoints a third of its time)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(ReviewPolicySchema, **kwargs)

    def _serialize(self, value: Policy | None, attr, obj, **kwargs) -> dict | None:
        return None if value is None else value.api_json


class DecisionSchema(CamelSchema):
    """A vote: a reviewer's, or system:timeout's."""

    id = fields.UUID()
    outcome = fields.String(metadata={"enum": [o.value for o in Outcome]})
    reason = fields.String(
        allow_none=True, metadata={"description": "The reason, or a request's feedback"}
    )
    data = fields.Raw(allow_none=True, metadata={"description": "What was approved, if edited"})
    option = fields.String(allow_none=True)
    decided_by = fields.String(
        allow_none=True, metadata={"description": "A user, or system:timeout"}
    )
    user_id = fields.UUID(allow_none=True)
    ip = fields.String(allow_none=True)
    user_agent = fields.String(allow_none=True)
    created_at = fields.AwareDateTime()


class CheckpointSchema(CamelSchema):
    id = fields.UUID()
    job_id = fields.UUID()
    type = fields.String()
    status = fields.String()
    title = fields.String()
    data = fields.Raw(allow_none=True, metadata={"description": "What the step proposed"})
    step = fields.String()
    resume_step = fields.String(allow_none=True)
    created_at = fields.AwareDateTime()
    expires_at = fields.AwareDateTime(allow_none=True)
    decided_at = fields.AwareDateTime(allow_none=True)
    decision = fields.Nested(
        DecisionSchema, allow_none=True, metadata={"description": "The vote that settled it"}
    )
    version = fields.Integer(metadata={"description": "1, then one more per request for changes"})
    policy = PolicyField(attribute="review_policy", allow_none=True)
    approvers = fields.List(
        fields.String(),
        allow_none=True,
        metadata={"description": "Who may decide now (escalation adds); null: any admin"},
    )
    approvals = fields.Integer()
    rejections = fields.Integer()
    votes = fields.List(fields.Nested(DecisionSchema), metadata={"description": "Oldest first"})


class LogSchema(CamelSchema):
    id = fields.UUID()
    step = fields.String(allow_none=True)
    kind = fields.String()
    message = fields.String()
    data = fields.Raw(allow_none=True)
    created_at = fields.AwareDateTime()


class StepSchema(CamelSchema):
    id = fields.UUID()
    step = fields.String()
    attempt = fields.Integer()
    status = fields.String()
    output = fields.Raw(allow_none=True)
    error = fields.String(allow_none=True)
    worker = fields.String(allow_none=True)
    started_at = fields.AwareDateTime()
    finished_at = fields.AwareDateTime(allow_none=True)


class JobSchema(CamelSchema):
    id = fields.UUID()
    job_type = fields.String()
    task_description = fields.String()
    input_data = fields.Dict()
    priority = fields.Integer()
    status = fields.String()
    current_step = fields.String(allow_none=True)
    result = fields.Raw(allow_none=True)
    error = fields.String(allow_none=True)
    user_id = fields.UUID()
    owner = fields.String()
    created_at = fields.AwareDateTime()
    updated_at = fields.AwareDateTime()
    started_at = fields.AwareDateTime(allow_none=True)
    completed_at = fields.AwareDateTime(attribute="finished_at", allow_none=True)


class JobDetailSchema(JobSchema):
    logs = fields.List(fields.Nested(LogSchema))
    checkpoints = fields.List(fields.Nested(CheckpointSchema))
    steps = fields.List(fields.Nested(StepSchema))


class JobEnvelopeSchema(Schema):
    success = fields.Boolean(dump_default=True)
    job = fields.Nested(JobDetailSchema)


class JobListEnvelopeSchema(CamelSchema):
    success = fields.Boolean(dump_default=True)
    jobs = fields.List(fields.Nested(JobSchema))
    next_cursor = NextCursor()


class CheckpointListEnvelopeSchema(CamelSchema):
    success = fields.Boolean(dump_default=True)
    checkpoints = fields.List(fields.Nested(CheckpointSchema))
    next_cursor = NextCursor()


class PendingCheckpointSchema(CheckpointSchema):
    job = fields.Nested(JobSchema)
    may_decide = fields.Boolean(
        metadata={
            "description": "Whether you may vote on it: among its approvers, not the job's "
            "submitter (unless its policy allows), and not voted yet"
        }
    )


class PendingListEnvelopeSchema(CamelSchema):
    success = fields.Boolean(dump_default=True)
    checkpoints = fields.List(fields.Nested(PendingCheckpointSchema))
    next_cursor = NextCursor()


class CheckpointEnvelopeSchema(Schema):
    success = fields.Boolean(dump_default=True)
    checkpoint = fields.Nested(CheckpointSchema)


class CheckpointDetailSchema(CheckpointSchema):
    job = fields.Nested(JobSchema)


class CheckpointDetailEnvelopeSchema(Schema):
    success = fields.Boolean(dump_default=True)
    checkpoint = fields.Nested(CheckpointDetailSchema)
    versions = fields.List(
        fields.Nested(CheckpointSchema),
        metadata={"description": "Every version its step proposed, oldest first"},
    )


class BulkResultSchema(Schema):
    id = fields.String(allow_none=True, metadata={"description": "The item's checkpoint id"})
    status = fields.Integer(metadata={"description": "200, or the status it would have alone"})
    checkpoint = fields.Nested(CheckpointSchema)
    error = fields.Nested(lambda: ErrorSchema())


class BulkResultsEnvelopeSchema(Schema):
    success = fields.Boolean(dump_default=True)
    results = fields.List(fields.Nested(BulkResultSchema), metadata={"description": "In order"})


class ErrorSchema(Schema):
    code = fields.String(required=True)
    message = fields.String(required=True)
    details = fields.Raw(
        required=True,
        allow_none=True,
        metadata={
            "description": "Messages by field when the request is refused (dotted names: "
            "inputData.files.0.path), the checkpoint with its first decision when it was "
            "decided already, limit and retryAfter over a rate limit; otherwise null"
        },
    )


class ErrorEnvelopeSchema(Schema):
    success = fields.Boolean(required=True, dump_default=False, metadata={"enum": [False]})
    error = fields.Nested(ErrorSchema, required=True)
