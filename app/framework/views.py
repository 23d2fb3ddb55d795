"""How reviewers see a checkpoint's data: each step declares a view, the admin pages show it.

A step names its view where it is declared; its checkpoints (declared or opened at run
time, APPROVAL_REQUIRED or INFO) are shown that way::

    @handler.step("propose", approval=True, view=FileDiff("files"))
    @handler.step("validate", approval=True, view=RecordsTable("records"))
    @handler.step("rename", approval=True, view=BeforeAfter(before="old", after="new"))

A step that names none takes its handler's (``Handler(..., view=...)``), and else
``Json()``, which also shows a checkpoint whose data does not have its view's shape, or
whose handler or step is no longer deployed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from typing import ClassVar


@dataclass(frozen=True)
class View:
    """A way to show a checkpoint's data; the admin pages have a template for each kind."""

    #: The name of the admin pages' template for the view (``admin/views/<kind>.html``).
    kind: ClassVar[str]

    def fits(self, data: Any) -> bool:
        """Whether ``data`` has the shape this view shows (if not, it shows as JSON)."""
        return True


@dataclass(frozen=True)
class Json(View):
    """The checkpoint's data as indented JSON; what every other view falls back to."""

    kind: ClassVar[str] = "json"


@dataclass(frozen=True)
class FileDiff(View):
    """``data[key]``, a list of ``{path, content}``, as a diff per file against the job's
    workspace; the reviewer may edit each file before approving, and the approver's edits
    show as diffs against the proposal."""

    key: str = "files"
    kind: ClassVar[str] = "files"

    def files(self, data: Any) -> list[dict] | None:
        """``data[key]`` when it is a list of ``{path, content}`` strings, else None."""
        files = data.get(self.key) if isinstance(data, dict) else None
        if isinstance(files, list) and all(
            isinstance(f, dict)
            and isinstance(f.get("path"), str)
            and isinstance(f.get("content"), str)
            for f in files
        ):
            return files
        return None

    def fits(self, data: Any) -> bool:
        return self.files(data) is not None


@dataclass(frozen=True)
class RecordsTable(View):
    """``data[key]``, a list of objects, as a table: a row per record, a column per field.

    The columns are ``data[columns]`` when that is a list, else every field of the records,
    sorted.
    """

    key: str = "records"
    columns: str = "columns"
    kind: ClassVar[str] = "records"

    def records(self, data: Any) -> list[dict] | None:
        """``data[key]`` when it is a list of objects, else None."""
        records = data.get(self.key) if isinstance(data, dict) else None
        if isinstance(records, list) and all(isinstance(r, dict) for r in records):
            return records
        return None

    def column_names(self, data: dict, records: list[dict]) -> list:
        """The table's columns, in order."""
        columns = data.get(self.columns)
        if isinstance(columns, list):
            return columns
        return sorted({key for record in records for key in record})

    def fits(self, data: Any) -> bool:
        return self.records(data) is not None


@dataclass(frozen=True)
class BeforeAfter(View):
    """``data[before]`` and ``data[after]`` side by side (text as it is, anything else as
    JSON)."""

    before: str = "before"
    after: str = "after"
    kind: ClassVar[str] = "before_after"

    def fits(self, data: Any) -> bool:
        return isinstance(data, dict) and self.before in data and self.after in data
