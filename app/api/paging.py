"""Keyset paging: page 1,000 costs what page 1 costs.

A page is ``limit`` rows after the cursor in ``(created_at, id)`` order; the cursor
is the last row's key, opaque to clients (base64 of JSON).
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from datetime import datetime

import sqlalchemy as sa
from flask_smorest import abort

from app.extensions import db


def encode_cursor(created_at: datetime, row_id: uuid.UUID) -> str:
    raw = json.dumps([created_at.isoformat(), str(row_id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """:raises 422: for a cursor this API did not make."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, row_id = json.loads(raw)
        return datetime.fromisoformat(created), uuid.UUID(row_id)
    except (ValueError, TypeError, binascii.Error):
        abort(422, messages={"query": {"cursor": ["Not a cursor from this API."]}})


def keyset_page(stmt: sa.Select, model, *, cursor: str | None, limit: int, descending: bool):
    """Rows of ``stmt`` (ordered by created_at, id) after ``cursor``, and the next cursor."""
    if cursor:
        created, row_id = decode_cursor(cursor)
        key = sa.tuple_(model.created_at, model.id)
        stmt = stmt.where(key < (created, row_id) if descending else key > (created, row_id))
    rows = list(db.session.scalars(stmt.limit(limit + 1)).unique())
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor(rows[-1].created_at, rows[-1].id)
    return rows, next_cursor
