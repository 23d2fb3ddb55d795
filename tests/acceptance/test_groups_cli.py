"""``agentq groups``, as an operator runs it: in this process, on the session's app
(:func:`~tests.acceptance.test_cli.invoke`), but for a refusal and a list that run the
installed script in a subprocess at the repo root."""

import pytest
import sqlalchemy as sa

from tests.acceptance.test_cli import agentq
from tests.acceptance.test_cli import invoke
from tests.acceptance.test_cli import rows

pytestmark = [pytest.mark.acceptance]


def said(done) -> str:
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.strip()


def refused(done) -> str:
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    return done.stderr.strip()


def groups(done) -> dict[str, str]:
    return {row["GROUP"]: row["MEMBERS"] for row in rows(done)}


def may_decide(app, name: str, approvers: list[str]) -> bool:
    """Whether user ``name`` may decide a checkpoint whose policy names ``approvers``."""
    from app.extensions import db
    from app.models import User

    with app.app_context():
        voter = db.session.scalar(sa.select(User).where(User.name == name))
        return db.session.scalar(
            sa.select(sa.func.agentq_may_decide(approvers, False, None, voter.id, voter.name))
        )


def test_create_add_list_remove_delete(app):
    """Given users ada and bob, when an operator makes a group, fills it, lists it, takes a
    member out and deletes it, then each command says what it did, the list follows, and a
    policy naming the group lets exactly its members decide."""
    from app.auth import create_user

    with app.app_context():
        create_user("ada")
        create_user("bob")

    created = said(invoke("groups", "create", "reviewers", app=app))
    assert created == "Created group reviewers; a review policy's approvers name it group:reviewers"
    said(invoke("groups", "create", "writers", app=app))
    assert (
        said(invoke("groups", "add", "reviewers", "ada", "bob", app=app))
        == "Added ada, bob to reviewers"
    )
    again = said(invoke("groups", "add", "reviewers", "bob", app=app))
    assert again == "bob was already a member"
    assert groups(invoke("groups", "list", app=app)) == {"reviewers": "ada, bob", "writers": "-"}
    assert may_decide(app, "bob", ["group:reviewers"])

    removed = said(invoke("groups", "remove", "reviewers", "bob", "ada", app=app))
    assert removed == "Removed bob, ada from reviewers"
    assert not may_decide(app, "bob", ["group:reviewers"])
    said(invoke("groups", "add", "reviewers", "ada", app=app))
    assert groups(invoke("groups", "list", app=app)) == {"reviewers": "ada", "writers": "-"}

    assert (
        said(invoke("groups", "delete", "reviewers", app=app))
        == "Deleted group reviewers (1 member)"
    )
    assert groups(invoke("groups", "list", app=app)) == {"writers": "-"}
    assert not may_decide(app, "ada", ["group:reviewers"])


def test_mistakes_are_one_line_messages_and_change_nothing(app):
    """Given a group reviewers and user ada, when a command names a bad or taken group name,
    an unknown group or an unknown user, then exit 1 with a message saying which, and the
    groups stay as they were."""
    from app.auth import create_user
    from app.groups import create_group

    with app.app_context():
        create_user("ada")
        create_group("reviewers")

    assert "Invalid group name 'two words'" in refused(
        invoke("groups", "create", "two words", app=app)
    )
    # This refusal and the last list run the installed script, its streams on pipes: the
    # exit statuses the shell sees, the whole of stderr one line, the table a pipe gets.
    assert (
        refused(agentq("groups", "create", "reviewers"))
        == "Error: Group 'reviewers' already exists"
    )
    assert (
        refused(invoke("groups", "add", "nobody", "ada", app=app))
        == "Error: Group 'nobody' not found"
    )
    unknown = refused(invoke("groups", "add", "reviewers", "ghost", "ada", "phantom", app=app))
    assert unknown == "Error: Users 'ghost', 'phantom' not found"
    assert (
        refused(invoke("groups", "remove", "reviewers", "ghost", app=app))
        == "Error: User 'ghost' not found"
    )
    assert "Group 'nobody' not found" in refused(invoke("groups", "delete", "nobody", app=app))

    assert groups(agentq("groups", "list")) == {"reviewers": "-"}
