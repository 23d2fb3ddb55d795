"""Jobs: enqueue, list, show, cancel or retry, and a job's checkpoints."""

from __future__ import annotations

import logging
import uuid

from flask import g
from flask import request
from flask.views import MethodView
from flask_smorest import abort

from app import queries
from app import state
from app.api.blueprint import Blueprint
from app.auth import BEARER
from app.auth import current_user
from app.auth import login_required
from app.errors import NotFoundError
from app.limits import submissions
from app.models import Job
from app.observability import logs
from app.observability import sentry
from app.paging import keyset_page
from app.schemas import ApiJobListArgs
from app.schemas import CheckpointListEnvelopeSchema
from app.schemas import JobActionSchema
from app.schemas import JobCreateSchema
from app.schemas import JobEnvelopeSchema
from app.schemas import JobListEnvelopeSchema
from app.schemas import job_create_doc

#: The longest Idempotency-Key the jobs table holds.
IDEMPOTENCY_KEY_LENGTH = Job.__table__.c.idempotency_key.type.length

blp = Blueprint("jobs", __name__, url_prefix="/api/agent-jobs", description="Agent jobs")
log = logging.getLogger(__name__)


def visible_job(job_id: uuid.UUID) -> Job:
    """The job, if the current user owns it or is an admin.

    :raises NotFoundError: 404 when it does not exist or belongs to another user.
    """
    job = queries.get_job(job_id)
    user = current_user()
    if not user.is_admin and job.user_id != user.id:
        raise NotFoundError(f"Job {job_id} not found")
    _bind(job)
    return job


def _bind(job: Job | state.NewJob) -> None:
    """Name the job on this request's log lines and Sentry events."""
    logs.bind(job_id=job.id, job_type=job.job_type)
    sentry.tag(job_id=job.id, job_type=job.job_type)


def detail(job: Job) -> dict:
    """The job envelope with the job's logs, checkpoints and steps."""
    job.logs = queries.job_logs(job.id)
    job.checkpoints = queries.job_checkpoints(job.id)
    job.steps = queries.job_steps(job.id)
    return {"success": True, "job": job}


@blp.route("")
class Jobs(MethodView):
    @login_required(in_statement=True)
    @submissions
    @blp.doc(security=[BEARER])
    @blp.arguments(JobCreateSchema(), documented_as=job_create_doc)
    @blp.response(201, JobEnvelopeSchema)
    @blp.refusal(409, "Idempotency-Key reused for a different request")
    @blp.refusal(429, "Over RATE_LIMIT_JOBS for this token: see Retry-After")
    def post(self, body: dict):
        """Enqueue a job

        Send an ``Idempotency-Key`` header to make retries safe: the same key
        returns the job it created the first time.
        """
        key = request.headers.get("Idempotency-Key") or None
        if key is not None and len(key) > IDEMPOTENCY_KEY_LENGTH:
            abort(
                422,
                messages={
                    "headers": {
                        "Idempotency-Key": [f"Longer than maximum length {IDEMPOTENCY_KEY_LENGTH}."]
                    }
                },
            )
        job = state.enqueue(token_hash=g.token_hash, idempotency_key=key, **body)
        _bind(job)
        log.info("job %s queued at priority %s", job.id, job.priority)
        if isinstance(job, Job):  # an Idempotency-Key replay: the job as it is now
            return detail(job)
        return {"success": True, "job": job}

    @login_required()
    @blp.doc(security=[BEARER])
    @blp.arguments(ApiJobListArgs(), location="query")
    @blp.response(200, JobListEnvelopeSchema)
    def get(self, args: dict):
        """List jobs, newest first: your own, or every job for an admin"""
        user = current_user()
        stmt = queries.jobs(
            user_id=None if user.is_admin else user.id,
            status=args.get("status"),
            job_type=args.get("job_type"),
        )
        rows, cursor = keyset_page(
            stmt, Job, cursor=args.get("cursor"), limit=args["limit"], descending=True
        )
        return {"success": True, "jobs": rows, "next_cursor": cursor}


@blp.route("/<uuid:job_id>")
class JobById(MethodView):
    @login_required()
    @blp.doc(security=[BEARER])
    @blp.response(200, JobEnvelopeSchema)
    def get(self, job_id: uuid.UUID):
        """Show a job with its logs, checkpoints (and their decisions) and steps"""
        return detail(visible_job(job_id))

    @login_required()
    @blp.doc(security=[BEARER])
    @blp.arguments(JobActionSchema())
    @blp.response(200, JobEnvelopeSchema)
    @blp.refusal(409, "The job's status does not allow the action")
    def patch(self, body: dict, job_id: uuid.UUID):
        """Cancel or retry a job

        ``cancel`` works while PENDING, RUNNING or WAITING_APPROVAL; ``retry`` on a
        FAILED or CANCELLED job resumes at the step where it stopped.
        """
        job = visible_job(job_id)
        action = state.cancel if body["action"] == "cancel" else state.retry
        return detail(action(job.id, by=current_user().name))


@blp.route("/<uuid:job_id>/checkpoints")
class JobCheckpoints(MethodView):
    @login_required()
    @blp.doc(security=[BEARER])
    @blp.response(200, CheckpointListEnvelopeSchema)
    def get(self, job_id: uuid.UUID):
        """List a job's checkpoints, oldest first, with their decisions"""
        job = visible_job(job_id)
        return {
            "success": True,
            "checkpoints": queries.job_checkpoints(job.id),
            "next_cursor": None,
        }
