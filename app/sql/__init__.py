"""Named SQL statements, loaded once from the ``.sql`` files beside this module.

Each statement is a block headed ``-- name --`` and a one-line ``--`` description,
as procrastinate keeps its queries. ``queries["claim_outbox"]`` is a ``sa.text``.
"""

from __future__ import annotations

import re
from pathlib import Path

import sqlalchemy as sa

_HEADER = re.compile(r"^-- ([a-z_]+) --$", re.MULTILINE)


def _load() -> dict[str, sa.TextClause]:
    statements: dict[str, sa.TextClause] = {}
    for path in sorted(Path(__file__).parent.glob("*.sql")):
        parts = _HEADER.split(path.read_text())
        for name, body in zip(parts[1::2], parts[2::2], strict=True):
            if name in statements:
                raise ValueError(f"{path.name}: statement {name!r} is defined twice")
            statements[name] = sa.text(body.strip())
    return statements


queries = _load()
