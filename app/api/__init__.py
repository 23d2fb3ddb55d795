"""The REST API: flask-smorest blueprints under /api, and one error body for every error.

Every error answers ``{"success": false, "error": {"code", "message", "details"}}``:
agentq's own errors (``app.errors``), validation errors (422, the message naming
each field), malformed JSON (400), bodies over the limit (413), requests over a rate
limit (429, with ``Retry-After``), and Flask's own 404 and 405.
"""

from __future__ import annotations

import flask_smorest
import swagger_ui_bundle
from flask import Flask
from flask import jsonify
from flask import render_template
from flask import request
from flask import send_from_directory
from flask_limiter import RateLimitExceeded
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from app import limits
from app.errors import AgentqError
from app.errors import AlreadyDecided
from app.errors import field_messages
from app.extensions import db
from app.schemas import CheckpointSchema
from app.schemas import ErrorEnvelopeSchema


def error_response(status: int, code: str, message: str, details=None, headers=None):
    body = {"success": False, "error": {"code": code, "message": message, "details": details}}
    response = jsonify(body)
    response.status_code = status
    for name, value in headers or ():
        if name.lower() != "content-type":
            response.headers[name] = value
    return response


class Api(flask_smorest.Api):
    """flask-smorest's Api, answering errors with agentq's error body."""

    ERROR_SCHEMA = ErrorEnvelopeSchema

    def handle_http_exception(self, error: HTTPException):
        db.session.rollback()
        if request.path.startswith("/admin"):
            return admin_error_page(error)
        data = getattr(error, "data", None) or {}
        messages = data.get("messages")
        headers = error.get_headers()
        if messages and error.code == 422:
            fields = {}
            for location_messages in messages.values():
                fields.update(field_messages(location_messages))
            text = "; ".join(f"{name}: {' '.join(msgs)}" for name, msgs in fields.items())
            return error_response(
                422, "validation_error", f"Invalid request: {text}", fields, headers
            )
        if messages:
            fields = {}
            for location_messages in messages.values():
                fields.update(field_messages(location_messages))
            text = "; ".join(" ".join(msgs) for msgs in fields.values())
            return error_response(error.code, _code(error), text, fields, headers)
        message = data.get("message") or error.description or error.name
        return error_response(error.code or 500, _code(error), message, None, headers)


def admin_error_page(error: HTTPException):
    """The admin pages answer errors with a page, in the pages' layout."""
    if isinstance(error, CSRFError):
        description = "This form expired or did not come from this site. Reload the page and retry."
    else:
        description = error.description
    page = render_template(
        "admin/error.html", code=error.code, name=error.name, description=description
    )
    headers = [(k, v) for k, v in error.get_headers() if k.lower() != "content-type"]
    return page, error.code, headers


def _code(error: HTTPException) -> str:
    return (error.name or "error").lower().replace(" ", "_")


def handle_recursion_error(error: RecursionError):
    """A JSON body nested deeper than the parser goes is the client's error (400), not a 500."""
    if not request.is_json:
        raise error
    db.session.rollback()
    message = "Invalid JSON body: nested too deeply."
    return error_response(400, "bad_request", message, {"json": [message]})


def handle_rate_limited(error: RateLimitExceeded):
    """429 over a rate limit (``app.limits``): the envelope says which limit and when to
    retry, as ``Retry-After`` does; the admin pages say it in their layout."""
    db.session.rollback()
    limit, wait = limits.breached()
    error.retry_after = wait  # werkzeug's TooManyRequests sends it as Retry-After
    error.description = f"{error.description}: at most {limit}. Retry in {wait} seconds."
    if request.path.startswith("/admin"):
        return admin_error_page(error)
    details = {"limit": limit, "retryAfter": wait}
    headers = error.get_headers()
    return error_response(429, "too_many_requests", error.description, details, headers)


def handle_agentq_error(error: AgentqError):
    db.session.rollback()
    details = error.details
    if isinstance(error, AlreadyDecided):
        details = {"checkpoint": CheckpointSchema().dump(error.checkpoint)}
    return error_response(error.status, error.code, error.message, details)


api = Api()


def init_app(app: Flask) -> None:
    from app.api import checkpoints
    from app.api import fleet
    from app.api import health
    from app.api import jobs

    api.init_app(app, spec_kwargs={"info": {"description": "Durable agent jobs with approvals"}})
    api.spec.components.security_scheme("bearerAuth", {"type": "http", "scheme": "bearer"})
    for blp in (jobs.blp, checkpoints.blp, fleet.blp, health.blp):
        api.register_blueprint(blp)
    app.register_error_handler(AgentqError, handle_agentq_error)
    app.register_error_handler(RateLimitExceeded, handle_rate_limited)
    app.register_error_handler(RecursionError, handle_recursion_error)

    @app.get("/api/docs/static/<path:filename>")
    def swagger_static(filename: str):
        """Swagger UI's files, served by the app itself (no CDN)."""
        return send_from_directory(swagger_ui_bundle.swagger_ui_path, filename)
