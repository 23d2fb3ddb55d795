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
    return page_of(list(db.session.scalars(stmt.limit(limit + 1)).unique()), limit)


def page_of(rows: list, limit: int) -> tuple[list, str | None]:
    """A page of ``limit`` rows out of ``limit + 1`` read, and the cursor of the next page
    (None when there is none). Rows are objects or mappings with ``created_at`` and ``id``."""
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    last = rows[-1]
    if isinstance(last, dict):
        return rows, encode_cursor(last["created_at"], last["id"])
    return rows, encode_cursor(last.created_at, last.id)
