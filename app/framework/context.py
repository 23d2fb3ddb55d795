"""What a step receives: its ``StepContext``, and the last ``Approval`` on its job's way."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from app.policy import Policy
from app.status import CheckpointType

#: A checkpoint recorded with the step's result; it never blocks.
INFO = CheckpointType.INFO
#: A checkpoint that parks the job until an admin decides; the chain ends at its step.
APPROVAL_REQUIRED = CheckpointType.APPROVAL_REQUIRED


@dataclass(frozen=True)
class Approval:
    """The last approval on the job's way to a step, as the step sees it (None before any
    checkpoint): a retry after a later rejection still sees the earlier approval, with the
    approver's edit."""

    outcome: str
    approver: str | None
    reason: str | None
    #: The data as the approver edited it; None when approved as proposed.
    data: Any
    #: The data the checkpoint proposed.
    proposed: Any
    #: The decided checkpoint's id.
    checkpoint_id: str | None = None
    #: The named option the approver chose (the policy's ``options``), if any.
    option: str | None = None


@dataclass(frozen=True)
class Feedback:
    """What a reviewer asked for when they sent this step's last proposal back: the step
    runs again, and the checkpoint it opens is the next version."""

    #: The reviewer's words.
    text: str
    #: Data the reviewer sent with the request (an edit of the proposal), or None.
    data: Any
    #: Who asked.
    by: str | None
    #: The version of the checkpoint the feedback is on; this run opens ``version + 1``.
    version: int
    checkpoint_id: str | None = None


@dataclass
class StepContext:
    """What a step receives: the job's input, earlier outputs, the last approval on its
    job's way to it, the feedback of a request for changes to its last proposal, and tools.

    ``log(kind, message, data=None)`` writes a job log line at once (progress shows
    while the step runs); ``checkpoint(type, title, data=None, policy=None)``
    opens a checkpoint that is recorded with the step's result; ``approved(key,
    default)`` is what the approver sent for ``key``; ``revised(key, last)`` and
    ``proposal(**data)`` take a request for changes into the next proposal.
    """

    job_id: str
    job_type: str
    step: str
    attempt: int
    task_description: str
    input: dict
    #: What earlier steps returned, by step name.
    outputs: dict[str, Any]
    decision: Approval | None
    workspace: Any
    log: Callable[..., None]
    checkpoints: list[dict] = field(default_factory=list)
    #: Set when a reviewer requested changes to this step's last proposal.
    feedback: Feedback | None = None

    def approved(self, key: str, default: Any = None) -> Any:
        """The approver's edit of ``key``: ``decision.data[key]`` when the last approval
        carried edited data holding ``key``, else ``default``.

        >>> files = ctx.approved("files", default=ctx.input["files"])
        """
        edited = self.decision.data if self.decision else None
        if isinstance(edited, dict) and key in edited:
            return edited[key]
        return default

    def revised(self, key: str, last: Any) -> Any:
        """After a request for changes: what the reviewer sent for ``key`` with it, else
        ``last`` (the step's last proposal); logs that the step revises, and after whose
        feedback.

        >>> files = ctx.revised("files", last=previous) if ctx.feedback else ctx.input["files"]
        """
        feedback = self.feedback
        if feedback is None:
            return last
        self.log(
            "revision",
            f"Revising after feedback from {feedback.by}: {feedback.text}",
            data={"version": feedback.version + 1},
        )
        sent = feedback.data.get(key) if isinstance(feedback.data, dict) else None
        return last if sent is None else sent

    def proposal(self, **data: Any) -> dict:
        """A checkpoint's data; after a request for changes it also records what it revises:
        ``revision: {version, feedback, by}``."""
        feedback = self.feedback
        if feedback is None:
            return data
        revision = {"version": feedback.version + 1, "feedback": feedback.text, "by": feedback.by}
        return {**data, "revision": revision}

    def checkpoint(
        self,
        type: str,
        title: str,
        data: Any = None,
        expires_in: float | None = None,
        policy: Policy | None = None,
    ) -> None:
        """Open a checkpoint; an APPROVAL_REQUIRED one ends the chain after this step.

        ``policy`` says what it sets of the checkpoint's review policy over the step's
        (``expires_in`` is ``policy=Policy(expires_in=...)``); the job's ``review`` still
        tightens it.

        :raises ValueError: for another type, or a second APPROVAL_REQUIRED one.
        """
        if type not in (INFO, APPROVAL_REQUIRED):
            raise ValueError(f"checkpoint type must be {INFO} or {APPROVAL_REQUIRED}, not {type!r}")
        if type == APPROVAL_REQUIRED and self.blocks:
            raise ValueError("a step can open at most one APPROVAL_REQUIRED checkpoint")
        if expires_in is not None:
            policy = Policy(expires_in=expires_in).merged(policy)
        self.checkpoints.append(
            {
                "id": str(uuid.uuid4()),
                "type": type,
                "title": title,
                "data": data,
                "policy": policy,
            }
        )

    @property
    def blocks(self) -> bool:
        """Whether this step opened an APPROVAL_REQUIRED checkpoint."""
        return self.approval_checkpoint_id is not None

    @property
    def approval_checkpoint_id(self) -> str | None:
        """The id of the APPROVAL_REQUIRED checkpoint this step opened, if it opened one."""
        return next((c["id"] for c in self.checkpoints if c["type"] == APPROVAL_REQUIRED), None)
