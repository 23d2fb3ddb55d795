"""Keyset paging: page 1,000 costs what page 1 costs.

A page is ``limit`` rows after the cursor in ``(created_at, id)`` order; the cursor
is the last row's key, ``<created_at in microseconds since the epoch>.<id in hex>``
(``app.schemas.CURSOR_PATTERN``). Clients pass back the ``nextCursor`` of the previous
page; every string of that form names a place in the order, so a cursor that matches
the pattern is never refused (the page after it may be empty), and the query schemas
refuse one that does not (422).
"""

from __future__ import annotations

import uuid
from datetime import UTC
from datetime import datetime
from datetime import timedelta

import sqlalchemy as sa

from app.extensions import db

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def encode_cursor(created_at: datetime, row_id: uuid.UUID | str) -> str:
    """The cursor of the row with key ``(created_at, row_id)``: ``1767225600000000.3f2a...``
    (``row_id`` a UUID, or its text as psycopg2 reads it without SQLAlchemy)."""
    return f"{(created_at - _EPOCH) // _MICROSECOND}.{uuid.UUID(str(row_id)).hex}"


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """The key ``(created_at, id)`` a cursor matching ``CURSOR_PATTERN`` names."""
    micros, _, hex_id = cursor.partition(".")
    return _EPOCH + int(micros) * _MICROSECOND, uuid.UUID(hex=hex_id)


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
