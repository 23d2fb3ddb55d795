"""The groups page through the Flask test client: its forms posted as a browser posts them."""

from __future__ import annotations

import html as markup
import re

import pytest

from tests.integration.admin_pages import csrf_token
from tests.integration.admin_pages import sign_in

pytestmark = [pytest.mark.integration]

#: Where the page's forms post: create, delete, add a member, remove one.
FORMS = [
    "/admin/groups",
    "/admin/groups/delete",
    "/admin/groups/members",
    "/admin/groups/members/remove",
]


def page(client, status: int = 200) -> str:
    response = client.get("/admin/groups")
    assert response.status_code == status, response.get_data(as_text=True)
    return response.get_data(as_text=True)


def submit(client, path: str, form_page: str, **fields: str) -> str:
    """POST a form of ``form_page`` to ``path`` and follow the 303 back; the page it lands on."""
    response = client.post(path, data={"csrf_token": csrf_token(form_page), **fields})
    assert response.status_code == 303, response.get_data(as_text=True)
    assert response.headers["Location"] == "/admin/groups"
    return page(client)


def flashes(html: str) -> list[tuple[str, str]]:
    """The messages at the top of the page: (category, text)."""
    found = re.findall(r'<div class="flash flash-(\w+)"[^>]*>(.*?)</div>', html, re.DOTALL)
    return [(category, markup.unescape(text)) for category, text in found]


def groups(html: str) -> dict[str, list[str]]:
    """Each group on the page, in order, with its members."""
    shown = {}
    for section in html.split('data-group="')[1:]:
        name = markup.unescape(section.split('"', 1)[0])
        shown[name] = [markup.unescape(m) for m in re.findall(r'data-member="([^"]*)"', section)]
    return shown


def test_create_add_remove_and_delete_through_the_forms(app, reviewer, client, user):
    """Given a signed-in admin and a user, when the admin creates a group, adds the user
    (twice), removes them and deletes the group, then each step says what it did and the
    page shows the groups and members as they now are."""
    html = page(client)
    assert 'aria-current="page">Groups</a>' in html
    assert "No groups yet" in html

    html = submit(client, "/admin/groups", html, name="reviewers")
    assert flashes(html) == [
        ("success", "Created group reviewers: a review policy's approvers name it group:reviewers.")
    ]
    assert groups(html) == {"reviewers": []}

    html = submit(client, "/admin/groups/members", html, group="reviewers", user=f" {user.name} ")
    assert flashes(html) == [("success", f"Added {user.name} to reviewers.")]
    assert groups(html) == {"reviewers": [user.name]}
    html = submit(client, "/admin/groups/members", html, group="reviewers", user=user.name)
    assert flashes(html) == [("info", f"{user.name} was already a member.")]

    html = submit(client, "/admin/groups", html, name="writers")
    html = submit(client, "/admin/groups/members", html, group="writers", user=reviewer.name)
    assert groups(html) == {"reviewers": [user.name], "writers": [reviewer.name]}

    html = submit(client, "/admin/groups/members/remove", html, group="reviewers", user=user.name)
    assert flashes(html) == [("success", f"Removed {user.name} from reviewers.")]
    assert groups(html) == {"reviewers": [], "writers": [reviewer.name]}

    html = submit(client, "/admin/groups/delete", html, group="writers")
    assert flashes(html) == [("success", "Deleted group writers (1 member).")]
    assert groups(html) == {"reviewers": []}


def test_mistakes_are_flashed_and_change_nothing(app, reviewer, client, user):
    """Given a group reviewers, when the forms name a bad or taken group name, an unknown
    user or a group deleted meanwhile, then the page says what is wrong and nothing changed."""
    from app.groups import create_group

    with app.app_context():
        create_group("reviewers")
    html = page(client)

    html = submit(client, "/admin/groups", html, name="two words")
    [(category, text)] = flashes(html)
    assert category == "error" and text.startswith("Invalid group name 'two words'")
    html = submit(client, "/admin/groups", html, name="reviewers")
    assert flashes(html) == [("error", "Group 'reviewers' already exists")]
    html = submit(client, "/admin/groups/members", html, group="reviewers", user="ghost")
    assert flashes(html) == [("error", "User 'ghost' not found")]
    html = submit(client, "/admin/groups/members", html, group="reviewers", user="gh\x00st")
    assert flashes(html) == [("error", "User 'gh\\x00st' not found")]
    html = submit(client, "/admin/groups/delete", html, group="gone")
    assert flashes(html) == [("error", "Group 'gone' not found")]
    html = submit(client, "/admin/groups/members", html, group="gone", user=user.name)
    assert flashes(html) == [("error", "Group 'gone' not found")]

    assert groups(html) == {"reviewers": []}


def test_anonymous_visitors_are_sent_to_the_login(client, app):
    response = client.get("/admin/groups")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/admin/login")


@pytest.mark.parametrize("path", FORMS)
def test_users_who_are_not_admins_get_403_and_change_nothing(app, client, user, path):
    from app.groups import list_groups

    sign_in(app, client, user)
    assert client.get("/admin/groups").status_code == 403
    token = csrf_token(client.get("/admin/login").get_data(as_text=True))
    fields = {"csrf_token": token, "name": "sneaky", "group": "sneaky", "user": user.name}
    response = client.post(path, data=fields)
    assert response.status_code == 403
    assert "for admins" in response.get_data(as_text=True)
    with app.app_context():
        assert list_groups() == []


@pytest.mark.parametrize("path", FORMS)
def test_a_post_without_the_csrf_token_is_refused(app, reviewer, client, path):
    """Given a signed-in admin and a group with a member, a form posted from elsewhere (no
    CSRF token) changes nothing."""
    from app.groups import add_members
    from app.groups import create_group

    with app.app_context():
        create_group("reviewers")
        add_members("reviewers", [reviewer.name])
    fields = {"name": "sneaky", "group": "reviewers", "user": reviewer.name}
    response = client.post(path, data=fields)
    assert response.status_code == 400
    assert "did not come from this site" in response.get_data(as_text=True)
    assert groups(page(client)) == {"reviewers": [reviewer.name]}
