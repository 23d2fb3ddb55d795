"""Groups of users: a review policy that names ``group:reviewers`` among its approvers lets
any member of the group ``reviewers`` decide (``agentq_may_decide``, migration 0007).

``agentq groups ...`` and the admin page ``/admin/groups`` both go through here; each
function that changes something commits. A policy may name a group that does not exist
(yet): nobody is in it until it is created and given members.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert

from app.errors import ConflictError
from app.errors import InvalidName
from app.errors import NotFoundError
from app.extensions import db
from app.models import Group
from app.models import GroupMember
from app.models import User

#: A group's name: what ``group:<name>`` in a policy's approvers may hold.
NAME = re.compile(r"[A-Za-z0-9._-]{1,100}")


@dataclass(frozen=True)
class MembersChanged:
    """What adding or removing members did to ``group``: the user names it ``changed``, and
    the ones it left as they were (already members, or not members), in the order given."""

    group: str
    verb: str
    changed: list[str]
    unchanged: list[str]

    @property
    def message(self) -> str:
        """One line for a person: ``Added ada, bob to reviewers; carl was already a member``."""
        parts = []
        if self.changed:
            into = "to" if self.verb == "Added" else "from"
            parts.append(f"{self.verb} {', '.join(self.changed)} {into} {self.group}")
        if self.unchanged:
            was = "already" if self.verb == "Added" else "not"
            many = len(self.unchanged) > 1
            parts.append(
                f"{', '.join(self.unchanged)} {'were' if many else 'was'} {was} "
                f"{'members' if many else 'a member'}"
            )
        return "; ".join(parts)


def create_group(name: str) -> Group:
    """Create and commit the group ``name``: ``create_group("reviewers")``.

    :raises InvalidName: when ``name`` is not 1-100 of ``A-Z a-z 0-9 . _ -``.
    :raises ConflictError: when a group of that name exists.
    """
    if not NAME.fullmatch(name):
        raise InvalidName(
            f"Invalid group name {name!r}: use 1 to 100 letters, digits, '.', '_' or '-'"
        )
    group = Group(name=name)
    db.session.add(group)
    try:
        db.session.commit()
    except sa.exc.IntegrityError:
        # The unique name: a group made by someone else, maybe a moment ago.
        db.session.rollback()
        raise ConflictError(f"Group {name!r} already exists") from None
    return group


def group_by_name(name: str) -> Group:
    """:raises NotFoundError: for an unknown group."""
    # A name that breaks the rule is no group's, and may hold what Postgres cannot read (NUL).
    group = NAME.fullmatch(name) and db.session.scalar(sa.select(Group).where(Group.name == name))
    if group is None:
        raise NotFoundError(f"Group {name!r} not found")
    return group


def delete_group(name: str) -> int:
    """Delete and commit the group ``name`` and its memberships; how many members it had.

    :raises NotFoundError: for an unknown group.
    """
    group = group_by_name(name)
    members = len(group.members)
    db.session.delete(group)
    db.session.commit()
    return members


def list_groups() -> list[Group]:
    """Every group by name, each with its ``members`` by name."""
    return list(db.session.scalars(sa.select(Group).order_by(Group.name)))


def add_members(name: str, user_names: Iterable[str]) -> MembersChanged:
    """Make the users named members of the group ``name`` and commit; adding a member again
    changes nothing: ``add_members("reviewers", ["ada", "bob"])``.

    :raises NotFoundError: for an unknown group or user (naming each unknown user); then
        nobody is added.
    """
    group = group_by_name(name)
    users = _users(user_names)
    rows = [{"group_id": group.id, "user_id": user.id} for user in users.values()]
    stmt = pg_insert(GroupMember).values(rows).on_conflict_do_nothing()
    added = set(db.session.scalars(stmt.returning(GroupMember.user_id)))
    db.session.commit()
    return _changed(group.name, "Added", users, added)


def remove_members(name: str, user_names: Iterable[str]) -> MembersChanged:
    """Take the users named out of the group ``name`` and commit; removing one who is not a
    member changes nothing: ``remove_members("reviewers", ["bob"])``.

    :raises NotFoundError: for an unknown group or user (naming each unknown user); then
        nobody is removed.
    """
    group = group_by_name(name)
    users = _users(user_names)
    stmt = sa.delete(GroupMember).where(
        GroupMember.group_id == group.id,
        GroupMember.user_id.in_([user.id for user in users.values()]),
    )
    removed = set(db.session.scalars(stmt.returning(GroupMember.user_id)))
    db.session.commit()
    return _changed(group.name, "Removed", users, removed)


def _users(names: Iterable[str]) -> dict[str, User]:
    """The users of ``names``, by name, in the order given (each once).

    :raises NotFoundError: naming every name no user has.
    """
    wanted = list(dict.fromkeys(names))
    # Postgres text holds no NUL, so a name with one (typed in a form) is no user's.
    asked = [name for name in wanted if "\x00" not in name]
    found = {u.name: u for u in db.session.scalars(sa.select(User).where(User.name.in_(asked)))}
    missing = [name for name in wanted if name not in found]
    if missing:
        listed = ", ".join(repr(name) for name in missing)
        raise NotFoundError(f"User{'s' if len(missing) > 1 else ''} {listed} not found")
    return {name: found[name] for name in wanted}


def _changed(group: str, verb: str, users: dict[str, User], ids: set) -> MembersChanged:
    changed = [name for name, user in users.items() if user.id in ids]
    unchanged = [name for name, user in users.items() if user.id not in ids]
    return MembersChanged(group, verb, changed, unchanged)
