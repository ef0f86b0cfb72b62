"""The operator API's OpenAPI 3.1 document: the contract, served at GET /openapi.json.

Written by hand (not generated from the handlers); the server routes and validates from it, so it is
the single source of truth: hookd/api.py adds one route per operation (by `operationId`), and
hookd/validation.py checks path and query parameters and request bodies against the schemas here
(JSON Schema 2020-12, the dialect of OpenAPI 3.1). Responses are declared with their schemas,
problems included (RFC 9457 `application/problem+json`), so a schema-driven test (schemathesis)
can check that every answer conforms.

This module assembles it: the info, security and tags, the shared problem responses and
parameters (`#/components/responses` and `/parameters`), and the parts from hookd/openapi_schemas.py
(the component schemas) and hookd/openapi_paths.py (the operations), written with the helpers of
hookd/openapi_build.py. `DOCUMENT` is built once at import; treat it as read-only.
"""

from __future__ import annotations

from typing import Any

from hookd.openapi_build import JSON, PROBLEM_JSON, Schema, _ref
from hookd.openapi_paths import _PATHS
from hookd.openapi_schemas import (
    _SCHEMAS,
    _TIME,
    DEFAULT_TEST_WAIT_S,
    LINE_PATTERN,
    NO_NUL_PATTERN,
)
from hookd.service import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE

__all__ = [
    "DEFAULT_TEST_WAIT_S",
    "DOCUMENT",
    "JSON",
    "LINE_PATTERN",
    "MAX_BODY_BYTES",
    "NO_NUL_PATTERN",
    "PROBLEM_JSON",
]

MAX_BODY_BYTES = 1024 * 1024
"""Largest request body accepted, in bytes; a larger one is a 413 problem."""


def _problem(description: str, headers: dict[str, Any] | None = None) -> Schema:
    response: Schema = {
        "description": description,
        "content": {PROBLEM_JSON: {"schema": _ref("Problem")}},
    }
    if headers:
        response["headers"] = headers
    return response


_RESPONSES: dict[str, Schema] = {
    "BadRequest": _problem("The body is not well-formed JSON."),
    "Unauthorized": _problem(
        "No bearer token, or not a configured one.",
        {"WWW-Authenticate": {"required": True, "schema": {"type": "string"}}},
    ),
    "Forbidden": _problem("The token's tenant may not do this (it changes the installation)."),
    "NotFound": _problem("No such object (or not within the token's tenant)."),
    "Conflict": _problem("The object's state forbids the action."),
    "TooLarge": _problem(f"The body is larger than {MAX_BODY_BYTES} bytes."),
    "UnsupportedMediaType": _problem("The body is not application/json."),
    "Invalid": _problem("A field or parameter is invalid; `errors` names each."),
    "Unavailable": _problem(
        "The database is unavailable for now.",
        {"Retry-After": {"required": True, "schema": {"type": "string", "pattern": "^[0-9]+$"}}},
    ),
}

_PARAMETERS: dict[str, Schema] = {
    "Id": {"name": "id", "in": "path", "required": True, "schema": _ref("Id"), "example": 1},
    "Limit": {
        "name": "limit",
        "in": "query",
        "schema": {
            "type": "integer",
            "minimum": 1,
            "maximum": MAX_PAGE_SIZE,
            "default": DEFAULT_PAGE_SIZE,
        },
    },
    "Cursor": {
        "name": "cursor",
        "in": "query",
        "description": "`next_cursor` of the previous page (opaque).",
        "schema": {
            "type": "string",
            "minLength": 1,
            "maxLength": 200,
            "pattern": "^[A-Za-z0-9_-]+$",
        },
    },
    "Since": {
        "name": "since",
        "in": "query",
        "description": "Created at or after this time.",
        "schema": _TIME,
    },
    "Until": {
        "name": "until",
        "in": "query",
        "description": "Created before this time.",
        "schema": _TIME,
    },
}


DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "hookd operator API",
        "version": "1",
        "description": (
            "Endpoints, events, deliveries and attempts of a hookd installation, and the actions "
            "on them (retry, resend, replay, test), and its event catalogue (published to "
            "receivers, without a token, at /catalogue.json). Every /v1 request needs "
            "`Authorization: Bearer <token>` (tokens from `hookd api-token add`); a token limited "
            "to a tenant sees only that tenant's objects, and others are 404. Lists are pages of "
            f"at most {MAX_PAGE_SIZE} rows, newest first: pass `next_cursor` as `cursor` for the "
            "next. Errors are RFC 9457 problem details."
        ),
    },
    "security": [{"bearer": []}],
    "tags": [
        {"name": "endpoints"},
        {"name": "events"},
        {"name": "deliveries"},
        {"name": "catalogue"},
        {"name": "meta"},
    ],
    "paths": _PATHS,
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": _SCHEMAS,
        "responses": _RESPONSES,
        "parameters": _PARAMETERS,
    },
}
