"""What the beat sweep logs: a DEBUG line when it found nothing to do, so a console at INFO
stays quiet between events; one INFO line saying what it did when it acted."""

from __future__ import annotations

import logging

import pytest
import sqlalchemy as sa

from tests.integration.admin_pages import park

pytestmark = [pytest.mark.integration]


#: Puts a pending checkpoint's expiry in the past.
EXPIRE = sa.text("UPDATE checkpoints SET expires_at = now() - interval '1 second' WHERE id = :id")


def sweep(app, caplog) -> list[logging.LogRecord]:
    """Run one sweep in the app; the records it logged."""
    from worker import sweeps

    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger=sweeps.log.name), app.app_context():
        sweeps.sweep()
    return [r for r in caplog.records if r.name == sweeps.log.name]


def test_a_sweep_with_nothing_to_do_logs_at_debug_and_one_that_acts_says_what_it_did(
    app, user, caplog
):
    """Given nothing for the sweep to do, when it runs, then its only line is DEBUG; given a
    checkpoint past its deadline, when it runs, then one INFO line says it decided it."""
    from app.extensions import db

    idle = sweep(app, caplog)
    assert [(r.levelno, r.getMessage()) for r in idle] == [(logging.DEBUG, "sweep: nothing to do")]

    checkpoint = park(app, user)
    with app.app_context():
        db.session.execute(EXPIRE, {"id": checkpoint})
        db.session.commit()

    acted = sweep(app, caplog)
    assert [(r.levelno, r.getMessage()) for r in acted] == [
        (logging.INFO, "sweep: decided 1 checkpoint(s) whose deadline passed")
    ]
