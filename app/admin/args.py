"""The query arguments of the admin pages, loaded with the API's schemas."""

from __future__ import annotations

from flask import abort
from flask import request
from marshmallow import Schema
from marshmallow import ValidationError


def page_filters(schema: Schema, names: tuple[str, ...]) -> dict:
    """The query arguments ``names`` that are set, loaded with the API's ``schema``.

    :raise 400: naming each argument the schema refuses.
    """
    raw = {name: request.args[name] for name in names if request.args.get(name)}
    try:
        return schema.load(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{k}: {' '.join(map(str, v))}" for k, v in exc.messages.items())
        abort(400, description=f"Not a filter of this page: {problems}")
