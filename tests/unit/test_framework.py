"""The handler framework's surface: ``ctx.approved`` and the review views steps declare."""

from __future__ import annotations

import pytest

from app.framework import Approval
from app.framework import BeforeAfter
from app.framework import FileDiff
from app.framework import Handler
from app.framework import Json
from app.framework import RecordsTable
from app.framework import StepContext
from app.framework.registry import Registry


def context(decision: Approval | None) -> StepContext:
    return StepContext(
        job_id="j",
        job_type="t",
        step="s",
        attempt=1,
        task_description="",
        input={},
        outputs={},
        decision=decision,
        workspace=None,
        log=lambda *args, **kwargs: None,
    )


def approval(data) -> Approval:
    return Approval("APPROVED", "admin", None, data=data, proposed={"files": []})


def test_approved_is_the_approvers_edit_of_the_key():
    ctx = context(approval({"files": ["edited"], "other": 1}))

    assert ctx.approved("files", default=["proposed"]) == ["edited"]


@pytest.mark.parametrize(
    "decision",
    [
        None,
        approval(None),
        approval({}),
        approval({"other": 1}),
        approval(["files"]),
    ],
    ids=["no approval", "approved as proposed", "empty edit", "other keys", "not an object"],
)
def test_approved_is_the_default_without_an_edit_of_the_key(decision):
    ctx = context(decision)

    assert ctx.approved("files", default=["proposed"]) == ["proposed"]
    assert ctx.approved("files") is None


def test_an_edit_to_a_falsy_value_counts():
    assert context(approval({"files": []})).approved("files", default=["proposed"]) == []


def registered() -> Registry:
    """A registry of one handler whose steps show their checkpoints in every way."""
    registry = Registry()
    handler = registry.register(Handler("h", view=RecordsTable("rows")))
    for name, options in [
        ("files", {"view": FileDiff("files"), "approval": True}),
        ("rows", {}),
        ("swap", {"view": BeforeAfter(before="old", after="new")}),
    ]:
        handler.step(name, **options)(lambda ctx: {})
    return registry


def test_a_step_is_shown_with_its_view_else_its_handlers():
    registry = registered()

    assert registry.view("h", "files") == FileDiff("files")
    assert registry.view("h", "rows") == RecordsTable("rows")
    assert registry.view("h", "swap") == BeforeAfter(before="old", after="new")


@pytest.mark.parametrize(("handler", "step"), [("gone", "files"), ("h", "gone")])
def test_a_step_no_longer_deployed_is_shown_as_json(handler, step):
    assert registered().view(handler, step) == Json()


def test_a_handler_without_a_view_shows_json():
    assert Handler("plain").view == Json()


def test_unknown_view_option_is_refused_like_any_other():
    with pytest.raises(ValueError, match="unknown step options \\['views'\\]"):
        Handler("h").step("s", views=Json())


@pytest.mark.parametrize(
    ("view", "fits", "misfits"),
    [
        (
            FileDiff("files"),
            {"files": [{"path": "a", "content": "x"}]},
            [None, {"files": [{"path": "a"}]}, {"files": "a"}, {"other": []}],
        ),
        (RecordsTable("rows"), {"rows": [{"a": 1}]}, [None, {"rows": [1]}, {"records": []}]),
        (BeforeAfter(before="old", after="new"), {"old": 1, "new": None}, [None, {"old": 1}]),
        (Json(), None, []),
    ],
    ids=["files", "records", "before-after", "json"],
)
def test_a_view_fits_only_data_of_its_shape(view, fits, misfits):
    assert view.fits(fits)
    assert not any(view.fits(data) for data in misfits)


def test_records_table_columns_are_the_given_ones_else_every_field_sorted():
    view = RecordsTable("rows")
    rows = [{"b": 1}, {"a": 2}]

    assert view.column_names({"rows": rows, "columns": ["b", "a", "c"]}, rows) == ["b", "a", "c"]
    assert view.column_names({"rows": rows}, rows) == ["a", "b"]
