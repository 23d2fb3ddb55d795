"""Fixtures of the admin pages' test-client tests."""

from __future__ import annotations

import pytest

from tests.integration.admin_pages import sign_in


@pytest.fixture
def reviewer(app, client, admin):
    """The admin, signed in to the pages with the test client."""
    sign_in(app, client, admin)
    return admin
