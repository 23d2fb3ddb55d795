"""Admin pages: pending checkpoints, and one checkpoint to approve or reject."""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy.orm as so
from flask import Blueprint
from flask import abort
from flask import flash
from flask import redirect
from flask import render_template
from flask import request
from flask import url_for
from flask_login import current_user
from marshmallow import ValidationError

from app import queries
from app import review
from app.admin.args import page_filters
from app.admin.auth import admin_required
from app.admin.display import editable_files
from app.admin.display import present
from app.admin.display import present_edit
from app.admin.filters import ago
from app.admin.filters import when
from app.errors import AlreadyDecided
from app.errors import ForbiddenError
from app.errors import InvalidEdit
from app.errors import InvalidTransition
from app.errors import field_messages
from app.extensions import db
from app.framework import registry
from app.limits import page_decisions
from app.models import Checkpoint
from app.models import Job
from app.paging import keyset_page
from app.schemas import ApprovalSchema
from app.schemas import CheckpointListArgs
from app.schemas import RejectionSchema
from app.status import Outcome

bp = Blueprint("admin_checkpoints", __name__, url_prefix="/admin/agent-checkpoints")

#: Rows of the list page: the oldest pending ones; newer ones are a "Newer" link away.
PAGE_SIZE = 50


def _pending(job_type: str | None, cursor: str | None) -> tuple[list[Checkpoint], str | None]:
    """A page of pending checkpoints, oldest first, their jobs and owners loaded with them.

    Polled every two seconds: only the columns a row shows are read, not the data.
    """
    stmt = queries.pending_checkpoints(job_type=job_type).options(
        so.load_only(Checkpoint.title, Checkpoint.created_at),
        so.lazyload(Checkpoint.votes),
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


def _render_detail(checkpoint: Checkpoint, *, errors: dict | None = None, status: int = 200):
    """The checkpoint page; ``errors`` are the reject form's field errors."""
    job = checkpoint.job
    page = render_template(
        "admin/checkpoint.html",
        checkpoint=checkpoint,
        job=job,
        logs=queries.job_logs(job.id),
        view=present(checkpoint),
        edit=present_edit(checkpoint),
        errors=errors or {},
    )
    return page, status


def _edited_files(checkpoint: Checkpoint) -> dict | None:
    """The proposed files as the reviewer left them in the form; None when none was edited."""
    files = editable_files(checkpoint)
    if files is None:
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
    who = decision.decided_by or "a deleted user"
    message = f"Already {decision.outcome.lower()} by {who} at {when(decision.created_at)}"
    if decision.outcome == Outcome.REJECTED and decision.reason:
        message += f": {decision.reason}"
    return message


def _decide(checkpoint_id: uuid.UUID, outcome: Outcome, **decision: Any):
    """Record the decision, then go back to the checkpoint, flashing what happened."""
    actor = review.Actor(
        "admin",
        user_id=current_user.id,
        ip=request.remote_addr,
        user_agent=request.user_agent.string or None,
    )
    try:
        review.decide(checkpoint_id, outcome, actor, **decision)
    except AlreadyDecided as error:
        flash(_decided_first(error.checkpoint), "warning")
    except (InvalidTransition, InvalidEdit, ForbiddenError) as error:
        flash(error.message, "error")
    else:
        flash("Approved." if outcome == Outcome.APPROVED else "Rejected.", "success")
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
    return _decide(checkpoint_id, Outcome.APPROVED, **decision)


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
    return _decide(checkpoint_id, Outcome.REJECTED, **decision)
