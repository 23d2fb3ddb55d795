"""Review policies: who may decide a checkpoint, how many must approve, its deadline and
what the deadline does, reminders and escalation, named options, the schema of an
approver's data, and how many revisions may be asked for.

A checkpoint's policy is built in layers, each naming only the fields it sets: the
system's defaults (config ``REVIEW_*``), the step's (``@handler.step(..., policy=...)``),
the checkpoint's (``ctx.checkpoint(..., policy=...)``); then the job submission's
``review``, which may only tighten (``loosened`` says which of its fields would loosen,
for a 422; ``tightened_by`` applies it). The policy in force is stored with the
checkpoint as its JSON (camelCase, as the API shows it). This module imports nothing of
agentq's but the vocabulary.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any

import jsonschema

from app.status import CheckpointType
from app.status import OnTimeout

APPROVAL_REQUIRED = CheckpointType.APPROVAL_REQUIRED
#: The approvers entry that names a group: ``group:reviewers``.
GROUP_PREFIX = "group:"
#: The actor of the decisions a deadline makes.
TIMEOUT_ACTOR = "system:timeout"


class PolicyError(ValueError):
    """A policy that cannot hold; ``problems`` says what is wrong, by camelCase field."""

    def __init__(self, problems: dict[str, str]) -> None:
        super().__init__("; ".join(f"{name}: {msg}" for name, msg in problems.items()))
        self.problems = problems


@dataclass(frozen=True)
class Option:
    """A named outcome an approver may choose beside a plain approval; ``step``, when
    given, is the step the job resumes at (else the one after the checkpoint's)."""

    name: str
    step: str | None = None

    def to_json(self) -> dict:
        return {"name": self.name, "step": self.step}


@dataclass(frozen=True)
class Policy:
    """A review policy, or a layer of one: a field left None is not said by this layer."""

    #: User names and ``group:<name>``s who may decide; None: any admin.
    approvers: tuple[str, ...] | None = None
    #: Whether the job's submitter may decide its checkpoints (default False).
    allow_self_approval: bool | None = None
    #: Distinct approvals needed (default 1).
    min_approvals: int | None = None
    #: Whether one rejection rejects (default True); else a rejection is a vote against,
    #: and the checkpoint is rejected once so many are against that the approvals needed
    #: can no longer come.
    veto_on_reject: bool | None = None
    #: Seconds from opening to the deadline; None: no deadline.
    expires_in: float | None = None
    #: What the deadline decides (default ``reject``).
    on_timeout: OnTimeout | None = None
    #: Seconds before the deadline at which the approvers are reminded.
    remind_at: tuple[float, ...] | None = None
    #: Approvers added ``escalate_after`` seconds after the checkpoint opened.
    escalate_to: tuple[str, ...] | None = None
    escalate_after: float | None = None
    #: Named outcomes beside a plain approval.
    options: tuple[Option, ...] | None = None
    #: A JSON Schema for the data a reviewer sends with a decision.
    data_schema: dict | None = None
    #: How many times changes may be requested (None: no limit).
    max_revisions: int | None = None

    def __post_init__(self) -> None:
        problems = _problems(self)
        if problems:
            raise PolicyError(problems)

    # -- layers ---------------------------------------------------------------------------

    def said(self) -> dict[str, Any]:
        """The fields this layer sets."""
        return {
            f.name: v for f in dataclasses.fields(self) if (v := getattr(self, f.name)) is not None
        }

    def merged(self, layer: Policy | None) -> Policy:
        """This policy with what ``layer`` says put over it."""
        return self if layer is None else dataclasses.replace(self, **layer.said())

    def resolved(self) -> Policy:
        """Every field said: this layer over the built-in defaults."""
        return DEFAULT.merged(self)

    def loosened(self, review: Policy) -> dict[str, str]:
        """What ``review`` would loosen in this policy, by camelCase field: empty when it
        only tightens (or repeats) it."""
        mine, theirs = self.resolved(), review
        found = {}
        if theirs.approvers is not None and mine.approvers is not None:
            extra = [a for a in theirs.approvers if a not in mine.approvers]
            if extra:
                found["approvers"] = (
                    f"may only name approvers the handler allows ({', '.join(mine.approvers)}),"
                    f" not {', '.join(extra)}"
                )
        if theirs.allow_self_approval and not mine.allow_self_approval:
            found["allowSelfApproval"] = "self-approval is not allowed for this checkpoint"
        if theirs.min_approvals is not None and theirs.min_approvals < mine.min_approvals:
            found["minApprovals"] = f"must be at least {mine.min_approvals}"
        if theirs.veto_on_reject is False and mine.veto_on_reject:
            found["vetoOnReject"] = "one rejection rejects this checkpoint; it cannot be turned off"
        if _exceeds(theirs.expires_in, mine.expires_in):
            found["expiresIn"] = f"must be at most {mine.expires_in:g} seconds"
        if theirs.on_timeout is not None and _strictness(theirs.on_timeout) < _strictness(
            mine.on_timeout
        ):
            allowed = [t.value for t in OnTimeout if _strictness(t) >= _strictness(mine.on_timeout)]
            found["onTimeout"] = f"must be {' or '.join(allowed)}"
        if theirs.escalate_to is not None and not set(theirs.escalate_to) <= set(mine.escalate_to):
            found["escalateTo"] = "may only name whom the handler escalates to"
        if _exceeds(mine.escalate_after, theirs.escalate_after):
            found["escalateAfter"] = f"must be at least {mine.escalate_after:g} seconds"
        if theirs.options is not None:
            known = {o.name for o in mine.options}
            extra = [o.name for o in theirs.options if o.name not in known]
            if extra:
                found["options"] = (
                    f"may only keep options the handler declares, not {', '.join(extra)}"
                )
        if _exceeds(theirs.max_revisions, mine.max_revisions):
            found["maxRevisions"] = f"must be at most {mine.max_revisions}"
        return found

    def tightened_by(self, review: Policy | None) -> Policy:
        """This policy with ``review`` applied, field by field the stricter of the two (so a
        checkpoint a step opens with a looser policy than it declared still holds to the
        submission's)."""
        if review is None:
            return self
        mine, r = self.resolved(), review
        return dataclasses.replace(
            mine,
            approvers=_narrowed(mine.approvers, r.approvers),
            allow_self_approval=mine.allow_self_approval and r.allow_self_approval is not False,
            min_approvals=max(mine.min_approvals, r.min_approvals or 1),
            veto_on_reject=mine.veto_on_reject or bool(r.veto_on_reject),
            expires_in=_least(mine.expires_in, r.expires_in),
            on_timeout=max(mine.on_timeout, r.on_timeout or mine.on_timeout, key=_strictness),
            remind_at=tuple(sorted(set(mine.remind_at) | set(r.remind_at or ()), reverse=True)),
            escalate_to=_narrowed(mine.escalate_to, r.escalate_to) or (),
            escalate_after=max(
                (a for a in (mine.escalate_after, r.escalate_after) if a is not None),
                default=None,
            ),
            options=(
                mine.options
                if r.options is None
                else tuple(o for o in mine.options if o.name in {x.name for x in r.options})
            ),
            data_schema=_both(mine.data_schema, r.data_schema),
            max_revisions=_least(mine.max_revisions, r.max_revisions),
        )

    # -- the policy in force --------------------------------------------------------------

    def option(self, name: str) -> Option | None:
        return next((o for o in self.options or () if o.name == name), None)

    def to_json(self) -> dict:
        """The fields this layer says, as JSON (camelCase); ``resolved().to_json()`` is the
        whole policy in force, as it is stored with a checkpoint."""
        return {_camel(name): _jsonable(value) for name, value in self.said().items()}

    @functools.cached_property
    def api_json(self) -> dict:
        """Every field as JSON (camelCase), null where unsaid: as the API shows a
        checkpoint's policy. Made once per policy (a page of checkpoints shares a few)."""
        return {_camel(f.name): _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_json(cls, data: dict | None) -> Policy:
        """A layer from its camelCase JSON (a stored policy, a submission's ``review``);
        keys absent or null are not said."""
        data = data or {}
        tuples = {"approvers", "remind_at", "escalate_to"}
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            value = data.get(_camel(f.name))
            if value is None:
                continue
            if f.name in tuples:
                value = tuple(value)
            elif f.name == "options":
                value = tuple(
                    Option(o) if isinstance(o, str) else Option(o["name"], o.get("step"))
                    for o in value
                )
            elif f.name == "on_timeout":
                value = OnTimeout(value)
            values[f.name] = value
        return cls(**values)


def review_policy(checkpoint: Any) -> Policy | None:
    """The policy in force of a checkpoint (a row, or one just decided), every field said;
    None for an INFO checkpoint, which nobody decides."""
    if checkpoint.type != APPROVAL_REQUIRED:
        return None
    return Policy.from_json(checkpoint.policy).resolved()


def _problems(p: Policy) -> dict[str, str]:
    found = {}
    if p.min_approvals is not None and p.min_approvals < 1:
        found["minApprovals"] = "must be at least 1"
    for name in ("expires_in", "escalate_after"):
        value = getattr(p, name)
        if value is not None and value <= 0:
            found[_camel(name)] = "must be a positive number of seconds"
    if p.remind_at and any(r <= 0 for r in p.remind_at):
        found["remindAt"] = "each must be a positive number of seconds before the deadline"
    if p.max_revisions is not None and p.max_revisions < 0:
        found["maxRevisions"] = "must not be negative"
    if p.approvers is not None and not p.approvers:
        found["approvers"] = "must name at least one user or group (omit it for any admin)"
    if p.escalate_to and p.escalate_after is None:
        found["escalateAfter"] = "is needed with escalateTo: when to escalate"
    names = [o.name for o in p.options or ()]
    if len(names) != len(set(names)):
        found["options"] = "names must differ"
    if p.data_schema is not None:
        try:
            jsonschema.Draft202012Validator.check_schema(p.data_schema)
        except jsonschema.SchemaError as exc:
            found["dataSchema"] = f"is not a JSON Schema: {exc.message}"
    return found


def data_problems(schema: dict, data: Any) -> dict[str, list[str]]:
    """What is wrong with ``data`` under the JSON Schema ``schema``, by dotted path from the
    data (``files.0.path``; ``_schema`` for the data as a whole); empty when it fits."""
    found: dict[str, list[str]] = {}
    for error in jsonschema.Draft202012Validator(schema).iter_errors(data):
        path = ".".join(str(part) for part in error.absolute_path) or "_schema"
        found.setdefault(path, []).append(error.message)
    return found


def _strictness(on_timeout: OnTimeout) -> int:
    return list(OnTimeout).index(on_timeout)


def _least(a: float | None, b: float | None) -> float | None:
    given = [x for x in (a, b) if x is not None]
    return min(given) if given else None


def _exceeds(value: float | None, limit: float | None) -> bool:
    """Whether ``value`` is over ``limit``, both given."""
    return value is not None and limit is not None and value > limit


def _narrowed(mine: tuple[str, ...] | None, theirs: tuple[str, ...] | None):
    """The names a review gives that ``mine`` allows (``mine`` None: anyone); ``mine`` when
    the review gives none, or none that ``mine`` allows (it cannot widen, nor name others)."""
    if theirs is None:
        return mine
    kept = theirs if mine is None else tuple(a for a in theirs if a in mine)
    return kept or mine


def _both(mine: dict | None, theirs: dict | None) -> dict | None:
    """A JSON Schema that data must fit to fit both (either may be None: no schema)."""
    if mine is None or theirs is None:
        return mine or theirs
    return {"allOf": [mine, theirs]}


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [o.to_json() if isinstance(o, Option) else o for o in value]
    return value.value if isinstance(value, OnTimeout) else value


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


#: What a checkpoint's policy is where no layer says otherwise.
DEFAULT = Policy(
    approvers=None,
    allow_self_approval=False,
    min_approvals=1,
    veto_on_reject=True,
    expires_in=None,
    on_timeout=OnTimeout.REJECT,
    remind_at=(),
    escalate_to=(),
    escalate_after=None,
    options=(),
    data_schema=None,
    max_revisions=None,
)
