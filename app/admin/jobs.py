"""Admin pages: jobs, and one job's timeline."""

from __future__ import annotations

from flask import Blueprint
from flask import render_template

from app.admin.auth import admin_required

bp = Blueprint("admin_jobs", __name__, url_prefix="/admin/jobs")


@bp.get("")
@admin_required
def index():
    return render_template("admin/error.html", code=200, name="Jobs", description="")
