"""The rules that need no database: the transition table, the handler registry, the workspace."""

import os

import pytest

from app.errors import UnknownHandlerError
from app.framework import Handler
from app.framework import PermanentError
from app.framework import Step
from app.framework.registry import Registry
from app.framework.workspace import Workspace
from app.framework.workspace import path_problem
from app.state import ALLOWED
from app.state import FINAL
from app.state import JobStatus
from app.state import sources

NON_FINAL = {JobStatus.PENDING, JobStatus.RUNNING, JobStatus.WAITING_APPROVAL}


def noop(ctx):
    return {}


# -- The transition table -----------------------------------------------------------------


def test_every_status_has_a_row_and_targets_only_known_statuses():
    """Given the transition table, then every status has a row and every target is a status."""
    assert set(ALLOWED) == set(JobStatus)
    for status, targets in ALLOWED.items():
        assert targets <= set(JobStatus), status


def test_completed_is_final():
    """Given a COMPLETED job, then no transition leaves it, and it is the only final status."""
    assert ALLOWED[JobStatus.COMPLETED] == set()
    assert FINAL == {JobStatus.COMPLETED}
    assert JobStatus.COMPLETED.value not in sources(JobStatus.PENDING)
    assert JobStatus.COMPLETED.value not in sources(JobStatus.RUNNING)


@pytest.mark.parametrize("status", [JobStatus.FAILED, JobStatus.CANCELLED])
def test_failed_and_cancelled_only_go_back_to_pending(status):
    """Given a FAILED or CANCELLED job, then the only way out is a retry to PENDING."""
    assert ALLOWED[status] == {JobStatus.PENDING}


def test_cancel_is_reachable_from_every_non_final_status_and_nothing_else():
    """Given the table, when asking where CANCELLED comes from, then PENDING, RUNNING, WAITING."""
    assert set(sources(JobStatus.CANCELLED)) == {s.value for s in NON_FINAL}


def test_retry_is_reachable_from_failed_and_cancelled():
    """Given the table, then FAILED and CANCELLED are among the sources of PENDING."""
    assert {"FAILED", "CANCELLED"} <= set(sources(JobStatus.PENDING))
    assert "COMPLETED" not in sources(JobStatus.PENDING)


def test_pending_is_claimed_cancelled_or_dispatched_again():
    """Given a PENDING job, then it is claimed, cancelled or re-dispatched; it never finishes."""
    assert ALLOWED[JobStatus.PENDING] == {
        JobStatus.RUNNING,
        JobStatus.CANCELLED,
        JobStatus.PENDING,
    }


def test_waiting_approval_is_entered_only_from_running():
    """Given the table, then only a running step can park a job at a checkpoint."""
    assert sources(JobStatus.WAITING_APPROVAL) == [JobStatus.RUNNING.value]


def test_sources_returns_plain_status_strings():
    """Given sources(), then it returns the strings stored in the jobs table."""
    found = sources(JobStatus.COMPLETED)
    assert all(type(s) is str for s in found)
    assert set(found) == {"RUNNING", "WAITING_APPROVAL"}


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


# -- The workspace ------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/etc/passwd", "../escape.txt", "a/../../escape.txt", "", "a/.."])
def test_workspace_refuses_absolute_and_parent_paths(tmp_path, path):
    """Given a workspace, when a path is absolute or uses "..", then PermanentError, no write."""
    ws = Workspace(tmp_path / "root", "job-1")
    with pytest.raises(PermanentError):
        ws.write_all([{"path": path, "content": "x"}])
    assert not (tmp_path / "escape.txt").exists()
    assert not (tmp_path / "root").exists()


@pytest.mark.parametrize(
    ("path", "says"),
    [
        (".", "must name a file"),
        ("./", "must name a file"),
        ("lib/", "must name a file"),
        ("x" * 256 + ".txt", "longer than 255 bytes"),
        ("lib/" + "é" * 128, "longer than 255 bytes"),
    ],
)
def test_workspace_refuses_what_can_never_be_a_file(tmp_path, path, says):
    """Given a workspace, when a path names no file ("." or a directory) or has a name the
    file system cannot hold, then it is refused before anything is written, with the reason
    (the same check refuses it at submission: `path_problem`)."""
    ws = Workspace(tmp_path / "root", "job-1")
    assert says in path_problem(path)
    with pytest.raises(PermanentError, match=says):
        ws.write_all([{"path": path, "content": "x"}])
    assert not (tmp_path / "root").exists()


def test_workspace_takes_the_longest_names_that_fit(tmp_path):
    """A name of exactly 255 bytes is written."""
    ws = Workspace(tmp_path / "root", "job-1")
    name = "é" * 127 + "x"
    assert path_problem(name) is None
    assert ws.write_all([{"path": name, "content": "x"}]) == [name]


def test_a_failed_write_leaves_no_temporary_file(tmp_path):
    """Given a directory where a file should go, when the write fails, then the error is
    raised and no `.agentq-*` temporary file is left behind, however often it is retried."""
    ws = Workspace(tmp_path / "root", "job-1")
    (ws.root / "lib" / "a.txt").mkdir(parents=True)
    for _attempt in range(3):
        with pytest.raises(IsADirectoryError):
            ws.write_all([{"path": "lib/a.txt", "content": "x"}])
    assert [p.name for p in (ws.root / "lib").iterdir()] == ["a.txt"]


def test_workspace_refuses_a_symlink_out_of_it(tmp_path):
    """Given a symlink inside the workspace pointing outside, when writing through it, refused."""
    outside = tmp_path / "outside"
    outside.mkdir()
    ws = Workspace(tmp_path / "root", "job-1")
    ws.root.mkdir(parents=True)
    (ws.root / "link").symlink_to(outside)
    with pytest.raises(PermanentError, match="leaves the workspace"):
        ws.write_all([{"path": "link/evil.txt", "content": "x"}])
    assert list(outside.iterdir()) == []


def test_workspace_checks_every_path_before_writing_any(tmp_path):
    """Given one good and one bad path, when writing both, then nothing is written."""
    ws = Workspace(tmp_path / "root", "job-1")
    files = [{"path": "ok.txt", "content": "fine"}, {"path": "../bad.txt", "content": "no"}]
    with pytest.raises(PermanentError):
        ws.write_all(files)
    assert not (ws.root / "ok.txt").exists()


def test_workspace_writes_files_inside_its_root(tmp_path):
    """Given nested relative paths, when written, then they land under <root>/<job id>."""
    ws = Workspace(tmp_path / "root", "job-1")
    written = ws.write_all(
        [
            {"path": "lib/auth.py", "content": "def authenticate():\n    pass\n"},
            {"path": "README.md", "content": "hello"},
        ]
    )
    assert written == ["lib/auth.py", "README.md"]
    root = tmp_path / "root" / "job-1"
    assert (root / "lib" / "auth.py").read_text() == "def authenticate():\n    pass\n"
    assert (root / "README.md").read_text() == "hello"
    assert ws.read("README.md") == "hello"
    assert ws.read("missing.txt") is None


def test_workspace_replaces_files_atomically_and_leaves_no_temporaries(tmp_path):
    """Given an existing file, when it is written again, then replaced whole, no temp files left."""
    ws = Workspace(tmp_path / "root", "job-1")
    ws.write_all([{"path": "lib/a.txt", "content": "old content, longer than the new one"}])
    before = os.stat(ws.root / "lib" / "a.txt").st_ino
    assert ws.write_all([{"path": "lib/a.txt", "content": "new"}]) == ["lib/a.txt"]
    target = ws.root / "lib" / "a.txt"
    assert target.read_text() == "new"
    # os.replace of a fresh file: a new inode, never the old file truncated in place.
    assert os.stat(target).st_ino != before
    leftovers = [p.name for p in ws.root.rglob("*") if p.is_file() and p.name != "a.txt"]
    assert leftovers == []


def test_workspace_running_twice_writes_the_same_result(tmp_path):
    """Given a step that writes files, when it runs again (at least once), then same result."""
    ws = Workspace(tmp_path / "root", "job-1")
    files = [{"path": "x/y.txt", "content": "same"}]
    assert ws.write_all(files) == ws.write_all(files) == ["x/y.txt"]
    assert sorted(p.relative_to(ws.root).as_posix() for p in ws.root.rglob("*")) == [
        "x",
        "x/y.txt",
    ]
