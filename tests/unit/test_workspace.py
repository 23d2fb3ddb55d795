"""The workspace (``app.framework.workspace``): where it writes, what it refuses, and its path
rules as code and as the OpenAPI pattern."""

from __future__ import annotations

import itertools
import os
import re

import pytest

from app.framework import PermanentError
from app.framework.workspace import PATH_PATTERN
from app.framework.workspace import Workspace
from app.framework.workspace import path_problem


def test_the_pattern_accepts_exactly_the_paths_path_problem_accepts():
    """Given every path of up to 7 characters made of "a", "." and "/", then the OpenAPI
    pattern matches a path exactly when path_problem finds nothing wrong with it."""
    disagreements = [
        path
        for length in range(1, 8)
        for path in map("".join, itertools.product("a./", repeat=length))
        if (re.fullmatch(PATH_PATTERN, path) is not None) != (path_problem(path) is None)
    ]

    assert disagreements == []


@pytest.mark.parametrize("path", ["a\x00b", "/\x00", "\x00"])
def test_the_pattern_refuses_a_nul_character(path):
    assert re.fullmatch(PATH_PATTERN, path) is None


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
