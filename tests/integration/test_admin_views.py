"""How the checkpoint page shows data: by the view the opening step declares, else JSON.

The seed handlers' views (file diffs, records tables) are covered with the rest of the
checkpoint page in ``test_admin_checkpoints.py``.
"""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

from tests.integration.admin_pages import FILES
from tests.integration.admin_pages import park

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("jobs_stay_pending")]


def shown(client, checkpoint_id: str) -> str:
    """The data section of the checkpoint's page."""
    page = client.get(f"/admin/agent-checkpoints/{checkpoint_id}").get_data(as_text=True)
    return page.split('aria-labelledby="data-head">', 1)[1].split("\n    </section>", 1)[0]


def test_a_before_after_view_shows_both_sides(app, client, reviewer, user):
    data = {"old": "ada <b>", "new": {"name": "ADA"}}
    checkpoint_id = park(app, user, "test-before-after", data=data, input={"name": "ada"})

    section = shown(client, checkpoint_id)

    assert '<h2 id="data-head">Before and after</h2>' in section
    assert '<h3><code>old</code></h3>\n    <pre class="json">ada &lt;b&gt;</pre>' in section
    assert '<h3><code>new</code></h3>\n    <pre class="json">{\n  &#34;name&#34;' in section


def test_data_that_does_not_fit_the_view_shows_as_json(app, client, reviewer, user):
    """Given files under a step whose view is before/after, the page shows JSON: it goes by
    the declared view, not by the data's shape."""
    checkpoint_id = park(app, user, "test-before-after", data={"files": FILES}, input={})

    section = shown(client, checkpoint_id)

    assert '<h2 id="data-head">Data</h2>' in section
    assert '<pre class="json">{\n  &#34;files&#34;: [' in section
    assert "diff" not in section


def test_a_checkpoint_of_a_handler_no_longer_deployed_shows_as_json(app, client, reviewer, user):
    from app.extensions import db
    from app.models import Checkpoint

    checkpoint_id = park(app, user)
    with app.app_context():
        db.session.execute(
            sa.update(Checkpoint)
            .where(Checkpoint.id == uuid.UUID(checkpoint_id))
            .values(handler="retired")
        )
        db.session.commit()

    page = client.get(f"/admin/agent-checkpoints/{checkpoint_id}").get_data(as_text=True)

    assert '<h2 id="data-head">Data</h2>' in page
    assert 'class="line add"' not in page and 'id="file-0"' not in page
