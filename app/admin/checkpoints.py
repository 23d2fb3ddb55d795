"""Admin pages: pending checkpoints, decided one by one or selected together, and one
checkpoint with its review policy, votes and versions, to approve, reject or send back
with a request for changes."""

from __future__ import annotations

import uuid
from typing import Any

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
from app import state
from app.admin.args import page_filters
from app.admin.auth import admin_required
from app.admin.display import AT_DEADLINE
from app.admin.display import editable_files
from app.admin.display import present
from app.admin.display import present_edit
from app.admin.display import remaining
from app.admin.display import review_of
from app.admin.display import seconds_words
from app.admin.display import version_diffs
from app.admin.display import why_not
from app.admin.filters import ago
from app.admin.filters import when
from app.errors import AgentqError
from app.errors import AlreadyDecided
from app.errors import StaleVersion
from app.errors import field_messages
from app.extensions import db
from app.framework import registry
from app.limits import page_decisions
from app.models import Checkpoint
from app.paging import decode_cursor
from app.paging import page_of
from app.schemas import MAX_VERSION
from app.schemas import ApprovalSchema
from app.schemas import CheckpointListArgs
from app.schemas import RejectionSchema
from app.schemas import RequestChangesSchema
from app.status import CheckpointStatus
from app.status import Outcome

bp = Blueprint("admin_checkpoints", __name__, url_prefix="/admin/agent-checkpoints")
bp.add_app_template_filter(seconds_words)

#: Rows of the list page: the oldest pending ones; newer ones are a "Newer" link away.
PAGE_SIZE = 50


def _pending(job_type: str | None, cursor: str | None, mine: bool) -> tuple[list[dict], str | None]:
    """A page of pending checkpoints, oldest first, each with its job, votes and whether the
    signed-in admin may vote on it; ``mine``: only those."""
    rows = queries.pending_checkpoints_page(
        job_type=job_type,
        after=decode_cursor(cursor) if cursor else None,
        limit=PAGE_SIZE + 1,
        viewer=current_user,
        mine=mine,
    )
    return page_of(rows, PAGE_SIZE)


def _deadline(checkpoint: dict) -> dict | None:
    """A pending row's deadline, as the list and live.js show it; None without one."""
    expires = checkpoint["expires_at"]
    if expires is None:
        return None
    return {
        "at": expires.isoformat(),
        "then": AT_DEADLINE[checkpoint["review_policy"].on_timeout],
        "left": remaining(expires),
        "when": when(expires),
    }


def _row(checkpoint: dict) -> dict:
    """One list row as live.js renders it."""
    job = checkpoint["job"]
    return {
        "id": str(checkpoint["id"]),
        "url": url_for(".detail", checkpoint_id=checkpoint["id"]),
        "title": checkpoint["title"],
        "jobType": job["job_type"],
        "taskDescription": job["task_description"],
        "owner": job["owner"],
        "priority": job["priority"],
        "createdAt": checkpoint["created_at"].isoformat(),
        "created": when(checkpoint["created_at"]),
        "age": ago(checkpoint["created_at"]),
        "version": checkpoint["version"],
        "votes": _tally(checkpoint),
        "deadline": _deadline(checkpoint),
        "mayDecide": checkpoint["may_decide"],
    }


def _tally(checkpoint: dict) -> str:
    """``1/2``: approvals so far of those needed."""
    return f"{checkpoint['approvals']}/{checkpoint['review_policy'].min_approvals}"


def _get_checkpoint(checkpoint_id: uuid.UUID) -> Checkpoint:
    """:raise 404: if there is no such checkpoint."""
    checkpoint = db.session.get(Checkpoint, checkpoint_id)
    if checkpoint is None:
        abort(404, description=f"There is no checkpoint {checkpoint_id}.")
    return checkpoint


def _render_detail(checkpoint: Checkpoint, *, errors: dict | None = None, status: int = 200):
    """The checkpoint page; ``errors`` are the forms' field errors, by field id."""
    job = checkpoint.job
    _, versions = queries.checkpoint_versions(checkpoint.id)
    pending = checkpoint.status == CheckpointStatus.PENDING
    allowed = pending and state.may_decide(checkpoint, current_user.id, current_user.name)
    refusal = why_not(checkpoint, current_user, allowed) if pending else None
    page = render_template(
        "admin/checkpoint.html",
        checkpoint=checkpoint,
        job=job,
        logs=queries.job_logs(job.id),
        view=present(checkpoint),
        edit=present_edit(checkpoint),
        review=review_of(checkpoint, queries.eligible_deciders(checkpoint)),
        versions=_revisions(versions),
        current=versions[-1],
        may_vote=allowed and refusal is None,
        refusal=refusal,
        deadline_left=remaining(checkpoint.expires_at) if checkpoint.expires_at else None,
        errors=errors or {},
    )
    return page, status


def _revisions(versions: list[Checkpoint]) -> list[dict]:
    """Each version of a checkpoint, oldest first, with the request for changes that ended
    it and what changed in the next (files); empty when there is only one."""
    if len(versions) < 2:
        return []
    shown = []
    for older, newer in zip(versions, [*versions[1:], None], strict=True):
        asked = next((v for v in older.votes if v.outcome == Outcome.CHANGES_REQUESTED), None)
        shown.append(
            {
                "checkpoint": older,
                "feedback": asked,
                "diffs": version_diffs(older, newer) if newer is not None else None,
            }
        )
    return shown


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


def _actor(channel: str) -> review.Actor:
    """The signed-in admin, deciding through the pages."""
    return review.Actor(
        channel,
        user_id=current_user.id,
        ip=request.remote_addr,
        user_agent=request.user_agent.string or None,
    )


def _form_version(name: str = "version") -> int | None:
    """The version of the checkpoint the page showed (a hidden field); None: the current."""
    value = request.form.get(name, "")
    if not value.isdigit():
        return None
    # No version is past what a Postgres integer holds: the largest is as stale as any.
    return min(int(value), MAX_VERSION)


def _stale(error: StaleVersion, shown: int | None) -> str:
    current = error.checkpoint
    return f"This page showed version {shown}; version {current.version} is current now."


def _done(decided: state.DecidedCheckpoint) -> str:
    """What the reviewer is told of their vote."""
    if decided.status == CheckpointStatus.CHANGES_REQUESTED:
        return f"Changes requested: the step runs again and opens version {decided.version + 1}."
    if decided.status == CheckpointStatus.APPROVED:
        return f"Approved: {decided.vote.option}." if decided.vote.option else "Approved."
    if decided.status == CheckpointStatus.REJECTED:
        return "Rejected."
    needed = decided.review_policy.min_approvals
    noun = "approval" if decided.vote.outcome == Outcome.APPROVED else "rejection"
    return f"Your {noun} is recorded: {decided.approvals}/{needed}."


def _decide(checkpoint_id: uuid.UUID, outcome: Outcome, **decision: Any):
    """Record the vote, then go back to the checkpoint, flashing what happened (a stale
    page goes to the current version)."""
    target = checkpoint_id
    try:
        decided = review.decide(checkpoint_id, outcome, _actor("admin"), **decision)
    except StaleVersion as error:
        db.session.rollback()
        flash(_stale(error, decision.get("version")), "warning")
        target = error.checkpoint.id
    except AlreadyDecided as error:
        flash(_decided_first(error.checkpoint), "warning")
    except AgentqError as error:
        db.session.rollback()
        flash(error.message, "error")
    else:
        flash(_done(decided), "success")
    return redirect(url_for(".detail", checkpoint_id=target), 303)


@bp.get("")
@admin_required
def index():
    """Pending checkpoints, oldest first, optionally of one job type or only those the
    signed-in admin may decide (``?mine=1``)."""
    args = page_filters(CheckpointListArgs(), ("jobType", "cursor"))
    job_type, cursor = args.get("job_type"), args.get("cursor")
    mine = bool(request.args.get("mine"))
    rows, next_cursor = _pending(job_type, cursor, mine)
    return render_template(
        "admin/checkpoints.html",
        checkpoints=[{**c, "row": _row(c)} for c in rows],
        job_type=job_type,
        job_types=registry.names(),
        mine=mine,
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
    mine = bool(request.args.get("mine"))
    rows, next_cursor = _pending(args.get("job_type"), args.get("cursor"), mine)
    return {"count": count, "checkpoints": [_row(c) for c in rows], "more": bool(next_cursor)}


@bp.get("/<uuid:checkpoint_id>")
@admin_required
def detail(checkpoint_id: uuid.UUID):
    """One checkpoint: its job and logs, its policy, votes and versions, its data for
    people, and the decision forms the signed-in admin may use."""
    return _render_detail(_get_checkpoint(checkpoint_id))


@bp.post("/<uuid:checkpoint_id>/approve")
@admin_required
@page_decisions
def approve(checkpoint_id: uuid.UUID):
    """Approve, with an optional comment, one of the policy's options and, for proposed
    files, the reviewer's edits."""
    checkpoint = _get_checkpoint(checkpoint_id)
    comment = request.form.get("comment", "").strip() or None
    form = {
        "reason": comment,
        "data": _edited_files(checkpoint),
        "version": _form_version(),
        "option": request.form.get("option") or None,
    }
    try:
        decision = ApprovalSchema().load(form)
    except ValidationError as exc:
        errors = _form_errors(
            exc, {"reason": "approve-comment", "data.files": "file", "option": "approve-option"}
        )
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
        decision = RejectionSchema().load({"reason": reason, "version": _form_version()})
    except ValidationError as exc:
        errors = _form_errors(exc, {"reason": "reject-reason"})
        return _render_detail(_get_checkpoint(checkpoint_id), errors=errors, status=422)
    return _decide(checkpoint_id, Outcome.REJECTED, **decision)


@bp.post("/<uuid:checkpoint_id>/request-changes")
@admin_required
@page_decisions
def request_changes(checkpoint_id: uuid.UUID):
    """Send the proposal back with feedback (required): its step runs again, with the
    feedback, and opens the next version."""
    feedback = request.form.get("feedback", "").strip()
    if not feedback:
        errors = {"changes-feedback": "Say what to change: the step runs again with it."}
        return _render_detail(_get_checkpoint(checkpoint_id), errors=errors, status=422)
    try:
        loaded = RequestChangesSchema().load({"feedback": feedback, "version": _form_version()})
    except ValidationError as exc:
        errors = _form_errors(exc, {"feedback": "changes-feedback"})
        return _render_detail(_get_checkpoint(checkpoint_id), errors=errors, status=422)
    return _decide(
        checkpoint_id,
        Outcome.CHANGES_REQUESTED,
        reason=loaded["feedback"],
        version=loaded.get("version"),
    )


#: What the select-all bar's buttons do.
_BULK = {"approve": (Outcome.APPROVED, "approved"), "reject": (Outcome.REJECTED, "rejected")}


@bp.post("/decisions")
@admin_required
@page_decisions
def decisions():
    """Approve or reject the selected checkpoints, each on its own (one refused stops no
    other), each on the version the list showed; back to the list with a summary."""
    outcome, done = _BULK.get(request.form.get("action", ""), (None, None))
    ids = request.form.getlist("id")
    reason = request.form.get("reason", "").strip() or None
    back = redirect(
        url_for(
            ".index",
            jobType=request.form.get("jobType") or None,
            mine=request.form.get("mine") or None,
        ),
        303,
    )
    if outcome is None or not ids:
        flash("Select the checkpoints to decide, then approve or reject them.", "error")
        return back
    if outcome == Outcome.REJECTED and reason is None:
        flash("Say why in the reason field: every rejected job fails with it.", "error")
        return back
    decided, refused = 0, []
    for raw in ids:
        try:
            checkpoint_id = uuid.UUID(raw)
        except ValueError:
            refused.append(f"{raw}: not a checkpoint id")
            continue
        try:
            review.decide(
                checkpoint_id,
                outcome,
                _actor("bulk"),
                version=_form_version(f"version-{raw}"),
                reason=reason,
            )
        except AgentqError as error:
            db.session.rollback()
            refused.append(f"{raw}: {error.message}")
        else:
            decided += 1
    summary = f"{decided} {done}"
    if refused:
        summary += f"; {len(refused)} refused: " + "; ".join(refused)
    flash(summary + ".", "warning" if refused else "success")
    return back
