"""How the admin pages show a checkpoint's data and an approver's edit of it.

The step that opened the checkpoint declares a view (``app.framework.views``), found
through the registry by the checkpoint's handler and step; ``present`` makes it ready
for its template, ``admin/views/<kind>.html``. A checkpoint whose step is no longer
deployed, or whose data does not have the view's shape, shows as JSON.
"""

from __future__ import annotations

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
from app.status import CheckpointStatus

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
