"""Jinja filters of the admin pages: times and JSON for people."""

from __future__ import annotations

import json
from datetime import UTC
from datetime import datetime


def when(ts: datetime | None) -> str:
    """``2026-11-25 14:03:07 UTC``."""
    return ts.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if ts else ""


def ago(ts: datetime | None, now: datetime | None = None) -> str:
    """How long ago, coarsely: ``12s``, ``5m``, ``3h 20m``, ``2d 4h``."""
    if ts is None:
        return ""
    seconds = max(0, int(((now or datetime.now(UTC)) - ts).total_seconds()))
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if seconds < 60:
        return f"{seconds}s"
    if minutes < 60:
        return f"{minutes}m"
    if hours < 24:
        return f"{hours}h {minutes % 60}m"
    return f"{days}d {hours % 24}h"


def pretty_json(value) -> str:
    """JSON indented for people, non-ASCII kept as is (the template escapes it)."""
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)
