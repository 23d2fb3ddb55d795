"""Admin pages: pending checkpoints, and one checkpoint to approve or reject."""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy.orm as so
from flask import Blueprint
from flask import abort
from flask import current_app
from flask import flash
from flask import redirect
from flask import render_template
from flask import request
from flask import url_for
from flask_login import current_user
from marshmallow import ValidationError

from app import queries
from app import state
from app.admin import page_filters
from app.admin.auth import admin_required
from app.admin.diffs import edit_diffs
from app.admin.diffs import file_diff
from app.admin.diffs import files_of
from app.admin.diffs import proposal_diffs
from app.admin.filters import ago
from app.admin.filters import when
from app.api.paging import keyset_page
from app.errors import AgentqError
from app.errors import AlreadyDecided
from app.errors import InvalidEdit
from app.errors import InvalidTransition
from app.errors import field_messages
from app.extensions import db
from app.framework.registry import registry
from app.framework.workspace import Workspace
from app.limits import page_decisions
from app.models import Checkpoint
from app.models import Job
from app.observability import logs
from app.observability import sentry
from app.schemas import ApprovalSchema
from app.schemas import CheckpointListArgs
from app.schemas import RejectionSchema

bp = Blueprint("admin_checkpoints", __name__, url_prefix="/admin/agent-checkpoints")

#: Rows of the list page: the oldest pending ones; newer ones are a "Newer" link away.
PAGE_SIZE = 50
#: Records shown in a data-processing preview.
PREVIEW_ROWS = 50


def _pending(job_type: str | None, cursor: str | None) -> tuple[list[Checkpoint], str | None]:
    """A page of pending checkpoints, oldest first, their jobs and owners loaded with them.

    Polled every two seconds: only the columns a row shows are read, not the data.
    """
    stmt = queries.pending_checkpoints(job_type=job_type).options(
        so.load_only(Checkpoint.title, Checkpoint.created_at),
        so.lazyload(Checkpoint.decision),
        so.contains_eager(Checkpoint.job).load_only(
            Job.job_type, Job.task_description, Job.priority, Job.user_id
        ),
    )
    return keyset_page(stmt, Checkpoint, cursor=cursor, limit=PAGE_SIZE, descending=False)


def _row(checkpoint: Checkpoint) -> dict:
    """One list row as live.js renders it."""
    job = checkpoint.job
    return {
        "id": str(checkpoint.id),
        "url": url_for(".detail", checkpoint_id=checkpoint.id),
        "title": checkpoint.title,
        "jobType": job.job_type,
        "taskDescription": job.task_description,
        "owner": job.user.name,
        "priority": job.priority,
        "createdAt": checkpoint.created_at.isoformat(),
        "created": when(checkpoint.created_at),
        "age": ago(checkpoint.created_at),
    }


def _get_checkpoint(checkpoint_id: uuid.UUID) -> Checkpoint:
    """:raise 404: if there is no such checkpoint."""
    checkpoint = db.session.get(Checkpoint, checkpoint_id)
    if checkpoint is None:
        abort(404, description=f"There is no checkpoint {checkpoint_id}.")
    return checkpoint


def _workspace_diffs(checkpoint: Checkpoint, files: list[dict]) -> tuple[list, str | None]:
    """The proposal against the job's workspace, or against nothing when it cannot be read."""
    workspace = Workspace(current_app.config["WORKSPACE_ROOT"], str(checkpoint.job_id))
    try:
        return proposal_diffs(workspace, files), None
    except (AgentqError, OSError, ValueError) as error:
        diffs = [file_diff(f["path"], None, f["content"]) for f in files]
        return diffs, f"The workspace could not be read ({error}); the files are shown whole."


def _data_view(checkpoint: Checkpoint) -> dict:
    """How to show the checkpoint's data to people: file diffs, a table of records, or JSON."""
    data = checkpoint.data
    files = files_of(data)
    if checkpoint.handler == "code-generation" and files is not None:
        if checkpoint.status != state.CheckpointStatus.PENDING:
            # Once decided, the workspace may hold the approved files: a diff against it
            # would show nothing, so show what was proposed instead.
            return {"kind": "files", "files": files, "diffs": None, "problem": None}
        diffs, problem = _workspace_diffs(checkpoint, files)
        return {"kind": "files", "files": files, "diffs": diffs, "problem": problem}
    records = data.get("records") if isinstance(data, dict) else None
    if (
        checkpoint.handler == "data-processing"
        and isinstance(records, list)
        and all(isinstance(r, dict) for r in records)
    ):
        columns = data.get("columns")
        if not isinstance(columns, list):
            columns = sorted({key for record in records for key in record})
        return {
            "kind": "records",
            "columns": columns,
            "records": records[:PREVIEW_ROWS],
            "total": len(records),
        }
    return {"kind": "json", "data": data}


def _edit_view(checkpoint: Checkpoint) -> dict | None:
    """What the approver changed, when they approved edited data."""
    decision = checkpoint.decision
    if decision is None or decision.data is None:
        return None
    proposed, approved = files_of(checkpoint.data), files_of(decision.data)
    if proposed is not None and approved is not None:
        return {"kind": "files", "diffs": edit_diffs(proposed, approved)}
    return {"kind": "json", "data": decision.data}


def _render_detail(checkpoint: Checkpoint, *, errors: dict | None = None, status: int = 200):
    """The checkpoint page; ``errors`` are the reject form's field errors."""
    job = checkpoint.job
    page = render_template(
        "admin/checkpoint.html",
        checkpoint=checkpoint,
        job=job,
        logs=queries.job_logs(job.id),
        view=_data_view(checkpoint),
        edit=_edit_view(checkpoint),
        errors=errors or {},
    )
    return page, status


def _edited_files(checkpoint: Checkpoint) -> dict | None:
    """The proposed files as the reviewer left them in the form; None when none was edited."""
    files = files_of(checkpoint.data)
    if checkpoint.handler != "code-generation" or files is None:
        return None
    edited, changed = [], False
    for i, f in enumerate(files):
        content = request.form.get(f"file-{i}")
        if content is None:
            content = f["content"]
        else:
            # Browsers send a textarea's lines ending in CRLF, whatever they ended in.
            content = content.replace("\r\n", "\n")
            if "\r\n" in f["content"]:
                content = content.replace("\n", "\r\n")
        changed = changed or content != f["content"]
        edited.append({"path": f["path"], "content": content})
    return {"files": edited} if changed else None


def _form_errors(error: ValidationError, fields: dict[str, str]) -> dict[str, str]:
    """The schema's messages by the id of the form field they are about.

    ``fields`` maps a message's dotted name, or the start of it, to a field id:
    ``{"data.files": "file"}`` puts ``data.files.0.content`` on ``file-0``.
    """
    errors = {}
    for name, messages in field_messages(error.messages).items():
        for prefix, field in fields.items():
            if name == prefix:
                errors[field] = " ".join(messages)
            elif name.startswith(f"{prefix}."):
                index = name[len(prefix) + 1 :].split(".")[0]
                errors[f"{field}-{index}"] = " ".join(messages)
    return errors


def _decided_first(checkpoint: Checkpoint) -> str:
    """What a reviewer who came second is told: who decided first, and what."""
    decision = checkpoint.decision
    if decision is None:
        return f"Already {checkpoint.status.lower()} at {when(checkpoint.decided_at)}."
    who = decision.user.name if decision.user else "a deleted user"
    message = f"Already {decision.outcome.lower()} by {who} at {when(decision.created_at)}"
    if decision.outcome == state.Outcome.REJECTED and decision.reason:
        message += f": {decision.reason}"
    return message


def _decide(checkpoint_id: uuid.UUID, outcome: state.Outcome, **decision: Any):
    """Record the decision, then go back to the checkpoint, flashing what happened."""
    logs.bind(checkpoint_id=checkpoint_id)
    sentry.set_decider(current_user.id, request.remote_addr, checkpoint_id=checkpoint_id)
    try:
        checkpoint = state.decide(
            checkpoint_id,
            outcome,
            user_id=current_user.id,
            ip=request.remote_addr,
            user_agent=request.user_agent.string or None,
            **decision,
        )
    except AlreadyDecided as error:
        flash(_decided_first(error.checkpoint), "warning")
    except (InvalidTransition, InvalidEdit) as error:
        flash(error.message, "error")
    else:
        logs.decided(checkpoint, outcome, by=current_user.name)
        sentry.tag(job_id=checkpoint.job_id, job_type=checkpoint.handler)
        flash("Approved." if outcome == state.Outcome.APPROVED else "Rejected.", "success")
    return redirect(url_for(".detail", checkpoint_id=checkpoint_id), 303)


@bp.get("")
@admin_required
def index():
    """Pending checkpoints, oldest first, optionally of one job type."""
    args = page_filters(CheckpointListArgs(), ("jobType", "cursor"))
    job_type, cursor = args.get("job_type"), args.get("cursor")
    rows, next_cursor = _pending(job_type, cursor)
    return render_template(
        "admin/checkpoints.html",
        checkpoints=rows,
        job_type=job_type,
        job_types=registry.names(),
        cursor=cursor,
        next_cursor=next_cursor,
    )


@bp.get("/live.json")
@admin_required
def live():
    """The pending count (``?countOnly=1``: only it) and the list's rows, for live.js."""
    count = queries.pending_checkpoint_count()
    if request.args.get("countOnly"):
        return {"count": count}
    args = page_filters(CheckpointListArgs(), ("jobType", "cursor"))
    rows, next_cursor = _pending(args.get("job_type"), args.get("cursor"))
    return {"count": count, "checkpoints": [_row(c) for c in rows], "more": bool(next_cursor)}


@bp.get("/<uuid:checkpoint_id>")
@admin_required
def detail(checkpoint_id: uuid.UUID):
    """One checkpoint: its job and logs, its data for people, and the decision forms."""
    return _render_detail(_get_checkpoint(checkpoint_id))


@bp.post("/<uuid:checkpoint_id>/approve")
@admin_required
@page_decisions
def approve(checkpoint_id: uuid.UUID):
    """Approve, with an optional comment and, for proposed files, the reviewer's edits."""
    checkpoint = _get_checkpoint(checkpoint_id)
    comment = request.form.get("comment", "").strip() or None
    try:
        decision = ApprovalSchema().load({"reason": comment, "data": _edited_files(checkpoint)})
    except ValidationError as exc:
        errors = _form_errors(exc, {"reason": "approve-comment", "data.files": "file"})
        return _render_detail(checkpoint, errors=errors, status=422)
    return _decide(checkpoint_id, state.Outcome.APPROVED, **decision)


@bp.post("/<uuid:checkpoint_id>/reject")
@admin_required
@page_decisions
def reject(checkpoint_id: uuid.UUID):
    """Reject with a reason (required): the job fails with it."""
    reason = request.form.get("reason", "").strip()
    if not reason:
        errors = {"reject-reason": "Say why: the reason is recorded and the job fails with it."}
        return _render_detail(_get_checkpoint(checkpoint_id), errors=errors, status=422)
    try:
        decision = RejectionSchema().load({"reason": reason})
    except ValidationError as exc:
        errors = _form_errors(exc, {"reason": "reject-reason"})
        return _render_detail(_get_checkpoint(checkpoint_id), errors=errors, status=422)
    return _decide(checkpoint_id, state.Outcome.REJECTED, **decision)
