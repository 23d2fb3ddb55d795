import pytest

pytestmark = [pytest.mark.acceptance, pytest.mark.lifecycle]


def test_simple_task_completes(worker, user):
    job = user.enqueue("simple-task", {"test": "data"})
    done = user.wait_for(job["id"], "COMPLETED", "FAILED")
    assert done["status"] == "COMPLETED"
