"""Admin pages: pending checkpoints, and one checkpoint to approve or reject."""

from __future__ import annotations

from flask import Blueprint
from flask import render_template

from app.admin.auth import admin_required

bp = Blueprint("admin_checkpoints", __name__, url_prefix="/admin/agent-checkpoints")


@bp.get("")
@admin_required
def index():
    return render_template("admin/error.html", code=200, name="Checkpoints", description="")
