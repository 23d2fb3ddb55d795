"""Admin pages: jobs, and one job's facts, timeline and step ledger, with cancel and retry."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from dataclasses import field
from datetime import datetime
from typing import Any

from flask import Blueprint
from flask import abort
from flask import flash
from flask import redirect
from flask import render_template
from flask import request
from flask import url_for
from flask_login import current_user

from app import queries
from app import state
from app.admin.args import page_filters
from app.admin.auth import admin_required
from app.admin.diffs import UnifiedDiff
from app.admin.display import edited_files
from app.errors import InvalidTransition
from app.errors import NotFoundError
from app.extensions import db
from app.framework import registry
from app.models import Checkpoint
from app.models import Job
from app.paging import keyset_page
from app.schemas import JobListArgs
from app.status import CANCELLABLE
from app.status import RETRYABLE
from app.status import CheckpointStatus
from app.status import JobStatus
from app.status import Outcome

bp = Blueprint("admin_jobs", __name__, url_prefix="/admin/jobs")

#: Jobs on one page of the list.
PAGE_SIZE = 50


@dataclass
class Entry:
    """One line of a job's timeline: a log, a checkpoint (version) opening, or a vote on one."""

    at: datetime
    kind: str
    item: Any
    #: For a vote: the checkpoint it is on.
    checkpoint: Checkpoint | None = None
    #: For the vote that approved: what the reviewer changed in the proposed files.
    edits: list[UnifiedDiff] = field(default_factory=list)


#: The log lines a vote writes, which the vote's own entry says again.
_VOTE_LOGS = {"vote", *(o.lower() for o in Outcome)}


def job_or_404(job_id: uuid.UUID) -> Job:
    """:raise 404: when there is no such job."""
    try:
        return queries.get_job(job_id)
    except NotFoundError:
        abort(404, description=f"There is no job {job_id}.")


def timeline(logs: list, checkpoints: list[Checkpoint]) -> list[Entry]:
    """Logs, checkpoints (each version) and every vote on them, in time order.

    The log lines written with a checkpoint or a vote are left out: their own entries say
    the same, with the data, the address a vote came from and the reviewer's edits.
    Reminders and escalations stay as the log lines they are.
    """
    told = {(c.step, "checkpoint") for c in checkpoints}
    told |= {(c.step, kind) for c in checkpoints if c.votes for kind in _VOTE_LOGS}
    entries = [
        Entry(log.created_at, "log", log) for log in logs if (log.step, log.kind) not in told
    ]
    for c in checkpoints:
        entries.append(Entry(c.created_at, "checkpoint", c))
        for vote in c.votes:
            edits = (edited_files(c) or []) if vote is c.decision else []
            entries.append(Entry(vote.created_at, "vote", vote, c, edits))
    return sorted(entries, key=lambda e: e.at)


@bp.get("")
@admin_required
def index():
    """Jobs, newest first, filtered by status and job type, a page at a time."""
    args = page_filters(JobListArgs(), ("status", "jobType", "cursor"))
    stmt = queries.jobs(user_id=None, status=args.get("status"), job_type=args.get("job_type"))
    jobs, cursor = keyset_page(
        stmt, Job, cursor=args.get("cursor"), limit=PAGE_SIZE, descending=True
    )
    waiting = db.session.scalars(
        queries.pending_checkpoints().where(Checkpoint.job_id.in_([job.id for job in jobs]))
    ).unique()
    filters = {k: request.args[k] for k in ("status", "jobType") if request.args.get(k)}
    # A job type no handler serves any more can still be filtered on.
    job_types = sorted({*registry.names(), filters.get("jobType")} - {None})
    return render_template(
        "admin/jobs.html",
        jobs=jobs,
        next_cursor=cursor,
        pending={c.job_id: c for c in waiting},
        filters=filters,
        paged="cursor" in args,
        statuses=[s.value for s in JobStatus],
        job_types=job_types,
    )


@bp.get("/<uuid:job_id>")
@admin_required
def detail(job_id: uuid.UUID):
    """A job: its facts, timeline, step ledger, and the actions its status allows."""
    job = job_or_404(job_id)
    checkpoints = queries.job_checkpoints(job.id)
    return render_template(
        "admin/job.html",
        job=job,
        entries=timeline(queries.job_logs(job.id), checkpoints),
        steps=queries.job_steps(job.id),
        pending=next((c for c in checkpoints if c.status == CheckpointStatus.PENDING), None),
        can_cancel=job.status in CANCELLABLE,
        can_retry=job.status in RETRYABLE,
    )


def _act(job_id: uuid.UUID, action, verb: str):
    """Run ``action`` on the job as the signed-in admin, then back to the job with a flash."""
    job_or_404(job_id)
    try:
        job = action(job_id, by=current_user.name)
    except InvalidTransition as exc:
        db.session.rollback()
        now = (exc.details or {}).get("status", "in another state")
        flash(f"Not {verb}: the job is {now} now.", "error")
    else:
        if job.status == JobStatus.CANCELLED:
            flash("Job cancelled.", "success")
        else:
            flash(f"Job queued again at step {job.current_step}.", "success")
    return redirect(url_for(".detail", job_id=job_id), 303)


@bp.post("/<uuid:job_id>/cancel")
@admin_required
def cancel(job_id: uuid.UUID):
    """Cancel a job that is pending, running or waiting for approval."""
    return _act(job_id, state.cancel, "cancelled")


@bp.post("/<uuid:job_id>/retry")
@admin_required
def retry(job_id: uuid.UUID):
    """Queue a failed or cancelled job again at the step where it stopped."""
    return _act(job_id, state.retry, "retried")
