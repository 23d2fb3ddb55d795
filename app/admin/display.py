"""How the admin pages show a checkpoint's data and an approver's edit of it.

The step that opened the checkpoint declares a view (``app.framework.views``), found
through the registry by the checkpoint's handler and step; ``present`` makes it ready
for its template, ``admin/views/<kind>.html``. A checkpoint whose step is no longer
deployed, or whose data does not have the view's shape, shows as JSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC
from datetime import datetime

from flask import current_app

from app.admin.diffs import UnifiedDiff
from app.admin.diffs import edit_diffs
from app.admin.diffs import file_diff
from app.admin.diffs import proposal_diffs
from app.errors import AgentqError
from app.framework import BeforeAfter
from app.framework import FileDiff
from app.framework import Json
from app.framework import RecordsTable
from app.framework import View
from app.framework import Workspace
from app.framework import registry
from app.models import Checkpoint
from app.policy import Policy
from app.status import CheckpointStatus
from app.status import OnTimeout
from app.status import Outcome

#: Records shown in a records table.
PREVIEW_ROWS = 50


def view_of(checkpoint: Checkpoint) -> View:
    """The view the checkpoint's step declares, or ``Json()`` when its data does not fit it."""
    view = registry.view(checkpoint.handler, checkpoint.step)
    return view if view.fits(checkpoint.data) else Json()


def present(checkpoint: Checkpoint) -> dict:
    """The checkpoint's data as its view's template reads it (``kind`` names the template)."""
    view, data = view_of(checkpoint), checkpoint.data
    if isinstance(view, FileDiff):
        files = view.files(data)
        if checkpoint.status != CheckpointStatus.PENDING:
            # Once decided, the workspace may hold the approved files: a diff against it
            # would show nothing, so show what was proposed instead.
            return {"kind": view.kind, "files": files, "diffs": None, "problem": None}
        diffs, problem = _workspace_diffs(checkpoint, files)
        return {"kind": view.kind, "files": files, "diffs": diffs, "problem": problem}
    if isinstance(view, RecordsTable):
        records = view.records(data)
        return {
            "kind": view.kind,
            "columns": view.column_names(data, records),
            "records": records[:PREVIEW_ROWS],
            "total": len(records),
        }
    if isinstance(view, BeforeAfter):
        return {
            "kind": view.kind,
            "sides": [(view.before, data[view.before]), (view.after, data[view.after])],
        }
    return {"kind": Json.kind, "data": data}


def _workspace_diffs(
    checkpoint: Checkpoint, files: list[dict]
) -> tuple[list[UnifiedDiff], str | None]:
    """The proposal against the job's workspace, or against nothing when it cannot be read."""
    workspace = Workspace(current_app.config["WORKSPACE_ROOT"], str(checkpoint.job_id))
    try:
        return proposal_diffs(workspace, files), None
    except (AgentqError, OSError, ValueError) as error:
        diffs = [file_diff(f["path"], None, f["content"]) for f in files]
        return diffs, f"The workspace could not be read ({error}); the files are shown whole."


def editable_files(checkpoint: Checkpoint) -> list[dict] | None:
    """The proposed files a reviewer may edit before approving: those of a file diff view;
    None for any other view."""
    view = view_of(checkpoint)
    return view.files(checkpoint.data) if isinstance(view, FileDiff) else None


def edited_files(checkpoint: Checkpoint) -> list[UnifiedDiff] | None:
    """What the approver changed in the proposed files, as diffs against the proposal;
    None unless both the checkpoint and the approved data hold files of a file diff view."""
    view, decision = view_of(checkpoint), checkpoint.decision
    if not isinstance(view, FileDiff) or decision is None:
        return None
    proposed, approved = view.files(checkpoint.data), view.files(decision.data)
    if proposed is None or approved is None:
        return None
    return edit_diffs(proposed, approved)


def present_edit(checkpoint: Checkpoint) -> dict | None:
    """What the approver changed, when they approved edited data: file diffs, else JSON."""
    decision = checkpoint.decision
    if decision is None or decision.data is None:
        return None
    diffs = edited_files(checkpoint)
    if diffs is not None:
        return {"kind": FileDiff.kind, "diffs": diffs}
    return {"kind": Json.kind, "data": decision.data}


def version_diffs(older: Checkpoint, newer: Checkpoint) -> list[UnifiedDiff] | None:
    """What changed in the proposed files from one version of a checkpoint to the next;
    None unless both hold files of a file diff view."""
    view = view_of(newer)
    if not isinstance(view, FileDiff) or not isinstance(view_of(older), FileDiff):
        return None
    return edit_diffs(view.files(older.data), view.files(newer.data))


def remaining(deadline: datetime, now: datetime | None = None) -> str:
    """How long until ``deadline``, as the countdown shows it (live.js ticks it the same way):
    ``in 45 s``, ``in 12 min``, ``in 3 h 20 min``, ``in 2 d 4 h``; ``any moment now`` once
    it passed (the next sweep decides)."""
    seconds = int((deadline - (now or datetime.now(UTC))).total_seconds())
    if seconds <= 0:
        return "any moment now"
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if seconds < 60:
        return f"in {seconds} s"
    if minutes < 60:
        return f"in {minutes} min"
    if hours < 24:
        return f"in {hours} h {minutes % 60} min"
    return f"in {days} d {hours % 24} h"


#: What a checkpoint's deadline does, as the pages say it: "rejected automatically in 12 min".
AT_DEADLINE = {
    OnTimeout.APPROVE: "approved automatically",
    OnTimeout.REJECT: "rejected automatically",
    OnTimeout.FAIL: "the job fails",
}


def seconds_words(seconds: float) -> str:
    """A policy's duration for people: ``90 s``, ``10 min``, ``2 h``, ``1 h 30 min``, ``3 d``."""
    seconds = int(seconds)
    if seconds < 120 and seconds % 60:
        return f"{seconds} s"
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if minutes < 60:
        return f"{minutes} min"
    if hours < 24:
        return f"{hours} h" + (f" {minutes % 60} min" if minutes % 60 else "")
    return f"{days} d" + (f" {hours % 24} h" if hours % 24 else "")


@dataclass(frozen=True)
class Review:
    """A checkpoint's review policy and votes, said for people."""

    policy: Policy
    #: "Any admin" or "alice, group:leads".
    deciders: str
    #: The admins who may decide it, by name (its submitter left out unless allowed).
    eligible: list[str]
    approvals: int
    rejections: int
    #: The deadline and what it does (``AT_DEADLINE``); None without a deadline.
    deadline: datetime | None
    at_deadline: str
    #: Requests for changes left before the policy refuses one; None: no limit.
    revisions_left: int | None

    @property
    def tally(self) -> str:
        """``1/2 approvals``."""
        return f"{self.approvals}/{self.policy.min_approvals} approvals"


def review_of(checkpoint: Checkpoint, eligible: list[str]) -> Review | None:
    """The review of an approval checkpoint (None for an INFO one); ``eligible`` are the
    admins who may decide it (``queries.eligible_deciders``)."""
    policy = checkpoint.review_policy
    if policy is None:
        return None
    approvers = checkpoint.approvers
    left = None
    if policy.max_revisions is not None:
        left = max(0, policy.max_revisions - checkpoint.version + 1)
    return Review(
        policy=policy,
        deciders=", ".join(approvers) if approvers is not None else "Any admin",
        eligible=eligible,
        approvals=checkpoint.approvals,
        rejections=checkpoint.rejections,
        deadline=checkpoint.expires_at,
        at_deadline=AT_DEADLINE[policy.on_timeout],
        revisions_left=left,
    )


def why_not(checkpoint: Checkpoint, user, allowed: bool) -> str | None:
    """Why ``user`` (an admin) may not vote on the pending ``checkpoint``: they voted, they
    submitted its job, or they are not among its approvers; None when they may."""
    mine = next((v for v in checkpoint.votes if v.user_id == user.id), None)
    if mine is not None:
        verb = {Outcome.APPROVED: "approved", Outcome.REJECTED: "rejected"}.get(
            mine.outcome, "voted on"
        )
        left = checkpoint.review_policy.min_approvals - checkpoint.approvals
        waiting = f"waiting for {left} more approval{'s' if left != 1 else ''}"
        return f"You {verb} this at {mine.created_at.astimezone(UTC):%H:%M}; {waiting}."
    if allowed:
        return None
    if checkpoint.job.user_id == user.id and not checkpoint.review_policy.allow_self_approval:
        return "You submitted this job; its policy does not allow self-approval."
    return f"Only {', '.join(checkpoint.approvers or ())} may decide."
