"""Signing in to the admin pages, in a real browser."""

from __future__ import annotations

import pytest
import requests

from tests.browser.conftest import sign_in
from tests.conftest import PASSWORD
from tests.conftest import give_password

pytestmark = [pytest.mark.browser]


def test_anonymous_visitor_is_sent_to_login_and_back(page, live_server, reviewer):
    """Given an anonymous visitor, when they open the checkpoints page, then they land on
    the login form; once signed in, they are on the page they asked for."""
    page.goto(f"{live_server}/admin/agent-checkpoints")
    assert "/admin/login" in page.url

    page.get_by_label("User name").fill(reviewer.name)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()

    page.wait_for_url(f"{live_server}/admin/agent-checkpoints")
    assert page.get_by_role("navigation", name="Main").is_visible()


def test_wrong_password_is_refused(page, live_server, reviewer):
    """Given a wrong password, when the admin signs in, then the form says so."""
    sign_in(page, live_server, reviewer, password="not the password")

    assert "/admin/login" in page.url
    assert page.get_by_role("alert").inner_text() == "Wrong user name or password."


def test_sign_out_ends_the_session(page, live_server, reviewer):
    """Given a signed-in admin, when they sign out, then the pages need a login again."""
    sign_in(page, live_server, reviewer)
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(f"{live_server}/admin/login")

    page.goto(f"{live_server}/admin/jobs")

    assert "/admin/login" in page.url


def test_a_user_who_is_not_admin_gets_a_403_page(app, page, live_server, user):
    """Given a user without the admin role, when they sign in, then the pages answer 403
    with a page that says why."""
    give_password(app, user)
    sign_in(page, live_server, user)

    response = page.goto(f"{live_server}/admin/agent-checkpoints")

    assert response.status == 403
    assert "for admins" in page.locator("main").inner_text()


def test_session_cookie_and_headers(page, live_server, reviewer):
    """Given a signed-in admin, then the session cookie is HttpOnly and SameSite=Lax, and
    every admin page carries the security headers."""
    sign_in(page, live_server, reviewer)
    page.wait_for_url(f"{live_server}/admin/agent-checkpoints")

    [cookie] = [c for c in page.context.cookies() if c["name"] == "session"]
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Lax"
    assert cookie["secure"] is False  # plain HTTP on loopback; Secure over HTTPS
    response = page.goto(f"{live_server}/admin/jobs")
    headers = response.all_headers()
    assert "default-src 'self'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY"
    assert headers["x-content-type-options"] == "nosniff"


def test_session_cookie_is_secure_over_https(app, reviewer):
    """Given a request that came over HTTPS (behind a proxy that says so), then the
    session cookie is marked Secure."""
    client = app.test_client()
    login = client.get("/admin/login", base_url="https://agentq.example")
    token = login.get_data(as_text=True).split('name="csrf_token" type="hidden" value="')[1]
    response = client.post(
        "/admin/login",
        base_url="https://agentq.example",
        # Over HTTPS the CSRF check also wants a same-site Referer, as browsers send.
        headers={"Referer": "https://agentq.example/admin/login"},
        data={"name": reviewer.name, "password": PASSWORD, "csrf_token": token.split('"')[0]},
    )

    assert response.status_code == 302
    assert "Secure" in response.headers["Set-Cookie"]


def test_a_forged_post_without_the_csrf_token_is_refused(page, live_server, reviewer):
    """Given a signed-in admin, when another site makes their browser post a form without
    the CSRF token (here: the same session's cookies, no token), then it is refused."""
    sign_in(page, live_server, reviewer)
    page.wait_for_url(f"{live_server}/admin/agent-checkpoints")
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}

    forged = requests.post(f"{live_server}/admin/worker/pause", cookies=cookies, timeout=10)

    assert forged.status_code == 400
    assert "did not come from this site" in forged.text
