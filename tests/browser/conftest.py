"""Browser fixtures: the app served on loopback, driven by Playwright in Debian's Chromium.

Playwright cannot download its own browser here; it drives the system Chromium
(Debian package ``chromium``, which ``.ci/run`` installs as root when missing).
Without it these tests are skipped, saying why; in CI (``CI`` set) they fail instead.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from app.dev.embedded import free_port
from tests.conftest import PASSWORD
from tests.conftest import ROOT
from tests.conftest import TMP
from tests.conftest import ApiUser
from tests.conftest import give_password

CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
#: The README's screenshots are rewritten by `make screenshots` (UPDATE_SCREENSHOTS=1);
#: other runs take them all the same, into the session's temporary directory.
SCREENSHOTS = (
    ROOT / "docs" / "screenshots" if os.environ.get("UPDATE_SCREENSHOTS") else TMP / "screenshots"
)
#: Chromium flags for a closed network and a root user (see shared/notes).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():
        reason = (
            f"no Chromium at {CHROMIUM}: install Debian's chromium package "
            "(`apt-get install chromium`, which .ci/run does as root) to run the browser tests"
        )
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def live_server(app):
    """The app on a loopback port, served by werkzeug from a thread of this process."""
    server = make_server("127.0.0.1", free_port(), app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    page.set_default_timeout(10_000)
    yield page
    context.close()


@pytest.fixture
def reviewer(app, admin) -> ApiUser:
    """The admin, with a password to sign in to the pages."""
    give_password(app, admin)
    return admin


def sign_in(page, base_url: str, user: ApiUser, password: str = PASSWORD) -> None:
    """Sign in through the login form, as a person does."""
    page.goto(f"{base_url}/admin/login")
    page.get_by_label("User name").fill(user.name)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def screenshot(page, name: str) -> Path:
    """Save what the admin sees as <name>.png (docs/screenshots/ with UPDATE_SCREENSHOTS)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def title_count(page) -> int | None:
    """The pending count in the page title: ``(3) Pending checkpoints · agentq`` -> 3."""
    match = re.match(r"\((\d+)\)", page.title())
    return int(match.group(1)) if match else None
