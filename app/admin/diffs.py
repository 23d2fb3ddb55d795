"""Unified diffs of files, for reviewers: proposal against workspace, edit against proposal."""

from __future__ import annotations

import difflib
from dataclasses import dataclass


@dataclass(frozen=True)
class UnifiedDiff:
    """One file's diff as lines of ``(kind, text)``; kind is add, del, hunk, meta or ctx."""

    path: str
    lines: list[tuple[str, str]]
    #: "new file", "modified", or "unchanged".
    change: str


def file_diff(path: str, old: str | None, new: str) -> UnifiedDiff:
    """The diff turning ``old`` (None: no such file yet) into ``new``."""
    before = (old or "").splitlines(keepends=False)
    after = new.splitlines(keepends=False)
    lines = []
    for text in difflib.unified_diff(
        before, after, "/dev/null" if old is None else f"a/{path}", f"b/{path}", lineterm=""
    ):
        if text.startswith(("---", "+++")):
            kind = "meta"
        elif text.startswith("@@"):
            kind = "hunk"
        elif text.startswith("+"):
            kind = "add"
        elif text.startswith("-"):
            kind = "del"
        else:
            kind = "ctx"
        lines.append((kind, text))
    change = "new file" if old is None else ("modified" if lines else "unchanged")
    return UnifiedDiff(path, lines, change)


def proposal_diffs(workspace, files: list[dict]) -> list[UnifiedDiff]:
    """Each proposed file against what the job's workspace holds now."""
    return [file_diff(f["path"], workspace.read(f["path"]), f["content"]) for f in files]


def edit_diffs(proposed: list[dict], approved: list[dict]) -> list[UnifiedDiff]:
    """What a reviewer changed: each approved file against its proposal (or none)."""
    before = {f["path"]: f["content"] for f in proposed}
    diffs = [file_diff(f["path"], before.get(f["path"]), f["content"]) for f in approved]
    return [d for d in diffs if d.change != "unchanged"]
