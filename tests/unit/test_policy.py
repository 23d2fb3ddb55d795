"""Review policies in layers: what a submission's review may tighten, and what it makes of a
checkpoint's policy (``app.policy``)."""

from __future__ import annotations

import pytest

from app.policy import Option
from app.policy import Policy
from app.policy import PolicyError
from app.policy import data_problems
from app.status import OnTimeout

DECLARED = Policy(
    approvers=("alice", "bob", "group:leads"),
    min_approvals=2,
    expires_in=3600,
    on_timeout=OnTimeout.REJECT,
    escalate_to=("carol",),
    escalate_after=1800,
    options=(Option("deploy-staging", "staging"), Option("deploy-prod")),
    max_revisions=3,
)


def test_a_review_that_only_tightens_is_accepted():
    """Given a step's policy, when a review asks for more approvals, fewer approvers, a
    shorter deadline, a stricter onTimeout, fewer options and revisions, then nothing is
    loosened."""
    review = Policy(
        approvers=("alice",),
        min_approvals=3,
        expires_in=600,
        on_timeout=OnTimeout.FAIL,
        options=(Option("deploy-staging"),),
        max_revisions=1,
    )

    assert DECLARED.loosened(review) == {}


def test_each_loosening_field_is_named():
    """Given a step's policy, when a review would loosen each field, then each is named with
    what it may be."""
    review = Policy(
        approvers=("mallory",),
        allow_self_approval=True,
        min_approvals=1,
        veto_on_reject=False,
        expires_in=7200,
        on_timeout=OnTimeout.APPROVE,
        escalate_to=("dave",),
        escalate_after=60,
        options=(Option("yolo"),),
        max_revisions=9,
    )

    loosened = DECLARED.loosened(review)

    assert set(loosened) == {
        "approvers",
        "allowSelfApproval",
        "minApprovals",
        "vetoOnReject",
        "expiresIn",
        "onTimeout",
        "escalateTo",
        "escalateAfter",
        "options",
        "maxRevisions",
    }
    assert loosened["minApprovals"] == "must be at least 2"
    assert loosened["onTimeout"] == "must be reject or fail"
    assert "mallory" in loosened["approvers"]


def test_tightening_takes_the_stricter_of_each_field():
    """Given a checkpoint's policy and a review, when applied, then each field is the
    stricter of the two, and both data schemas must hold."""
    checkpoint = Policy(
        approvers=("alice", "bob"),
        min_approvals=2,
        expires_in=600,
        remind_at=(60,),
        data_schema={"required": ["ticket"]},
    )
    review = Policy(
        approvers=("bob", "eve"),
        min_approvals=1,
        expires_in=3600,
        on_timeout=OnTimeout.FAIL,
        remind_at=(300,),
        data_schema={"required": ["reason"]},
    )

    tight = checkpoint.tightened_by(review)

    assert tight.approvers == ("bob",)
    assert tight.min_approvals == 2
    assert tight.expires_in == 600
    assert tight.on_timeout == OnTimeout.FAIL
    assert tight.remind_at == (300, 60)
    assert data_problems(tight.data_schema, {"ticket": "T-1"}) == {
        "_schema": ["'reason' is a required property"]
    }


def test_a_review_naming_no_approver_the_checkpoint_allows_leaves_its_list():
    """Given a checkpoint that names bob, when a review names only alice, then bob still
    decides: a review can narrow the approvers, never name others."""
    assert Policy(approvers=("bob",)).tightened_by(Policy(approvers=("alice",))).approvers == (
        "bob",
    )
    assert Policy().tightened_by(Policy(approvers=("alice",))).approvers == ("alice",)


def test_the_stored_policy_reads_back_as_written():
    """Given a resolved policy, when stored as JSON and read back, then it is the same."""
    policy = DECLARED.resolved()

    assert Policy.from_json(policy.to_json()) == policy


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"min_approvals": 0}, "minApprovals"),
        ({"expires_in": -1}, "expiresIn"),
        ({"escalate_to": ("carol",)}, "escalateAfter"),
        ({"options": (Option("a"), Option("a"))}, "options"),
        ({"data_schema": {"type": "nonsense"}}, "dataSchema"),
    ],
)
def test_a_policy_that_cannot_hold_is_refused_naming_the_field(fields, named):
    with pytest.raises(PolicyError) as refused:
        Policy(**fields)

    assert named in refused.value.problems
