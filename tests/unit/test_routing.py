"""The routing table: which queue a step goes to, read from the environment."""

from __future__ import annotations

import pytest

from app import routing
from app.config import Config
from app.errors import ConfigError
from app.framework.registry import load_handlers


def test_each_job_type_has_its_own_queue_unless_mapped_and_continuations_take_the_fast_lane(
    monkeypatch,
):
    monkeypatch.setenv("QUEUE_ROUTES", " data-processing = agentq.bulk , other=agentq.bulk")
    monkeypatch.delenv("CONTINUATIONS_QUEUE", raising=False)
    config = vars(Config())

    assert routing.step_queue(config, "code-generation") == "agentq.steps.code-generation"
    assert routing.step_queue(config, "data-processing") == "agentq.bulk"
    assert routing.step_queue(config, "data-processing", continuation=True) == (
        "agentq.continuations"
    )


def test_the_queues_a_worker_consumes_are_every_step_queue_and_the_sweeps(monkeypatch):
    monkeypatch.setenv("QUEUE_ROUTES", "simple-task=agentq.light")
    monkeypatch.setenv("CONTINUATIONS_QUEUE", "agentq.fast")
    config = Config().as_dict()
    load_handlers([])

    names = [q.name for q in routing.declarations(config)]

    assert names[-1] == routing.SWEEPS_QUEUE
    assert {"agentq.light", "agentq.fast", "agentq.steps.code-generation"} <= set(names)
    assert "agentq.steps.simple-task" not in names
    assert len(names) == len(set(names))


@pytest.mark.parametrize("value", ["code-generation", "=agentq.x", "code-generation="])
def test_a_route_that_is_not_type_equals_queue_stops_the_app_naming_the_setting(monkeypatch, value):
    monkeypatch.setenv("QUEUE_ROUTES", value)
    with pytest.raises(ConfigError, match=r"QUEUE_ROUTES: .* is not job-type=queue"):
        Config()
