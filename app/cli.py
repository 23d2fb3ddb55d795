"""The ``agentq`` command: one click group over the Flask app's commands.

``agentq db ...`` is Flask-Migrate's; ``users``, ``tokens``, ``check-db``,
``verify``, ``demo``, ``worker``, ``beat`` and ``dev`` are agentq's own. Each
prints what it did; a check that fails exits non-zero.
"""

from __future__ import annotations

import os
import sys
import uuid

import click
import sqlalchemy as sa
from flask import Flask
from flask.cli import FlaskGroup
from flask.cli import with_appcontext

from app import create_app
from app import processes
from app.auth import create_token
from app.auth import create_user
from app.auth import revoke_token
from app.auth import set_password
from app.auth import user_by_name
from app.config import dev_state
from app.dev import demo as walkthrough
from app.errors import ConfigError
from app.errors import NotFoundError
from app.extensions import db
from app.framework.registry import registry
from app.health import readiness

OK, FAIL = "\u2713", "\u2717"


def _create_app():
    return create_app()


main = FlaskGroup(
    create_app=_create_app,
    add_default_commands=False,
    help="agentq: durable AI-agent jobs with human approval checkpoints.",
)


def init_app(app: Flask) -> None:
    """Register the commands that need the app (and so a configured database)."""
    app.cli.add_command(users)
    app.cli.add_command(tokens)


@click.group()
def users() -> None:
    """Manage users."""


@users.command("create")
@click.argument("name")
@click.option("--admin", is_flag=True, help="Give the user the admin role.")
@with_appcontext
def users_create(name: str, admin: bool) -> None:
    """Create a user; the last line printed is its API token."""
    try:
        user, row, token = create_user(name, admin=admin)
    except sa.exc.IntegrityError:
        raise click.ClickException(f"User {name!r} already exists") from None
    click.echo(f"Created {'admin' if admin else 'user'} {user.name} ({user.id}), token id {row.id}")
    click.echo(token)


@users.command("set-password")
@click.argument("name")
@click.password_option(help="The new password (asked for when not given).")
@with_appcontext
def users_set_password(name: str, password: str) -> None:
    """Set the password user NAME signs in to the admin pages with."""
    if len(password) < 8:
        raise click.ClickException("A password needs at least 8 characters")
    try:
        user = user_by_name(name)
    except NotFoundError as exc:
        raise click.ClickException(exc.message) from None
    set_password(user, password)
    click.echo(f"Set the password of {name}; sign in at /admin/login")


@click.group()
def tokens() -> None:
    """Manage API tokens."""


@tokens.command("create")
@click.argument("name")
@with_appcontext
def tokens_create(name: str) -> None:
    """Make a new token for user NAME; the last line printed is the token."""
    try:
        row, token = create_token(user_by_name(name))
    except NotFoundError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"Created token {row.id} for {name}")
    click.echo(token)


@tokens.command("revoke")
@click.argument("token_id", type=click.UUID)
@with_appcontext
def tokens_revoke(token_id: uuid.UUID) -> None:
    """Revoke token TOKEN_ID; requests carrying it are refused at once."""
    try:
        row = revoke_token(token_id)
    except NotFoundError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"Revoked token {row.id} of {row.user.name}")


def _check(ok: bool, label: str) -> bool:
    click.echo(f"{OK if ok else FAIL} {label}")
    return ok


def _app_or_fail() -> Flask:
    try:
        return _create_app()
    except ConfigError as exc:
        _check(False, exc.message)
        sys.exit(1)


@main.command("check-db", with_appcontext=False)
def check_db() -> None:
    """Check the database connection and each table."""
    app = _app_or_fail()
    with app.app_context():
        url = db.engine.url.render_as_string(hide_password=True)
        try:
            with db.engine.connect() as conn:
                version = conn.execute(sa.text("SHOW server_version")).scalar()
                tables = set(sa.inspect(conn).get_table_names())
        except sa.exc.SQLAlchemyError as exc:
            _check(False, f"Database connection failed ({url}): {str(exc).splitlines()[0]}")
            sys.exit(1)
        ok = _check(True, f"Database connection successful ({url}, PostgreSQL {version})")
        for table in sorted(db.metadata.tables):
            present = table in tables
            ok &= _check(present, f"{table} table {'exists' if present else 'is missing'}")
    if not ok:
        click.echo("Run `agentq db upgrade` to create the missing tables.")
        sys.exit(1)


@main.command(with_appcontext=False)
def verify() -> None:
    """Verify database, migrations, broker, workers and handlers."""
    app = _app_or_fail()
    with app.app_context():
        checks = readiness()
        ok = True
        for name, value in checks.items():
            ok &= _check(value == "ok", f"{name}: {value}")
        replies = []
        if checks["broker"] == "ok":
            replies = app.extensions["celery"].control.ping(timeout=app.config["FLEET_TIMEOUT"])
        names = sorted(name for reply in replies for name in reply)
        ok &= _check(bool(names), f"workers answering: {', '.join(names) or 'none'}")
        ok &= _check(bool(registry.names()), f"handlers registered: {', '.join(registry.names())}")
    sys.exit(0 if ok else 1)


@main.command(
    with_appcontext=False,
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
)
@click.option(
    "-Q",
    "--queues",
    help="The queues to consume, comma-separated (default: every queue: each job type's, "
    "the continuations' and the sweeps').",
)
@click.pass_context
def worker(ctx: click.Context, queues: str | None) -> None:
    """Run a Celery worker on every queue, or the ones named (extra args go to celery)."""
    os.execvp(sys.executable, processes.worker_argv(*ctx.args, queues=queues))


@main.command(
    with_appcontext=False,
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
)
@click.pass_context
def beat(ctx: click.Context) -> None:
    """Run Celery beat, which schedules the sweeps (extra args go to celery)."""
    os.execvp(sys.executable, processes.beat_argv(*ctx.args))


@main.command(with_appcontext=False)
@click.option("--port", envvar="PORT", default=8000, show_default=True, help="Web port.")
def dev(port: int) -> None:
    """Run everything on embedded Postgres and Redis with data in ./var (Ctrl-C stops)."""
    # Here, not at the top: the embedded servers need the ``embedded`` extra's packages
    # (psutil, the wheels), which a production install of the other commands lacks.
    from app.dev import supervisor

    supervisor.run(port)


@main.command(with_appcontext=False)
@click.option("--url", envvar="AGENTQ_URL", help="Base URL (default: the running `agentq dev`).")
@click.option("--token", envvar="AGENTQ_TOKEN", help="An admin token (default: a temporary one).")
@click.option("--timeout", default=60.0, show_default=True, help="Seconds to wait for each stage.")
def demo(url: str | None, token: str | None, timeout: float) -> None:
    """Run the guide's workflow: enqueue code-generation, approve it, see it complete."""
    url = url or dev_state().get("web_url") or "http://127.0.0.1:8000"
    app = revoke = None
    if not token:
        app = _app_or_fail()
        revoke, token = walkthrough.temporary_admin_token(app)
    try:
        job = walkthrough.run(walkthrough.Client(url, token), timeout)
    finally:
        if revoke:
            with app.app_context():
                revoke_token(revoke)
    click.echo(f"{OK} Demo complete: job {job['id']} is COMPLETED")


if __name__ == "__main__":
    main()
