"""The ``agentq`` command: one click group over the Flask app's commands.

``agentq db ...`` is Flask-Migrate's; ``users``, ``tokens``, ``groups``, ``check-db``,
``verify``, ``demo``, ``serve``, ``worker``, ``beat``, ``flower`` and ``dev`` are
agentq's own, and ``checkpoints`` (``app.checkpoints_cli``) reviews over the HTTP API.
Each prints what it did; a check that fails exits non-zero.
"""

from __future__ import annotations

import importlib.util
import os
import sys

import click
import flask_migrate
import sqlalchemy as sa
from flask import Flask
from flask.cli import ScriptInfo
from flask.cli import with_appcontext
from flask_migrate.cli import db as migrations

from app import checkpoints_cli
from app import create_app
from app import processes
from app.auth import create_token
from app.auth import create_user
from app.auth import list_tokens
from app.auth import revoke_token
from app.auth import set_admin
from app.auth import set_password
from app.auth import tokens_matching
from app.auth import user_by_name
from app.auth import users_and_tokens
from app.config import dev_state
from app.dev import demo as walkthrough
from app.errors import ConfigError
from app.errors import ConflictError
from app.errors import InvalidName
from app.errors import NotFoundError
from app.extensions import db
from app.framework.registry import registry
from app.groups import add_members
from app.groups import create_group
from app.groups import delete_group
from app.groups import list_groups
from app.groups import remove_members
from app.health import readiness
from app.terminal import table
from app.terminal import when

OK, FAIL = "\u2713", "\u2717"


def _create_app():
    return create_app()


class AgentqGroup(click.Group):
    """A click group whose commands find agentq's app as Flask's do (``with_appcontext``,
    through a ``ScriptInfo``), so that Flask-Migrate's ``db`` commands run unchanged; unlike
    ``FlaskGroup``, it has none of Flask's options (``--app``, ``--env-file``, ``--debug``),
    and it makes the app only for a command that needs one, so ``--help`` works anywhere."""

    def make_context(self, info_name, args, parent=None, **extra) -> click.Context:
        extra.setdefault(
            "obj",
            ScriptInfo(create_app=_create_app, set_debug_flag=False, load_dotenv_defaults=False),
        )
        return super().make_context(info_name, args, parent, **extra)


@click.group(cls=AgentqGroup)
@click.version_option(package_name="agentq", prog_name="agentq")
def main() -> None:
    """agentq: durable AI-agent jobs with human approval checkpoints."""


main.add_command(migrations, "db")
main.add_command(checkpoints_cli.checkpoints)


@main.group()
def users() -> None:
    """Manage users: create, promote, demote, list, set a password."""


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


@users.command("list")
@with_appcontext
def users_list() -> None:
    """List the users: name, role, when created, and how many tokens they hold (not revoked)."""
    rows = [
        (user.name, "admin" if user.is_admin else "user", when(user.created_at), str(count))
        for user, count in users_and_tokens()
    ]
    table(("NAME", "ROLE", "CREATED", "TOKENS"), rows)


def _set_role(name: str, admin: bool) -> None:
    try:
        user = user_by_name(name)
    except NotFoundError as exc:
        raise click.ClickException(f"{exc.message}; `agentq users list` shows them") from None
    role, other = ("an admin", "a user") if admin else ("a user", "an admin")
    if set_admin(user, admin):
        click.echo(f"{name} is now {role} (was {other})")
    else:
        click.echo(f"{name} is already {role}; nothing changed")


@users.command("promote")
@click.argument("name")
@with_appcontext
def users_promote(name: str) -> None:
    """Give user NAME the admin role (the admin pages, decisions, the fleet)."""
    _set_role(name, True)


@users.command("demote")
@click.argument("name")
@with_appcontext
def users_demote(name: str) -> None:
    """Take the admin role from user NAME; their tokens and sign-in stay, as a user's."""
    _set_role(name, False)


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


@main.group()
def tokens() -> None:
    """Manage API tokens: create, list, revoke."""


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


@tokens.command("list")
@click.argument("name", required=False)
@with_appcontext
def tokens_list(name: str | None) -> None:
    """List the tokens (user NAME's only, when given), oldest first: id, user, the token's
    first characters, when made and last used (to the minute), when revoked."""
    try:
        user = user_by_name(name) if name else None
    except NotFoundError as exc:
        raise click.ClickException(exc.message) from None
    rows = [
        (
            str(row.id),
            row.user.name,
            f"{row.prefix}\u2026" if row.prefix else "-",
            when(row.created_at),
            when(row.last_used_at),
            when(row.revoked_at),
        )
        for row in list_tokens(user)
    ]
    table(("ID", "USER", "TOKEN", "CREATED", "LAST USED", "REVOKED"), rows)


@tokens.command("revoke")
@click.argument("token_id")
@with_appcontext
def tokens_revoke(token_id: str) -> None:
    """Revoke token TOKEN_ID (its id, or the start of it that no other token's id shares);
    requests carrying it are refused at once."""
    matches = tokens_matching(token_id)
    if not matches:
        raise click.ClickException(f"Token {token_id} not found; `agentq tokens list` shows them")
    if len(matches) > 1:
        listed = "\n".join(f"  {row.id}  {row.user.name}" for row in matches)
        raise click.ClickException(
            f"{token_id} starts {len(matches)} token ids; give more of the one to revoke:\n{listed}"
        )
    row = revoke_token(matches[0].id)
    click.echo(f"Revoked token {row.id} of {row.user.name}")


@main.group()
def groups() -> None:
    """Manage groups of users, which review policies name as approvers (group:NAME)."""


@groups.command("create")
@click.argument("name")
@with_appcontext
def groups_create(name: str) -> None:
    """Create group NAME (1-100 letters, digits, '.', '_' or '-'), with no members."""
    try:
        create_group(name)
    except (InvalidName, ConflictError) as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"Created group {name}; a review policy's approvers name it group:{name}")


@groups.command("delete")
@click.argument("name")
@with_appcontext
def groups_delete(name: str) -> None:
    """Delete group NAME; policies that name it then let none of its former members decide."""
    try:
        members = delete_group(name)
    except NotFoundError as exc:
        raise click.ClickException(f"{exc.message}; `agentq groups list` shows them") from None
    click.echo(f"Deleted group {name} ({members} member{'' if members == 1 else 's'})")


@groups.command("add")
@click.argument("name")
@click.argument("users", nargs=-1, required=True)
@with_appcontext
def groups_add(name: str, users: tuple[str, ...]) -> None:
    """Make USERS members of group NAME (one already a member stays one)."""
    try:
        click.echo(add_members(name, users).message)
    except NotFoundError as exc:
        raise click.ClickException(exc.message) from None


@groups.command("remove")
@click.argument("name")
@click.argument("users", nargs=-1, required=True)
@with_appcontext
def groups_remove(name: str, users: tuple[str, ...]) -> None:
    """Take USERS out of group NAME."""
    try:
        click.echo(remove_members(name, users).message)
    except NotFoundError as exc:
        raise click.ClickException(exc.message) from None


@groups.command("list")
@with_appcontext
def groups_list() -> None:
    """List the groups by name, each with its members (``-``: none)."""
    rows = [
        (group.name, ", ".join(user.name for user in group.members) or "-")
        for group in list_groups()
    ]
    table(("GROUP", "MEMBERS"), rows)


def _check(ok: bool, label: str) -> bool:
    click.echo(f"{OK if ok else FAIL} {label}")
    return ok


def _app_or_fail() -> Flask:
    try:
        return _create_app()
    except ConfigError as exc:
        _check(False, exc.message)
        sys.exit(1)


@main.command("check-db")
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
        for name in sorted(db.metadata.tables):
            present = name in tables
            ok &= _check(present, f"{name} table {'exists' if present else 'is missing'}")
    if not ok:
        click.echo("Run `agentq db upgrade` to create the missing tables.")
        sys.exit(1)


@main.command()
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
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
)
@click.pass_context
def beat(ctx: click.Context) -> None:
    """Run Celery beat, which schedules the sweeps (extra args go to celery)."""
    os.execvp(sys.executable, processes.beat_argv(*ctx.args))


#: The advisory lock ``agentq serve`` holds while it migrates, so that web processes starting
#: together migrate one after the other (the later ones find nothing left to do).
MIGRATIONS_LOCK = sa.text("SELECT pg_advisory_lock(hashtext('agentq.migrations'))")


def _migrate() -> None:
    """Apply the migrations (``agentq db upgrade``) under ``MIGRATIONS_LOCK``.

    :raises click.ClickException: when the database does not answer.
    """
    app = _app_or_fail()
    with app.app_context():
        try:
            # The lock is the session's, and goes with its connection at the end of the block.
            with db.engine.connect() as conn:
                conn.execute(MIGRATIONS_LOCK)
                flask_migrate.upgrade()
        except sa.exc.OperationalError as exc:
            reason = str(exc.orig or exc).strip().splitlines()[0]
            raise click.ClickException(f"Cannot migrate the database: {reason}") from None
        finally:
            db.engine.dispose()


@main.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
)
@click.option("--port", envvar="PORT", default=8000, show_default=True, help="Port to serve on.")
@click.option(
    "--workers",
    envvar="WEB_CONCURRENCY",
    default=2,
    show_default=True,
    help="gunicorn worker processes.",
)
@click.option("--no-migrate", is_flag=True, help="Start without applying the migrations first.")
@click.pass_context
def serve(ctx: click.Context, port: int, workers: int, no_migrate: bool) -> None:
    """Apply the migrations, then serve the web (API, admin pages, metrics) with gunicorn on
    0.0.0.0:PORT (extra args go to gunicorn)."""
    if not no_migrate:
        _migrate()
    click.echo(f"agentq serve: gunicorn on 0.0.0.0:{port}, {workers} workers")
    argv = processes.web_argv(f"0.0.0.0:{port}", "--workers", str(workers), *ctx.args)
    os.execvp(sys.executable, argv)


@main.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
)
@click.pass_context
def flower(ctx: click.Context) -> None:
    """Run Flower, Celery's monitor, on agentq's queues and priorities (``worker.flower``;
    extra args go to flower)."""
    if importlib.util.find_spec("flower") is None:
        raise click.ClickException(
            "Flower is not installed here: pip install 'agentq[flower]' (or 'flower>=2.2,<3')"
        )
    argv = [sys.executable, "-m", "celery", "-A", "worker.flower", "flower", *ctx.args]
    os.execvp(sys.executable, argv)


@main.command()
@click.option("--port", envvar="PORT", default=8000, show_default=True, help="Web port.")
def dev(port: int) -> None:
    """Run everything on embedded Postgres and Redis with data in ./var (Ctrl-C stops)."""
    # Here, not at the top: the embedded servers need the ``embedded`` extra's packages
    # (psutil, the wheels), which a production install of the other commands lacks.
    from app.dev import supervisor

    supervisor.run(port)


@main.command()
@click.option("--url", envvar="AGENTQ_URL", help="Base URL (default: the running `agentq dev`).")
@click.option(
    "--token", envvar="AGENTQ_TOKEN", help="An admin token, to approve (default: a temporary one)."
)
@click.option(
    "--submitter-token",
    envvar="AGENTQ_SUBMITTER_TOKEN",
    help="Another user's token, to submit (default: a temporary one of demo-user).",
)
@click.option("--timeout", default=60.0, show_default=True, help="Seconds to wait for each stage.")
def demo(url: str | None, token: str | None, submitter_token: str | None, timeout: float) -> None:
    """Run the guide's workflow: enqueue code-generation, approve it, see it complete."""
    url = url or dev_state().get("web_url") or "http://127.0.0.1:8000"
    app = _app_or_fail() if not (token and submitter_token) else None
    revoke = []
    if not token:
        token_id, token = walkthrough.temporary_admin_token(app)
        revoke.append(token_id)
    if not submitter_token:
        token_id, submitter_token = walkthrough.temporary_submitter_token(app)
        revoke.append(token_id)
    try:
        job = walkthrough.run(
            walkthrough.Client(url, submitter_token), walkthrough.Client(url, token), timeout
        )
    finally:
        if revoke:
            with app.app_context():
                for token_id in revoke:
                    revoke_token(token_id)
    click.echo(f"{OK} Demo complete: job {job['id']} is COMPLETED")


if __name__ == "__main__":
    main()
