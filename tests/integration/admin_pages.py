"""Signing the Flask test client in to the admin pages, as a browser would."""

from __future__ import annotations

import re

from tests.conftest import give_password


def csrf_token(page: str) -> str:
    """The CSRF token of the (first) form on ``page``."""
    return re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)


def sign_in(app, client, person) -> None:
    """Give ``person`` a password and sign the test client in through the login form."""
    password = give_password(app, person)
    token = csrf_token(client.get("/admin/login").get_data(as_text=True))
    response = client.post(
        "/admin/login", data={"name": person.name, "password": password, "csrf_token": token}
    )
    assert response.status_code == 302, response.get_data(as_text=True)
