"""Signing in and out of the admin pages, and the guard every admin page uses."""

from __future__ import annotations

import functools
from collections.abc import Callable
from urllib.parse import urlsplit

import sqlalchemy as sa
from flask import Blueprint
from flask import abort
from flask import flash
from flask import redirect
from flask import render_template
from flask import request
from flask import url_for
from flask_limiter import RateLimitExceeded
from flask_login import current_user
from flask_login import login_required
from flask_login import login_user
from flask_login import logout_user
from flask_wtf import FlaskForm
from marshmallow import ValidationError as SchemaError
from werkzeug.security import check_password_hash
from wtforms import PasswordField
from wtforms import StringField
from wtforms.validators import DataRequired
from wtforms.validators import ValidationError

from app import limits
from app.extensions import db
from app.limits import logins_per_address
from app.limits import logins_per_name
from app.models import User
from app.schemas import storable

bp = Blueprint(
    "admin_auth",
    __name__,
    url_prefix="/admin",
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)

#: Checked when a name is unknown, so that the answer takes as long as for a known one.
_DUMMY_HASH = "scrypt:32768:8:1$0000000000000000$" + "0" * 128


def storable_text(_form: FlaskForm, field) -> None:
    """A form field Postgres can store, by the API's rule (``app.schemas.storable``)."""
    try:
        storable(field.data)
    except SchemaError as exc:
        raise ValidationError(" ".join(exc.messages)) from None


class LoginForm(FlaskForm):
    name = StringField("User name", validators=[DataRequired(), storable_text])
    password = PasswordField("Password", validators=[DataRequired()])


def admin_required(view: Callable) -> Callable:
    """Send anonymous visitors to the login page, and answer 403 to users who are not admins."""

    @functools.wraps(view)
    @login_required
    def wrapper(*args, **kwargs):
        if not current_user.is_admin:
            abort(
                403,
                description="These pages are for admins. Ask an admin for the role: "
                f"agentq users promote {current_user.name}",
            )
        return view(*args, **kwargs)

    return wrapper


def _safe_next(target: str | None) -> str:
    """Where to go after signing in: a path on this site, never another site."""
    if target and target.startswith("/") and not urlsplit(target).netloc and "\\" not in target:
        return target
    return url_for("admin_checkpoints.index")


@bp.route("/login", methods=["GET", "POST"])
@logins_per_name
@logins_per_address
def login():
    """Sign in with a user name and password (``agentq users set-password NAME``).

    Attempts are limited per user name and per address (``LOGIN_RATE_LIMIT``).
    """
    form = LoginForm()
    if form.validate_on_submit():
        user = db.session.execute(
            sa.select(User).where(User.name == form.name.data)
        ).scalar_one_or_none()
        password_hash = user.password_hash if user and user.password_hash else _DUMMY_HASH
        if check_password_hash(password_hash, form.password.data) and user is not None:
            login_user(user)
            return redirect(_safe_next(request.args.get("next")))
        flash("Wrong user name or password.", "error")
    return render_template("admin/login.html", form=form), 422 if form.errors else 200


@bp.errorhandler(RateLimitExceeded)
def too_many_sign_ins(error: RateLimitExceeded):
    """The sign-in form again, 429, saying how long to wait (``Retry-After`` says it too)."""
    db.session.rollback()
    limit, wait = limits.breached()
    flash(
        f"Too many sign-in attempts for this user name or from this address (at most "
        f"{limit}). Wait {wait} seconds, then try again.",
        "error",
    )
    return render_template("admin/login.html", form=LoginForm()), 429, {"Retry-After": str(wait)}


@bp.post("/logout")
@login_required
def logout():
    logout_user()
    flash("Signed out.", "info")
    return redirect(url_for("admin_auth.login"))


@bp.get("")
@bp.get("/")
def home():
    return redirect(url_for("admin_checkpoints.index"))
