"""The API's Blueprint: flask-smorest's, reading request bodies as JSON only.

Besides the 422 of their arguments, the OpenAPI document of its views lists the 413
and 415 a JSON body may get, and the 503 every view answers while the database is
unavailable (``app.api.handle_database_error``); the health probes, which report the
database's state themselves, use flask-smorest's Blueprint. A body whose document
depends on what is registered when the app is made (a job's, on the handlers) is
documented then (``arguments(..., documented_as=...)``).
"""

from __future__ import annotations

import http
import json
from collections.abc import Callable

import flask
import flask_smorest
from webargs import core
from webargs.flaskparser import FlaskParser
from webargs.flaskparser import abort
from webargs.flaskparser import is_json_request

from app.schemas import ErrorEnvelopeSchema

#: What a body that is not JSON is told (415).
SEND_JSON = "Send the body as JSON, with the header Content-Type: application/json."
#: The OpenAPI response of a view while the database is unavailable (``app.api.init_app``).
DATABASE_UNAVAILABLE = "DATABASE_UNAVAILABLE"
#: The header of a 429 and a 503, as the OpenAPI document states it.
RETRY_AFTER = {
    "Retry-After": {"description": "Seconds to wait before retrying", "schema": {"type": "integer"}}
}


class JsonParser(FlaskParser):
    """webargs' Flask parser, strict about JSON bodies.

    webargs reads a body sent as a form, as text or without a Content-Type as no body
    at all, so a client that forgot the header would be told that every required field
    is missing: it is told 415 and to send JSON instead. A body without a Content-Type
    or with an empty one is no body, as before (an approval needs none).

    A number that Python's JSON cannot convert (an integer of more than 4,300 digits
    raises ``ValueError``) is malformed JSON, a 400 like any other decoding error.
    """

    def _raw_load_json(self, req: flask.Request):
        if not is_json_request(req):
            if req.mimetype or req.get_data(cache=True):
                abort(415, messages={"json": [SEND_JSON]})
            return core.missing
        try:
            return core.parse_json(req.get_data(cache=True))
        except json.JSONDecodeError:
            raise
        except ValueError as exc:
            self._handle_invalid_json_error(exc, req)


class Blueprint(flask_smorest.Blueprint):
    """flask-smorest's Blueprint with the :class:`JsonParser` and its errors documented."""

    ARGUMENTS_PARSER = JsonParser()

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._prepare_doc_cbks.append(self._prepare_unavailable_doc)
        self._prepare_doc_cbks.append(self._prepare_body_doc)

    def arguments(
        self,
        schema,
        *,
        location: str = "json",
        documented_as: Callable[[], dict] | None = None,
        **kwargs,
    ):
        """flask-smorest's ``arguments``; a JSON body may also get 413 and 415.

        ``documented_as`` returns the body's OpenAPI schema when the document is built, in
        place of ``schema``'s (which still validates)::

            @blp.arguments(JobCreateSchema(), documented_as=job_create_doc)
        """
        decorator = super().arguments(schema, location=location, **kwargs)
        if location != "json":
            return decorator

        def documented(view):
            view = decorator(view)
            responses = view._apidoc["arguments"]["responses"]
            for status in (413, 415):
                responses[status] = http.HTTPStatus(status).name
            if documented_as is not None:
                view._apidoc["documented_body"] = documented_as
            return view

        return documented

    def refusal(self, status: int, description: str):
        """Document a refusal the view answers with the error envelope (with ``Retry-After``
        on a 429)::

            @blp.refusal(409, "Already decided: details carry the first decision")
        """
        headers = RETRY_AFTER if status == 429 else None
        return self.alt_response(
            status, schema=ErrorEnvelopeSchema, headers=headers, description=description
        )

    @staticmethod
    def _prepare_unavailable_doc(doc: dict, _doc_info: dict, **_kwargs) -> dict:
        doc.setdefault("responses", {}).setdefault(503, DATABASE_UNAVAILABLE)
        return doc

    @staticmethod
    def _prepare_body_doc(doc: dict, doc_info: dict, **_kwargs) -> dict:
        documented_as = doc_info.get("documented_body")
        if documented_as is not None:
            doc["requestBody"]["content"]["application/json"]["schema"] = documented_as()
        return doc
