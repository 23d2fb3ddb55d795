"""The REST API: flask-smorest blueprints under /api, and one error body for every error.

Every error answers ``{"success": false, "error": {"code", "message", "details"}}``:
agentq's own errors (``app.errors``), validation errors (422, the message naming
each field), malformed JSON (400), bodies over the limit (413, saying the limit),
bodies that are not JSON (415, ``app.api.blueprint``), requests over a rate limit (429,
with ``Retry-After``), an unavailable database (503 with Retry-After), and Flask's own
404 and 405.
"""

from __future__ import annotations

import logging

import flask_smorest
import psycopg2
import sqlalchemy as sa
import swagger_ui_bundle
from flask import Flask
from flask import current_app
from flask import g
from flask import jsonify
from flask import render_template
from flask import request
from flask import send_from_directory
from flask_limiter import RateLimitExceeded
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.exceptions import ServiceUnavailable

from app import limits
from app.api import blueprint
from app.api import checkpoints
from app.api import fleet
from app.api import health
from app.api import jobs
from app.api.errors import error_object
from app.errors import AgentqError
from app.errors import field_messages
from app.extensions import db
from app.schemas import ErrorEnvelopeSchema
from app.schemas import job_type_enum
from app.sql import database_unavailable

log = logging.getLogger(__name__)


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
        if isinstance(error, RequestEntityTooLarge):
            limit = current_app.config["MAX_CONTENT_LENGTH"]
            error = RequestEntityTooLarge(
                f"The request body is larger than the limit of {limit} bytes (MAX_BODY_BYTES)."
            )
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


def read_chunked_body() -> None:
    """Read a chunked body (no Content-Length) whole, up to the limit, before the view.

    Werkzeug stops reading such a body at ``MAX_CONTENT_LENGTH`` without a word, so the
    view would get it cut short (a 400 "Invalid JSON body" for JSON); a body with one byte
    more than the limit is a 413, as a Content-Length over the limit is.

    :raise 413: when the body is larger than ``MAX_CONTENT_LENGTH``.
    """
    chunked = "chunked" in request.headers.get("Transfer-Encoding", "").lower()
    if request.content_length is not None or not chunked:
        return
    limit = request.max_content_length
    body = request.get_data(cache=True)
    if limit is not None and len(body) >= limit and request.input_stream.read(1):
        raise RequestEntityTooLarge()


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


#: Seconds a client is asked to wait (Retry-After) while the database is unavailable.
RETRY_AFTER_SECONDS = 5
#: What a request is told while the database is unavailable (503).
DATABASE_UNAVAILABLE = "The database is unavailable; retry in a few seconds."


def handle_database_error(error: Exception):
    """The database refused, lost or ran out of connections: 503 with Retry-After, not a 500.

    Any other database error is raised on, to be the 500 it is.
    """
    if not database_unavailable(error):
        raise error
    log.warning("database unavailable: %s", str(error).splitlines()[0])
    g.database_unavailable = True
    try:
        db.session.rollback()
    except sa.exc.SQLAlchemyError:
        log.debug("rollback on an unavailable database failed", exc_info=True)
    unavailable = ServiceUnavailable(DATABASE_UNAVAILABLE, retry_after=RETRY_AFTER_SECONDS)
    if request.path.startswith("/admin"):
        return admin_error_page(unavailable)
    headers = unavailable.get_headers()
    return error_response(503, "database_unavailable", DATABASE_UNAVAILABLE, None, headers)


def handle_agentq_error(error: AgentqError):
    db.session.rollback()
    body = error_object(error)
    return error_response(error.status, body["code"], body["message"], body["details"])


api = Api()


def init_app(app: Flask) -> None:
    api.init_app(app, spec_kwargs={"info": {"description": "Durable agent jobs with approvals"}})
    api.ma_plugin.converter.add_attribute_function(job_type_enum)
    api.spec.components.security_scheme("bearerAuth", {"type": "http", "scheme": "bearer"})
    api.spec.components.response(
        blueprint.DATABASE_UNAVAILABLE,
        {
            "description": "The database is unavailable: retry after Retry-After seconds",
            "headers": blueprint.RETRY_AFTER,
            "content": {"application/json": {"schema": ErrorEnvelopeSchema}},
        },
    )
    for blp in (jobs.blp, checkpoints.blp, fleet.blp, health.blp):
        api.register_blueprint(blp)
    app.register_error_handler(AgentqError, handle_agentq_error)
    app.register_error_handler(RateLimitExceeded, handle_rate_limited)
    app.register_error_handler(RecursionError, handle_recursion_error)
    for database_error in (sa.exc.DBAPIError, sa.exc.TimeoutError, psycopg2.Error):
        app.register_error_handler(database_error, handle_database_error)
    app.before_request(read_chunked_body)

    @app.get("/api/docs/static/<path:filename>")
    def swagger_static(filename: str):
        """Swagger UI's files, served by the app itself (no CDN)."""
        return send_from_directory(swagger_ui_bundle.swagger_ui_path, filename)
