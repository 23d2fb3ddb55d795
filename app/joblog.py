"""A job's log: the lines its steps and its transitions write, shown on the job's timeline.

A transition writes its line in its own transaction (``add``, or in the statement of a
hot path, which takes the lines as JSON: ``as_json``); a running step's lines are written
while it runs (``write``), so its progress shows before it returns.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from dataclasses import field
from datetime import UTC
from datetime import datetime
from typing import Any

from app.extensions import db
from app.models import JobLog
from app.sql import run


@dataclass(frozen=True)
class LogLine:
    """A job log line a step wrote, stamped when it was written."""

    kind: str
    message: str
    step: str | None = None
    data: Any = None
    at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def row(self) -> dict:
        return {
            "kind": self.kind,
            "message": self.message,
            "step": self.step,
            "data": self.data,
            "at": self.at.isoformat(),
        }


@dataclass(frozen=True)
class LogRecord:
    """A job log line as written."""

    id: uuid.UUID
    kind: str
    message: str
    created_at: datetime
    step: str | None = None
    data: Any = None


def as_json(lines: list[LogLine]) -> str:
    """The lines as the hot paths' statements take them (``jsonb_to_recordset``)."""
    return json.dumps([line.row() for line in lines], separators=(",", ":"))


def add(
    job_id: uuid.UUID, kind: str, message: str, *, step: str | None = None, data: Any = None
) -> None:
    """Add a job log line to the session's transaction."""
    db.session.add(JobLog(job_id=job_id, step=step, kind=kind, message=message, data=data))


def write(job_id: uuid.UUID, lines: list[LogLine]) -> None:
    """Write log lines of a running step now, so its progress shows while it runs."""
    run("append_logs", job_id=job_id, logs=as_json(lines))
