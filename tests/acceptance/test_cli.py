"""The ``agentq`` console script.

Most commands run in this process (:func:`invoke`: click's test runner, on the session's
app and so its test database), saving each the second or so the script takes to start.
Some still run the installed script in a subprocess at the repo root (:func:`agentq`),
where the process is the point: a user's command that succeeds and one refused, on
pipes (``test_creating_a_user_twice_is_refused``), ``--help`` and ``--version`` with no
database, ``check-db`` and ``verify`` (which make their own app, from the environment),
and the servers ``flower`` and ``serve``.
"""

import functools
import importlib.metadata
import os
import re
import signal
import subprocess
import sys
import traceback
import urllib.request
import uuid
from pathlib import Path

import psutil
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from flask import Flask

from app.cli import main
from app.extensions import db
from tests.conftest import wait_until
from tests.integration.admin_pages import sign_in

pytestmark = [pytest.mark.acceptance]

ROOT = Path(__file__).resolve().parents[2]
AGENTQ = Path(sys.executable).parent / "agentq"
ADMIN_ONLY = "/api/admin/agent-checkpoints"


def agentq(*args: str, **env: str) -> subprocess.CompletedProcess:
    """Run ``agentq ARGS`` with the test environment (plus ``env``); returns the result."""
    return subprocess.run(
        [str(AGENTQ), *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def invoke(*args: str, app: Flask | None = None, **env: str) -> subprocess.CompletedProcess:
    """Run ``agentq ARGS`` in this process and return what :func:`agentq` returns for the
    script: exit status, stdout and stderr.

    ``app`` is the app the commands load (``app.test_cli_runner()`` hands it to them in
    place of the one the script makes); ``checkpoints`` loads none. ``env`` is added to the
    environment. An exception no command handled, which the script would print as a
    traceback, is written on stderr as one::

        invoke("users", "create", "ada", app=app)
        invoke("checkpoints", "list", AGENTQ_URL=url, AGENTQ_TOKEN=token)
    """
    runner = CliRunner() if app is None else app.test_cli_runner()
    result = runner.invoke(main, args, env=env, prog_name="agentq")
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        stderr += "".join(traceback.format_exception(result.exception))
    return subprocess.CompletedProcess(["agentq", *args], result.exit_code, result.stdout, stderr)


def last_line(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.strip().splitlines()[-1]


def get(client, path: str, token: str):
    return client.get(path, headers={"Authorization": f"Bearer {token}"})


def test_users_create_admin_prints_a_working_admin_token(app, client):
    """Given no users, when `agentq users create ada --admin`, then its token opens admin pages."""
    token = last_line(invoke("users", "create", "ada", "--admin", app=app))
    assert get(client, ADMIN_ONLY, token).status_code == 200
    assert get(client, "/api/agent-jobs", token).status_code == 200


def test_users_create_without_admin_gets_a_user_token(app, client):
    """Given `agentq users create bob`, when bob calls an admin endpoint, then 403, user API 200."""
    token = last_line(invoke("users", "create", "bob", app=app))
    assert get(client, "/api/agent-jobs", token).status_code == 200
    forbidden = get(client, ADMIN_ONLY, token)
    assert forbidden.status_code == 403
    assert forbidden.get_json()["error"]["code"] == "forbidden"


def test_tokens_create_and_revoke(app, client):
    """Given a user, when a token is made then revoked, then it works, then gets 401 at once."""
    first = last_line(invoke("users", "create", "carol", app=app))
    created = invoke("tokens", "create", "carol", app=app)
    token = last_line(created)
    assert token != first
    match = re.search(r"Created token ([0-9a-f-]{36}) for carol", created.stdout)
    assert match, created.stdout
    token_id = match.group(1)
    assert get(client, "/api/agent-jobs", token).status_code == 200

    revoked = invoke("tokens", "revoke", token_id, app=app)
    assert revoked.returncode == 0, revoked.stdout + revoked.stderr
    assert token_id in revoked.stdout

    refused = get(client, "/api/agent-jobs", token)
    assert refused.status_code == 401
    assert refused.get_json()["error"]["code"] == "unauthorized"
    # The user's other token is untouched.
    assert get(client, "/api/agent-jobs", first).status_code == 200


def test_check_db_reports_the_connection_and_every_table(app):
    """Given the migrated database, when `agentq check-db`, then a ✓ for it and each table."""
    done = agentq("check-db")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert any(line.startswith("\u2713 Database connection successful") for line in lines)
    for table in db.metadata.tables:
        assert f"\u2713 {table} table exists" in lines, done.stdout
    assert not any(line.startswith("\u2717") for line in lines), done.stdout


def test_check_db_fails_when_the_database_does_not_answer(app):
    """Given a DATABASE_URL nobody listens on, when `agentq check-db`, then ✗ and non-zero."""
    done = agentq("check-db", DATABASE_URL="postgresql://postgres@127.0.0.1:1/x")
    assert done.returncode != 0
    failed = [line for line in done.stdout.splitlines() if line.startswith("\u2717")]
    assert failed, done.stdout + done.stderr
    assert "Database connection failed" in failed[0]
    assert "Traceback" not in done.stderr


def test_verify_with_a_running_worker(app, worker):
    """Given the worker runs, when `agentq verify`, then ✓ for each part and exit 0."""
    done = agentq("verify")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    for part in ("database: ok", "migrations: ok", "broker: ok"):
        assert f"\u2713 {part}" in lines, done.stdout
    workers = [line for line in lines if line.startswith("\u2713 workers answering: ")]
    assert workers and "test-" in workers[0], done.stdout
    handlers = [line for line in lines if line.startswith("\u2713 handlers registered: ")]
    assert handlers, done.stdout
    for job_type in ("simple-task", "code-generation", "data-processing", "test-gated"):
        assert job_type in handlers[0]


def test_unknown_user_or_token_is_an_error_message_not_a_traceback(app):
    """Given no user "nobody", when making or revoking tokens wrongly, then exit 1 and a message."""
    done = invoke("tokens", "create", "nobody", app=app)
    assert done.returncode == 1
    assert "User 'nobody' not found" in done.stderr
    assert "Traceback" not in done.stderr

    token_id = str(uuid.uuid4())
    revoked = invoke("tokens", "revoke", token_id, app=app)
    assert revoked.returncode == 1
    assert f"Token {token_id} not found" in revoked.stderr
    assert "Traceback" not in revoked.stderr


def test_creating_a_user_twice_is_refused(app, client):
    """Given user dora exists, when `agentq users create dora` again, then exit 1, no new token."""
    # The installed script, its streams on pipes: the exit statuses the shell sees, the
    # token uncoloured (the API takes it), the refusal a message and not a traceback.
    token = last_line(agentq("users", "create", "dora"))
    again = agentq("users", "create", "dora", "--admin")
    assert again.returncode == 1
    assert "dora" in again.stderr
    assert "already exists" in again.stderr
    assert "Traceback" not in again.stderr
    # dora is still a plain user with her first token.
    assert get(client, ADMIN_ONLY, token).status_code == 403


def test_help_shows_agentq_commands_not_flasks_options_and_needs_no_database(tmp_path):
    """Given a directory with no database anywhere, when `agentq --help` and `agentq
    --version`, then the help lists agentq's commands with none of Flask's options, and the
    version is the installed package's."""
    bare = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    run = functools.partial(
        subprocess.run, cwd=tmp_path, env=bare, capture_output=True, text=True, timeout=60
    )

    shown = run([str(AGENTQ), "--help"])

    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert shown.stderr == ""
    commands = re.findall(r"^  ([a-z-]+)  ", shown.stdout.split("Commands:")[1], re.MULTILINE)
    assert set(commands) >= {"serve", "worker", "beat", "flower", "db", "users", "tokens"}
    for flask_option in ("--env-file", "--app", "--debug"):
        assert flask_option not in shown.stdout
    version = run([str(AGENTQ), "--version"])
    assert version.stdout.strip() == f"agentq, version {importlib.metadata.version('agentq')}"


def test_promote_names_itself_on_the_403_page_and_demote_takes_the_role_back(app, client, user):
    """Given a user who is not an admin, when they open the admin pages, then the 403 page
    names the command that would let them in; when an operator runs it, the pages open
    and the admin API answers; `agentq users demote` closes both again."""
    sign_in(app, client, user)
    refused = client.get("/admin/jobs")
    assert refused.status_code == 403
    assert f"agentq users promote {user.name}" in refused.get_data(as_text=True)

    promoted = invoke("users", "promote", user.name, app=app)
    assert promoted.returncode == 0, promoted.stderr
    assert promoted.stdout.strip() == f"{user.name} is now an admin (was a user)"
    assert client.get("/admin/jobs").status_code == 200
    assert get(client, ADMIN_ONLY, user.token).status_code == 200

    demoted = invoke("users", "demote", user.name, app=app)
    assert demoted.stdout.strip() == f"{user.name} is now a user (was an admin)"
    assert client.get("/admin/jobs").status_code == 403
    assert get(client, ADMIN_ONLY, user.token).status_code == 403

    unknown = invoke("users", "promote", "nobody", app=app)
    assert unknown.returncode == 1
    assert "User 'nobody' not found" in unknown.stderr
    assert "Traceback" not in unknown.stderr


def rows(done: subprocess.CompletedProcess) -> list[dict[str, str]]:
    """The table a list command printed, a dict per row by the header's column names."""
    assert done.returncode == 0, done.stdout + done.stderr
    header, *lines = done.stdout.splitlines()
    columns = list(re.finditer(r"\S+(?: \S+)*", header))
    ends = [c.start() for c in columns[1:]] + [None]
    return [
        {c.group(): line[c.start() : end].strip() for c, end in zip(columns, ends, strict=True)}
        for line in lines
    ]


#: A time as the lists print it.
WHEN = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ")


def test_users_list_and_tokens_list_show_roles_tokens_and_last_use(app, client):
    """Given an admin whose token is revoked and a user with two tokens, one of them used,
    when `agentq users list` and `agentq tokens list [NAME]`, then each user shows their role
    and tokens in use, and each token its user, first characters, last use and revocation."""
    from app.auth import create_token
    from app.auth import create_user
    from app.auth import revoke_token

    with app.app_context():
        _erin, erin_row, erin_token = create_user("erin", admin=True)
        finn, _row, used = create_user("finn")
        _row, unused = create_token(finn)
        erin_token_id = str(revoke_token(erin_row.id).id)
    assert get(client, "/api/agent-jobs", used).status_code == 200

    users = {row["NAME"]: row for row in rows(invoke("users", "list", app=app))}
    assert {name: (u["ROLE"], u["TOKENS"]) for name, u in users.items()} == {
        "erin": ("admin", "0"),
        "finn": ("user", "2"),
    }
    assert WHEN.fullmatch(users["finn"]["CREATED"])

    tokens = rows(invoke("tokens", "list", app=app))
    assert [(t["USER"], t["TOKEN"]) for t in tokens] == [
        ("erin", f"{erin_token[:8]}\u2026"),
        ("finn", f"{used[:8]}\u2026"),
        ("finn", f"{unused[:8]}\u2026"),
    ]
    erin, finn_used, finn_unused = tokens
    assert erin["ID"] == erin_token_id
    assert WHEN.fullmatch(erin["REVOKED"]) and erin["LAST USED"] == "-"
    assert WHEN.fullmatch(finn_used["LAST USED"]) and finn_used["REVOKED"] == "-"
    assert finn_unused["LAST USED"] == "-" and finn_unused["REVOKED"] == "-"
    assert rows(invoke("tokens", "list", "finn", app=app)) == [finn_used, finn_unused]


def test_tokens_revoke_by_a_unique_prefix_and_not_by_an_ambiguous_one(app, client, user):
    """Given tokens whose ids share a start, when `agentq tokens revoke` gets that start, then
    it revokes nothing and lists the tokens it matches; given the whole id (in capitals) or a
    start only one id has, it revokes that token."""
    from app.auth import create_token
    from app.auth import hash_token
    from app.models import ApiToken
    from app.models import User

    twins = [uuid.UUID(f"abcdef01-0000-4000-8000-00000000000{n}") for n in (1, 2)]
    made = [f"aq_twin{token_id}" for token_id in twins]
    with app.app_context():
        for token_id, token in zip(twins, made, strict=True):
            db.session.add(ApiToken(id=token_id, user_id=user.id, token_hash=hash_token(token)))
        db.session.commit()
        row, other = create_token(db.session.get(User, user.id))
        other_id = str(row.id)

    ambiguous = invoke("tokens", "revoke", "ABCDEF", app=app)
    assert ambiguous.returncode == 1
    assert "ABCDEF starts 2 token ids" in ambiguous.stderr
    for token_id in twins:
        assert f"{token_id}  {user.name}" in ambiguous.stderr
    assert [get(client, "/api/agent-jobs", t).status_code for t in made] == [200, 200]

    whole = invoke("tokens", "revoke", str(twins[0]).upper(), app=app)
    assert whole.stdout.strip() == f"Revoked token {twins[0]} of {user.name}"
    start = invoke("tokens", "revoke", other_id[:8], app=app)
    assert start.stdout.strip() == f"Revoked token {other_id} of {user.name}"
    statuses = [get(client, "/api/agent-jobs", t).status_code for t in (*made, other, user.token)]
    assert statuses == [401, 200, 401, 200]


def test_flower_runs_flower_on_agentqs_app_or_says_how_to_install_it(servers, tmp_path):
    """Given the broker, when `agentq flower --port P`, then the process becomes Flower on
    agentq's app and answers there; given no flower package, a message naming the extra."""
    from app.dev.embedded import free_port

    port = free_port()
    flower = subprocess.Popen(
        [str(AGENTQ), "flower", "--address=127.0.0.1", f"--port={port}"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def answers() -> bool:
            assert flower.poll() is None, "agentq flower exited"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthcheck", timeout=2):
                    return True
            except OSError:
                return False

        wait_until(answers, 60, "agentq flower to answer /healthcheck")
        became = psutil.Process(flower.pid).cmdline()
        assert became[1:6] == ["-m", "celery", "-A", "worker.flower", "flower"], became
    finally:
        flower.terminate()
        flower.wait(timeout=30)

    without = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; sys.modules['flower'] = None; import app.cli; app.cli.main()",
            "flower",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert without.returncode == 1
    assert "Flower is not installed here: pip install 'agentq[flower]'" in without.stderr


#: Backends waiting for an advisory lock.
WAITING = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"


def test_serve_migrates_under_a_lock_then_serves(servers, tmp_path):
    """Given an empty database and another process migrating it (holding the migrations'
    advisory lock), when `agentq serve` starts, then it waits for that lock; once the lock
    is free, it migrates and serves on its port, migrations current."""
    from app.dev.embedded import free_port

    name = f"agentq_serve_{uuid.uuid4().hex[:8]}"
    with servers.admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = sa.engine.make_url(servers.database_url).set(database=name)
    other = sa.create_engine(url.set(drivername="postgresql+psycopg2"), poolclass=sa.pool.NullPool)
    port = free_port()
    serve = None
    try:
        with other.connect() as holder:
            holder.execute(sa.text("SELECT pg_advisory_lock(hashtext('agentq.migrations'))"))
            serve = subprocess.Popen(
                [str(AGENTQ), "serve", "--port", str(port), "--workers", "1"],
                cwd=tmp_path,
                env={**os.environ, "DATABASE_URL": url.render_as_string(hide_password=False)},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            wait_until(
                lambda: holder.execute(sa.text(WAITING)).scalar() == 1,
                60,
                "agentq serve to wait for the migrations' lock",
            )
            assert not sa.inspect(holder).get_table_names()

        def ready() -> bool:
            assert serve.poll() is None, "agentq serve exited"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/ready", timeout=2):
                    return True
            except OSError:
                return False

        wait_until(ready, 60, "agentq serve to migrate and answer /api/ready")
    finally:
        if serve is not None:
            os.killpg(serve.pid, signal.SIGTERM)
            serve.wait(timeout=30)
        other.dispose()
        with servers.admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
