"""Admin page: the worker fleet, what it runs, job counts, and pausing or resuming it."""

from __future__ import annotations

from flask import Blueprint
from flask import flash
from flask import redirect
from flask import render_template
from flask import url_for
from flask_login import current_user

from app import fleet
from app.admin.auth import admin_required
from app.extensions import db
from app.models import FleetState
from app.models import User

bp = Blueprint("admin_fleet", __name__, url_prefix="/admin/worker")


@bp.get("")
@admin_required
def index():
    """Each worker with its concurrency and active steps, the fleet summary, and job counts."""
    status = fleet.status()
    flag = db.session.get(FleetState, 1)
    changed_by = db.session.get(User, flag.changed_by) if flag and flag.changed_by else None
    return render_template(
        "admin/worker.html",
        summary=status["worker"],
        workers=status["workers"],
        counts={name.upper(): n for name, n in status["jobs"].items()},
        flag=flag,
        changed_by=changed_by,
    )


@bp.post("/pause")
@admin_required
def pause():
    """Stop every worker taking new steps; running steps finish."""
    fleet.set_paused(True, user_id=current_user.id)
    flash("Paused: workers finish their running steps and take no new ones.", "success")
    return redirect(url_for(".index"), 303)


@bp.post("/resume")
@admin_required
def resume():
    """Let every worker take steps from the queue again."""
    fleet.set_paused(False, user_id=current_user.id)
    flash("Resumed: workers take steps from the queue again.", "success")
    return redirect(url_for(".index"), 303)
