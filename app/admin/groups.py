"""Admin page: the groups of users that review policies name as approvers (``group:<name>``),
with forms to create and delete a group and to add and remove its members."""

from __future__ import annotations

from flask import Blueprint
from flask import flash
from flask import redirect
from flask import render_template
from flask import request
from flask import url_for
from werkzeug.wrappers import Response

from app import groups
from app.admin.auth import admin_required
from app.errors import ConflictError
from app.errors import InvalidName
from app.errors import NotFoundError

bp = Blueprint("admin_groups", __name__, url_prefix="/admin/groups")


@bp.get("")
@admin_required
def index():
    """Every group by name with its members, and the forms that change them."""
    return render_template("admin/groups.html", groups=groups.list_groups())


@bp.post("")
@admin_required
def create():
    """Create the group the form names."""
    name = _field("name")
    try:
        groups.create_group(name)
    except (InvalidName, ConflictError) as exc:
        return _back(exc.message, "error")
    return _back(f"Created group {name}: a review policy's approvers name it group:{name}.")


@bp.post("/delete")
@admin_required
def delete():
    """Delete the form's group and its memberships."""
    name = _field("group")
    try:
        members = groups.delete_group(name)
    except NotFoundError as exc:
        return _back(exc.message, "error")
    return _back(f"Deleted group {name} ({members} member{'' if members == 1 else 's'}).")


@bp.post("/members")
@admin_required
def add():
    """Make the form's user a member of the form's group."""
    try:
        change = groups.add_members(_field("group"), [_field("user")])
    except NotFoundError as exc:
        return _back(exc.message, "error")
    return _back(f"{change.message}.", "success" if change.changed else "info")


@bp.post("/members/remove")
@admin_required
def remove():
    """Take the form's user out of the form's group."""
    try:
        change = groups.remove_members(_field("group"), [_field("user")])
    except NotFoundError as exc:
        return _back(exc.message, "error")
    return _back(f"{change.message}.", "success" if change.changed else "info")


def _field(name: str) -> str:
    return request.form.get(name, "").strip()


def _back(message: str, category: str = "success") -> Response:
    """Flash ``message`` and go back to the list (a 303: a reload does not post again)."""
    flash(message, category)
    return redirect(url_for(".index"), 303)
