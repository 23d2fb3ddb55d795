"""Admin page: the worker fleet."""

from __future__ import annotations

from flask import Blueprint
from flask import render_template

from app.admin.auth import admin_required

bp = Blueprint("admin_fleet", __name__, url_prefix="/admin/worker")


@bp.get("")
@admin_required
def index():
    return render_template("admin/error.html", code=200, name="Workers", description="")
