"""Fixtures of the fault suite: a running system with a user and an admin, and a seeded RNG."""

from __future__ import annotations

import random

import pytest
import redis

from tests.conftest import stop_worker
from tests.faults.report import FULL
from tests.faults.system import System


@pytest.fixture
def tokens(app):
    """API tokens of a user who submits and an admin who decides."""
    from app.auth import create_user

    with app.app_context():
        _user, _row, user_token = create_user("submitter", admin=False)
        _admin, _row, admin_token = create_user("reviewer", admin=True)
    return user_token, admin_token


@pytest.fixture
def system(request, app, servers, celery_worker):
    """gunicorn and one worker of their own (the session's worker is stopped; beat runs)."""
    stop_worker(app, celery_worker)
    running = System(app.extensions["celery"], request.node.name)
    running.start()
    yield running
    running.stop()
    # The test process's broker connection may predate a Redis restart: its first use
    # finds the socket closed (and the next one reconnects).
    for _attempt in range(3):
        try:
            app.extensions["celery"].control.ping(timeout=0.2)
            break
        except redis.ConnectionError:
            continue


@pytest.fixture
def rng(request) -> random.Random:
    """Random moments and targets, reproducible from the seed printed on failure."""
    seed = random.randrange(2**32)
    request.node.user_properties.append(("seed", seed))
    print(f"fault seed: {seed}")
    return random.Random(seed)


def scaled(ci: int, full: int) -> int:
    """``ci`` in ``make test``, ``full`` in ``make faults``."""
    return full if FULL else ci
