"""When each API token was last used: recorded by the statement that checks the token, and
written at most once a minute per token, so a busy client does not cost a write per request.

Whether a request wrote the token's row is read from the row's ``xmin`` (the transaction
that wrote its current version): a request that only reads leaves it as it was.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from tests.integration.admin_pages import park

pytestmark = [pytest.mark.integration]

#: The token's last use, and the transaction that last wrote its row.
ROW = sa.text(
    "SELECT t.last_used_at, CAST(t.xmin AS text) AS xmin FROM api_tokens t"
    " JOIN users u ON u.id = t.user_id WHERE u.name = :name"
)


def token_row(app, name: str) -> sa.Row:
    from app.extensions import db

    with app.app_context():
        return db.session.execute(ROW, {"name": name}).one()


def age_last_use(app, name: str, seconds: int) -> None:
    """Move the user's token's last use ``seconds`` into the past."""
    from app.extensions import db

    with app.app_context():
        db.session.execute(
            sa.text(
                "UPDATE api_tokens SET last_used_at = last_used_at - make_interval(secs => :s)"
                " WHERE user_id = (SELECT id FROM users WHERE name = :name)"
            ),
            {"s": seconds, "name": name},
        )
        db.session.commit()


def test_requests_in_a_row_write_the_last_use_once(app, user):
    """Given a token never used, when it makes two requests in a row, then the first records
    its use and the second writes nothing; a request more than a minute after the recorded
    use records it again."""
    assert token_row(app, user.name).last_used_at is None

    assert user.request("GET", "/api/agent-jobs").status_code == 200
    first = token_row(app, user.name)
    assert first.last_used_at is not None

    assert user.request("GET", "/api/agent-jobs").status_code == 200
    assert token_row(app, user.name) == first

    age_last_use(app, user.name, 61)
    aged = token_row(app, user.name)
    assert user.request("GET", "/api/agent-jobs").status_code == 200
    again = token_row(app, user.name)
    assert again.xmin != aged.xmin
    assert again.last_used_at > first.last_used_at


def test_a_submission_and_a_decision_record_the_use_of_their_tokens(app, user, admin):
    """Given tokens never used, when one submits a job and the other approves a checkpoint
    (each checked inside the submission's or the decision's own statement), then both show
    a last use."""
    user.enqueue("simple-task")
    assert token_row(app, user.name).last_used_at is not None

    checkpoint = park(app, user)
    assert token_row(app, admin.name).last_used_at is None
    assert admin.approve(checkpoint, reason="fine").status_code == 200
    assert token_row(app, admin.name).last_used_at is not None


def test_a_revoked_token_is_not_recorded_as_used(app, user):
    """Given a revoked token, when a request carries it, then 401 and no use is recorded."""
    from app.auth import revoke_token
    from app.extensions import db
    from app.models import ApiToken

    with app.app_context():
        revoke_token(db.session.scalar(sa.select(ApiToken.id).where(ApiToken.user_id == user.id)))
    before = token_row(app, user.name)

    assert user.request("GET", "/api/agent-jobs").status_code == 401
    assert token_row(app, user.name) == before
    assert before.last_used_at is None
