"""The rules that need no database: the job statuses' transition table, the handler registry."""

import pytest

from app.errors import UnknownHandlerError
from app.framework import Handler
from app.framework import Step
from app.framework.registry import Registry
from app.status import ALLOWED
from app.status import CANCELLABLE
from app.status import FINAL
from app.status import RETRYABLE
from app.status import RUNNABLE
from app.status import JobStatus


def noop(ctx):
    return {}


def reachable(start: JobStatus) -> set[JobStatus]:
    """The statuses a job in ``start`` can reach through the table, in any number of moves."""
    seen, todo = set(), [start]
    while todo:
        for target in ALLOWED[todo.pop()] - seen:
            seen.add(target)
            todo.append(target)
    return seen


# -- The transition table -----------------------------------------------------------------


def test_every_status_has_a_row_and_targets_only_known_statuses():
    """Given the transition table, then every status has a row and every target is a status."""
    assert set(ALLOWED) == set(JobStatus)
    for status, targets in ALLOWED.items():
        assert targets <= set(JobStatus), status


def test_a_new_job_can_reach_every_status():
    """Given a job as it is created (PENDING), then some way through the table leads to
    each status: none is left that no job could ever be in."""
    assert reachable(JobStatus.PENDING) == set(JobStatus)


@pytest.mark.parametrize("status", sorted(set(JobStatus) - {JobStatus.COMPLETED}))
def test_a_job_that_has_not_completed_can_still_complete(status):
    """Given a job in any status but COMPLETED, then it is not final and some way leads to
    COMPLETED (a failed or cancelled job through a retry): only COMPLETED is the end."""
    assert status not in FINAL
    assert JobStatus.COMPLETED in reachable(status)


def test_each_status_is_cancellable_retryable_or_final_and_only_one():
    """Given the sets the API checks an action against, then each status is in exactly one:
    a job still under way may be cancelled, a stopped one retried, a completed one neither;
    a cancelled job is retried, not cancelled again."""
    for status in JobStatus:
        kinds = [status in CANCELLABLE, status in RETRYABLE, status in FINAL]
        assert kinds.count(True) == 1, status
    assert JobStatus.CANCELLED in RETRYABLE


def test_a_job_with_work_to_run_can_be_cancelled_and_a_waiting_one_has_none():
    """Given the statuses in which a job has work to run, then each may be cancelled, and a
    job waiting for approval is not among them (it holds no worker and no message)."""
    assert RUNNABLE <= CANCELLABLE
    assert JobStatus.WAITING_APPROVAL in CANCELLABLE - RUNNABLE


# -- The handler registry -----------------------------------------------------------------


def three_step_handler() -> Handler:
    handler = Handler("review", description="a handler with an approval in the middle")
    handler.step("propose")(noop)
    handler.step("review", approval=True)(noop)
    handler.step("apply")(noop)
    handler.step("report")(noop)
    return handler


def test_chain_from_stops_at_a_declared_approval_step():
    """Given steps propose, review (approval), apply, report, then chains end at review."""
    handler = three_step_handler()
    assert [s.name for s in handler.chain_from("propose")] == ["propose", "review"]
    assert [s.name for s in handler.chain_from("review")] == ["review"]
    assert [s.name for s in handler.chain_from("apply")] == ["apply", "report"]


def test_chain_from_without_approval_runs_to_the_end():
    """Given a handler with no approval step, then the chain from its first step is all of it."""
    handler = Handler("plain")
    for name in ("a", "b", "c"):
        handler.step(name)(noop)
    assert [s.name for s in handler.chain_from("a")] == ["a", "b", "c"]
    assert handler.next_step("c") is None
    assert handler.next_step("a").name == "b"


def test_unknown_step_options_are_rejected_naming_them():
    """Given a step declared with a misspelt option, then ValueError names the unknown options."""
    handler = Handler("typo")
    with pytest.raises(ValueError) as raised:
        handler.step("go", aproval=True, retries=2)
    message = str(raised.value)
    assert "aproval" in message
    assert "retries" in message
    assert handler.steps == []


def test_a_step_name_declared_twice_is_rejected():
    """Given a handler with step "go", when "go" is declared again, then ValueError."""
    handler = Handler("twice")
    handler.step("go")(noop)
    with pytest.raises(ValueError, match="go"):
        handler.step("go")
    assert len(handler.steps) == 1


def test_get_of_an_unknown_job_type_lists_the_known_ones():
    """Given a registry of two handlers, when getting a third, then the error lists both."""
    reg = Registry()
    reg.register(Handler("alpha"))
    reg.register(Handler("beta"))
    with pytest.raises(UnknownHandlerError) as raised:
        reg.get("gamma")
    assert "gamma" in raised.value.message
    assert "alpha" in raised.value.message
    assert "beta" in raised.value.message
    assert raised.value.status == 422


def test_two_handlers_with_one_name_are_rejected():
    """Given a registered handler, when another handler takes its name, then ValueError."""
    reg = Registry()
    first = reg.register(Handler("dup"))
    assert reg.register(first) is first
    with pytest.raises(ValueError, match="dup"):
        reg.register(Handler("dup"))
    assert reg.get("dup") is first


def test_backoff_doubles_and_caps():
    """Given a 1 s backoff capped at 5 s, then attempts wait 1, 2, 4, 5, 5 seconds."""
    step = Step("h", "s", noop, retry_backoff=1.0, retry_backoff_max=5.0)
    assert [step.backoff(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_backoff_defaults_and_task_name():
    """Given a step with default options, then it retries thrice from 1 s, as agentq.<h>.<s>."""
    step = Step("code-generation", "propose", noop)
    assert step.max_attempts == 3
    assert step.backoff(1) == 1.0
    assert step.backoff(2) == 2.0
    assert step.backoff(100) == 300.0
    assert step.task_name == "agentq.code-generation.propose"
