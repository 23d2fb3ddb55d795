"""A job's own directory under ``WORKSPACE_ROOT``; nothing is written outside it."""

from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path
from pathlib import PurePosixPath

from app.framework.errors import PermanentError

#: The longest file or directory name the file systems agentq runs on take, in bytes.
NAME_MAX = 255

# A part of a path that names something: not empty, not "." and not "..".
_PART = r"(?:[^/.\x00]|\.[^/.\x00]|\.\.[^/\x00])[^/\x00]*"
#: The paths :func:`path_problem` accepts, as the OpenAPI document states them (ECMAScript):
#: relative, no ``..`` part, at least one part besides ".", not ending in "/", no NUL. The
#: limit of ``NAME_MAX`` bytes on a part is not a pattern of characters: only its
#: description says it.
PATH_PATTERN = rf"^(?:\./+)*{_PART}(?:/+(?:\.|{_PART}))*$"


def path_problem(path: str) -> str | None:
    """Why ``path`` cannot name a file inside a workspace, or None when it can."""
    rel = PurePosixPath(path)
    if not path or rel.is_absolute() or ".." in rel.parts:
        return f"file path {path!r} must be relative and stay inside the workspace"
    if not rel.parts or path.endswith("/"):
        return f"file path {path!r} must name a file, not a directory"
    long = next((part for part in rel.parts if len(part.encode()) > NAME_MAX), None)
    if long is not None:
        return f"file path {path!r} has a name longer than {NAME_MAX} bytes: {long[:40]!r}..."
    return None


class Workspace:
    """The directory ``<root>/<job_id>``; paths given to it are relative to it.

    >>> Workspace("/srv/agentq", "3f2a...").write_all([{"path": "lib/auth.py", "content": "..."}])
    ['lib/auth.py']
    """

    def __init__(self, root: str | Path, job_id: str) -> None:
        self._base = root
        self._job_id = job_id

    @functools.cached_property
    def root(self) -> Path:
        """The directory, absolute (resolved when first needed: most steps never touch it)."""
        return Path(self._base).resolve() / self._job_id

    def resolve(self, path: str) -> Path:
        """The absolute path of ``path`` inside the workspace.

        :raises PermanentError: for an absolute path or one that leaves the workspace.
        """
        problem = path_problem(path)
        if problem:
            raise PermanentError(problem)
        target = (self.root / path).resolve()
        if not target.is_relative_to(self.root):
            raise PermanentError(f"file path {path!r} leaves the workspace")
        return target

    def read(self, path: str) -> str | None:
        """The current content of ``path``, or None when it does not exist."""
        try:
            return self.resolve(path).read_text()
        except FileNotFoundError:
            return None

    def write_all(self, files: list[dict]) -> list[str]:
        """Write each ``{path, content}``; returns the paths written.

        Every path is checked before anything is written, and each file is replaced
        atomically, so running the step again writes the same result.
        """
        targets = [(f["path"], self.resolve(f["path"]), f["content"]) for f in files]
        for _path, target, content in targets:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".agentq-")
            try:
                with os.fdopen(fd, "w") as out:
                    out.write(content)
                os.replace(tmp, target)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        return [path for path, _target, _content in targets]
