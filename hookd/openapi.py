"""The operator API's OpenAPI 3.1 document: the contract, served at GET /openapi.json.

Written by hand (not generated from the handlers); the server routes and validates from it, so it is
the single source of truth: hookd/api.py adds one route per operation (by `operationId`), and
hookd/validation.py checks path and query parameters and request bodies against the schemas here
(JSON Schema 2020-12, the dialect of OpenAPI 3.1). Responses are declared with their schemas,
problems included (RFC 9457 `application/problem+json`), so a schema-driven test (schemathesis)
can check that every answer conforms.

`DOCUMENT` is built once at import; treat it as read-only.
"""

from __future__ import annotations

from typing import Any

from hookd.catalogue import MAX_NAME_LENGTH
from hookd.service import (
    DEFAULT_PAGE_SIZE,
    MAX_DESCRIPTION_LENGTH,
    MAX_FILTER_LENGTH,
    MAX_GRACE_S,
    MAX_ID,
    MAX_METADATA_KEY_LENGTH,
    MAX_METADATA_KEYS,
    MAX_METADATA_VALUE_LENGTH,
    MAX_PAGE_SIZE,
    MAX_SELECTED_IDS,
    MAX_TENANT_LENGTH,
    MAX_TEST_WAIT_S,
)

MAX_BODY_BYTES = 1024 * 1024
"""Largest request body accepted, in bytes; a larger one is a 413 problem."""

DEFAULT_TEST_WAIT_S = 10.0
"""How long POST /v1/endpoints/{id}/test waits for the attempt when `wait_s` is not given."""

PROBLEM_JSON = "application/problem+json"
JSON = "application/json"

Schema = dict[str, Any]


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: Schema) -> Schema:
    """`schema` or null (OpenAPI 3.1 has no `nullable`; a $ref needs anyOf)."""
    if "$ref" in schema:
        return {"anyOf": [schema, {"type": "null"}]}
    kind = schema["type"]
    return {**schema, "type": [*([kind] if isinstance(kind, str) else kind), "null"]}


def _object(properties: dict[str, Schema], required: tuple[str, ...] = (), **extra: Any) -> Schema:
    return {
        "type": "object",
        "properties": properties,
        "required": list(required),
        **extra,
    }


def _closed(properties: dict[str, Schema], required: tuple[str, ...] = (), **extra: Any) -> Schema:
    """A request object: unknown fields are refused (so a misspelt field is named, not ignored)."""
    return _object(properties, required, additionalProperties=False, **extra)


# Text fields end up in PostgreSQL `text` columns, which cannot hold NUL; single-line ones also
# refuse the other control characters (they appear in headers, logs and tables).
LINE_PATTERN = "^[^\\u0000-\\u001f\\u007f]*$"
NO_NUL_PATTERN = "^[^\\u0000]*$"
_TIME = {"type": "string", "format": "date-time", "description": "RFC 3339, with a zone."}
_SECONDS = {"type": "number", "minimum": 0}

_SETTINGS: dict[str, Schema] = {
    "connect_timeout_s": {
        "type": "number",
        "exclusiveMinimum": 0,
        "maximum": 3600,
        "description": "Seconds to open a connection (DNS, TCP and TLS).",
    },
    "total_timeout_s": {
        "type": "number",
        "exclusiveMinimum": 0,
        "maximum": 3600,
        "description": "Seconds for a whole attempt.",
    },
    "max_concurrency": {
        "type": "integer",
        "minimum": 1,
        "maximum": 10000,
        "description": "Concurrent requests to this endpoint.",
    },
    "retry_schedule_s": {
        "type": "array",
        "minItems": 1,
        "maxItems": 100,
        "items": {"type": "number", "minimum": 0, "maximum": 30 * 86400},
        "description": "Delay before each attempt, in seconds.",
    },
    "retry_max_attempts": {"type": "integer", "minimum": 1, "maximum": 1000},
    "retry_max_age_s": {"type": "number", "minimum": 0, "maximum": 365 * 86400},
    "retry_jitter": {"type": "number", "minimum": 0, "maximum": 1},
    "final_statuses": {
        "type": "array",
        "maxItems": 200,
        "items": {"type": "integer", "minimum": 400, "maximum": 599},
        "description": "Statuses that dead-letter a delivery at once, not retried (replaces "
        "http.final_statuses for this endpoint; [] retries every status). Not 408, 410, 425, "
        "429 or 503.",
    },
}

_FILTER = {
    "type": "string",
    "minLength": 1,
    "maxLength": MAX_FILTER_LENGTH,
    "pattern": NO_NUL_PATTERN,
    "description": "A predicate in PostgreSQL's SQL/JSON path language over the event payload, "
    'e.g. `$.total > 100 && $.currency == "EUR"`: only events it is true for are delivered. '
    "PostgreSQL checks it; a bare path (not a predicate) or a $variable is refused.",
}
_EVENT_TYPE_NAME = {
    "type": "string",
    "minLength": 1,
    "maxLength": MAX_NAME_LENGTH,
    "pattern": "^[A-Za-z0-9_-]+(\\.[A-Za-z0-9_-]+)*$",
    "description": "An event type: dot-separated words of letters, digits, _ and -.",
}

_ONE_AUTH_KIND = {
    "not": {
        "anyOf": [
            {"required": ["basic", "bearer"]},
            {"required": ["basic", "oauth2"]},
            {"required": ["bearer", "oauth2"]},
        ]
    },
    "description": "use only one of basic, bearer and oauth2",
}
_CREDENTIAL_TEXT = {"type": "string", "minLength": 1, "maxLength": 4096, "pattern": LINE_PATTERN}

_SCHEMAS: dict[str, Schema] = {
    "Problem": _object(
        {
            "type": {"type": "string", "description": "A URI naming the kind of problem."},
            "title": {"type": "string"},
            "status": {"type": "integer", "minimum": 400, "maximum": 599},
            "detail": {"type": "string"},
            "errors": {"type": "array", "items": _ref("ProblemError")},
        },
        ("type", "title", "status"),
        description="RFC 9457 problem details.",
    ),
    "ProblemError": _object(
        {
            "detail": {"type": "string"},
            "pointer": {
                "type": "string",
                "description": "JSON pointer (RFC 6901) to the field of the request body.",
            },
            "parameter": {"type": "string", "description": "The path or query parameter."},
        },
        ("detail",),
        description="One invalid field or parameter of the request.",
    ),
    "Id": {"type": "integer", "minimum": 1, "maximum": MAX_ID},
    "Time": _TIME,
    "Tenant": {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_TENANT_LENGTH,
        "pattern": LINE_PATTERN,
    },
    "PayloadFilter": _FILTER,
    "EventTypeName": _EVENT_TYPE_NAME,
    "EventTypeFilter": {
        "type": "string",
        "maxLength": 200,
        "pattern": "^(\\*|[A-Za-z0-9_-]+(\\.[A-Za-z0-9_-]+)*(\\.\\*)?)$",
        "description": "An event type, a 'prefix.*' pattern or '*' for all.",
    },
    "Description": {
        "type": "string",
        "maxLength": MAX_DESCRIPTION_LENGTH,
        "pattern": NO_NUL_PATTERN,
    },
    "Metadata": {
        "type": "object",
        "maxProperties": MAX_METADATA_KEYS,
        "propertyNames": {
            "minLength": 1,
            "maxLength": MAX_METADATA_KEY_LENGTH,
            "pattern": LINE_PATTERN,
        },
        "additionalProperties": {
            "type": "string",
            "maxLength": MAX_METADATA_VALUE_LENGTH,
            "pattern": NO_NUL_PATTERN,
        },
        "description": f"Free-form string keys and values (at most {MAX_METADATA_KEYS}).",
    },
    "Secret": {
        "type": "string",
        "maxLength": 200,
        # Base64 of 24-64 key bytes (HMAC) or of a 32-byte Ed25519 seed (whsk_).
        "pattern": (
            "^(whsec_([A-Za-z0-9+/]{4}){8,21}([A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?"
            "|whsk_([A-Za-z0-9+/]{4}){10}[A-Za-z0-9+/]{3}=)$"
        ),
        "description": "whsec_... (HMAC-SHA256, v1) or whsk_... (Ed25519 private key, v1a).",
    },
    "Settings": _closed(
        _SETTINGS, description="Per-endpoint overrides of the configured delivery settings."
    ),
    "SettingsChanges": _closed(
        {k: _nullable(v) for k, v in _SETTINGS.items()},
        description="Merged into the overrides; a key set to null goes back to the default.",
    ),
    "Credentials": _closed(
        {
            "basic": _closed(
                {"username": _CREDENTIAL_TEXT, "password": _CREDENTIAL_TEXT},
                ("username", "password"),
            ),
            "bearer": _CREDENTIAL_TEXT,
            "headers": {
                "type": "object",
                "maxProperties": 50,
                "propertyNames": {"pattern": "^[A-Za-z0-9!#$%&'*+.^_`|~-]+$", "maxLength": 200},
                "additionalProperties": _CREDENTIAL_TEXT,
            },
            "oauth2": _closed(
                {
                    "token_url": {"type": "string", "maxLength": 2048, "pattern": LINE_PATTERN},
                    "client_id": _CREDENTIAL_TEXT,
                    "client_secret": _CREDENTIAL_TEXT,
                    "scope": _CREDENTIAL_TEXT,
                },
                ("token_url", "client_id", "client_secret"),
            ),
            "tls": _closed(
                {
                    "client_cert": _CREDENTIAL_TEXT,
                    "client_key": _CREDENTIAL_TEXT,
                    "ca_bundle": _CREDENTIAL_TEXT,
                }
            ),
        },
        dependentSchemas={
            "basic": _ONE_AUTH_KIND,
            "bearer": _ONE_AUTH_KIND,
            "oauth2": _ONE_AUTH_KIND,
        },
        description="How hookd authenticates to the receiver: one of basic, bearer and oauth2, "
        "plus optional static headers and TLS files (paths on the daemon's host).",
    ),
    "NewEndpoint": _closed(
        {
            "url": {"type": "string", "minLength": 1, "maxLength": 2048, "pattern": LINE_PATTERN},
            "event_types": {
                "type": "array",
                "minItems": 1,
                "maxItems": 100,
                "items": _ref("EventTypeFilter"),
                "default": ["*"],
            },
            "tenant": _nullable(_ref("Tenant")),
            "description": _nullable(_ref("Description")),
            "metadata": _ref("Metadata"),
            "settings": _ref("Settings"),
            "credentials": _nullable(_ref("Credentials")),
            "secret": _ref("Secret"),
            "kind": {"enum": ["hmac", "ed25519"], "default": "hmac"},
            "enabled": {"type": "boolean", "default": True},
            "filter": _nullable(_ref("PayloadFilter")),
        },
        ("url",),
        description="A new endpoint; without `secret` one of `kind` is generated.",
    ),
    "EndpointChanges": _closed(
        {
            "url": {"type": "string", "minLength": 1, "maxLength": 2048, "pattern": LINE_PATTERN},
            "event_types": {
                "type": "array",
                "minItems": 1,
                "maxItems": 100,
                "items": _ref("EventTypeFilter"),
            },
            "tenant": _nullable(_ref("Tenant")),
            "description": _nullable(_ref("Description")),
            "metadata": _ref("Metadata"),
            "enabled": {"type": "boolean"},
            "settings": _ref("SettingsChanges"),
            "credentials": _nullable(_ref("Credentials")),
            "filter": _nullable(_ref("PayloadFilter")),
        },
        minProperties=1,
        description="Only the given fields change (null clears tenant, description, credentials, "
        "filter).",
    ),
    "Endpoint": _object(
        {
            "id": _ref("Id"),
            "url": {"type": "string"},
            "tenant": {"type": ["string", "null"]},
            "event_types": {"type": "array", "items": {"type": "string"}},
            "filter": {
                "type": ["string", "null"],
                "description": "The payload filter in PostgreSQL's canonical form, or null.",
            },
            "enabled": {"type": "boolean"},
            "disabled_reason": {"type": ["string", "null"]},
            "description": {"type": ["string", "null"]},
            "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
            "settings": {"type": "object"},
            "credentials": {
                "type": "array",
                "items": {"enum": ["basic", "bearer", "headers", "oauth2", "tls"]},
                "description": "The kinds of authentication configured (never their values).",
            },
            "secret_kind": {"enum": ["hmac", "ed25519"]},
            "created_at": _TIME,
            "updated_at": _nullable(_TIME),
            "breaker_open_until": _nullable(_TIME),
            "previous_secret_until": _nullable(_TIME),
        },
        (
            "id",
            "url",
            "tenant",
            "event_types",
            "filter",
            "enabled",
            "disabled_reason",
            "description",
            "metadata",
            "settings",
            "credentials",
            "secret_kind",
            "created_at",
            "updated_at",
            "breaker_open_until",
            "previous_secret_until",
        ),
        description="An endpoint; its signing secret only on create, reveal and rotate.",
    ),
    "EndpointCreated": {
        "allOf": [
            _ref("Endpoint"),
            _object(
                {"secret": {"type": "string"}, "public_key": {"type": ["string", "null"]}},
                ("secret", "public_key"),
            ),
        ],
        "description": "The new endpoint and its signing secret (shown here once).",
    },
    "SecretView": _object(
        {
            "endpoint_id": _ref("Id"),
            "secret": {"type": "string"},
            "public_key": {
                "type": ["string", "null"],
                "description": "whpk_... for an Ed25519 secret: what receivers verify with.",
            },
            "previous_secret_until": _nullable(_TIME),
        },
        ("endpoint_id", "secret", "public_key", "previous_secret_until"),
    ),
    "RotateSecret": _closed(
        {
            "grace_s": {
                "type": "number",
                "minimum": 0,
                "maximum": MAX_GRACE_S,
                "description": "Seconds the old secret also signs.",
            },
            "secret": _ref("Secret"),
        },
        ("grace_s",),
    ),
    "WindowStats": _object(
        {
            "window_s": _SECONDS,
            "attempts": {"type": "integer", "minimum": 0},
            "succeeded": {"type": "integer", "minimum": 0},
            "success_rate": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
            "p50_duration_s": {"type": ["number", "null"], "minimum": 0},
            "p99_duration_s": {"type": ["number", "null"], "minimum": 0},
        },
        ("window_s", "attempts", "succeeded", "success_rate", "p50_duration_s", "p99_duration_s"),
    ),
    "EndpointStats": _object(
        {
            "endpoint_id": _ref("Id"),
            "last_status": {"type": ["integer", "null"]},
            "last_error": {"type": ["string", "null"]},
            "last_attempt_at": _nullable(_TIME),
            "last_hour": _ref("WindowStats"),
            "last_day": _ref("WindowStats"),
        },
        ("endpoint_id", "last_status", "last_error", "last_attempt_at", "last_hour", "last_day"),
    ),
    "Event": _object(
        {
            "id": _ref("Id"),
            "event_type": {"type": "string"},
            "tenant": {"type": ["string", "null"]},
            "payload": {"description": "The event's JSON value as published."},
            "idempotency_key": {"type": ["string", "null"]},
            "created_at": _TIME,
            "fanned_out_at": _nullable(_TIME),
        },
        ("id", "event_type", "tenant", "payload", "idempotency_key", "created_at", "fanned_out_at"),
    ),
    "DeliveryState": {"enum": ["pending", "delivered", "failed", "paused"]},
    "Delivery": _object(
        {
            "id": _ref("Id"),
            "event_id": _ref("Id"),
            "endpoint_id": _ref("Id"),
            "event_type": {"type": "string"},
            "tenant": {"type": ["string", "null"]},
            "state": _ref("DeliveryState"),
            "attempts": {"type": "integer", "minimum": 0},
            "next_attempt_at": _nullable(_TIME),
            "leased_until": _nullable(_TIME),
            "last_status": {"type": ["integer", "null"]},
            "last_error": {"type": ["string", "null"]},
            "created_at": _TIME,
            "finished_at": _nullable(_TIME),
        },
        (
            "id",
            "event_id",
            "endpoint_id",
            "event_type",
            "tenant",
            "state",
            "attempts",
            "next_attempt_at",
            "leased_until",
            "last_status",
            "last_error",
            "created_at",
            "finished_at",
        ),
    ),
    "Attempt": _object(
        {
            "delivery_id": _ref("Id"),
            "attempt": {"type": "integer", "minimum": 1},
            "started_at": _TIME,
            "duration_s": _SECONDS,
            "status": {"type": ["integer", "null"]},
            "error": {"type": ["string", "null"]},
            "response_body": {
                "type": ["string", "null"],
                "description": "The start of the receiver's answer.",
            },
        },
        ("delivery_id", "attempt", "started_at", "duration_s", "status", "error", "response_body"),
    ),
    "SendTest": _closed(
        {
            "wait_s": {
                "type": "number",
                "minimum": 0,
                "maximum": MAX_TEST_WAIT_S,
                "default": DEFAULT_TEST_WAIT_S,
                "description": "Seconds to wait for the attempt's result.",
            },
            "event_type": {
                **_ref("EventTypeName"),
                "description": "Send an event of this catalogue type, with its example as "
                "payload, instead of a hookd.ping.",
            },
        }
    ),
    "TestResult": _object(
        {
            "delivery": _ref("Delivery"),
            "attempt": _nullable(_ref("Attempt")),
            "webhook_id": {"type": "string"},
        },
        ("delivery", "attempt", "webhook_id"),
        description="`attempt` is null when the attempt had not finished within `wait_s`.",
    ),
    "Retry": _closed(
        {
            "ids": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_SELECTED_IDS,
                "items": _ref("Id"),
            },
            "endpoint_id": _ref("Id"),
            "event_type": _ref("EventTypeFilter"),
            "since": _TIME,
            "until": _TIME,
        },
        minProperties=1,
        description="Which dead-lettered (failed) deliveries to retry; all given conditions hold.",
    ),
    "Replay": _closed(
        {
            "endpoint_id": _ref("Id"),
            "event_type": _ref("EventTypeFilter"),
            "since": _TIME,
            "until": _TIME,
            "states": {
                "type": "array",
                "minItems": 1,
                "uniqueItems": True,
                "items": {"enum": ["delivered", "failed"]},
                "default": ["failed"],
            },
            "dry_run": {"type": "boolean", "default": False},
        },
        ("endpoint_id",),
        description=(
            "Deliveries of one endpoint in final states to make pending again; `states` defaults"
            " to failed only."
        ),
    ),
    "ActionResult": _object(
        {
            "count": {"type": "integer", "minimum": 0},
            "ids": {"type": "array", "items": _ref("Id"), "description": "At most 1,000."},
            "dry_run": {"type": "boolean"},
            "paused": {
                "type": "integer",
                "minimum": 0,
                "description": "Of `count`, deliveries made paused rather than pending: their "
                "endpoint is disabled (they go out when it is enabled).",
            },
        },
        ("count", "ids", "dry_run", "paused"),
    ),
}


def _page_of(item: str) -> Schema:
    return _object(
        {
            "data": {"type": "array", "items": _ref(item)},
            "next_cursor": {
                "type": ["string", "null"],
                "description": "Give as `cursor` for the next page; null on the last page.",
            },
        },
        ("data", "next_cursor"),
    )


_SCHEMAS |= {
    "EndpointPage": _page_of("Endpoint"),
    "EventPage": _page_of("Event"),
    "DeliveryPage": _page_of("Delivery"),
    "AttemptList": _object({"data": {"type": "array", "items": _ref("Attempt")}}, ("data",)),
    "EventTypeList": _object({"data": {"type": "array", "items": {"type": "string"}}}, ("data",)),
    "CatalogueEntry": _object(
        {
            "name": _ref("EventTypeName"),
            "description": {"type": "string"},
            "schema": {
                "type": ["object", "boolean", "null"],
                "description": "JSON Schema of the payload, or null.",
            },
            "example": {"description": "An example payload (matches `schema`), or null."},
            "created_at": _TIME,
            "updated_at": _TIME,
        },
        ("name", "description", "schema", "example", "created_at", "updated_at"),
        description="An event type of the catalogue.",
    ),
    "CatalogueEntryPut": _closed(
        {
            "description": {**_ref("Description"), "default": ""},
            "schema": {
                "type": ["object", "boolean", "null"],
                "default": None,
                "description": "A JSON Schema of the payload (checked with the jsonschema "
                "library), or null for none.",
            },
            "example": {
                "default": None,
                "description": "An example payload, checked against `schema`; null for none.",
            },
        },
        description="The whole entry: fields not given take their defaults.",
    ),
    "CatalogueList": _object(
        {"data": {"type": "array", "items": _ref("CatalogueEntry")}}, ("data",)
    ),
    "StrictMode": _closed(
        {
            "strict": {
                "type": "boolean",
                "description": "Publishing refuses event types the catalogue lacks (hookd's own "
                "hookd.ping is always accepted).",
            }
        },
        ("strict",),
    ),
    "StrictModeResult": _object(
        {
            "strict": {"type": "boolean"},
            "unknown_seen": {
                "type": "array",
                "items": {"type": "string"},
                "description": "Event types in the outbox the catalogue lacks, which publishing "
                "now refuses (when on; at most 100).",
            },
        },
        ("strict", "unknown_seen"),
    ),
    "CatalogueDocument": _object(
        {
            "event_types": {
                "type": "array",
                "items": _object(
                    {
                        "name": {"type": "string"},
                        "description": {"type": "string"},
                        "schema": {"type": ["object", "boolean", "null"]},
                        "example": {},
                        "updated_at": _TIME,
                    },
                    ("name", "description", "schema", "example", "updated_at"),
                ),
            }
        },
        ("event_types",),
        description="The event catalogue as receivers read it, sorted by name.",
    ),
}


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


def _param(name: str) -> Schema:
    return {"$ref": f"#/components/parameters/{name}"}


def _query(name: str, schema: Schema, description: str) -> Schema:
    return {"name": name, "in": "query", "description": description, "schema": schema}


def _json(schema: Schema, description: str, headers: dict[str, Any] | None = None) -> Schema:
    response: Schema = {"description": description, "content": {JSON: {"schema": schema}}}
    if headers:
        response["headers"] = headers
    return response


def _links(source: str, targets: tuple[str, ...]) -> dict[str, Schema]:
    """OpenAPI links: the id at JSON pointer `source` of this answer is `id` of each target."""
    return {
        target[0].upper() + target[1:]: {
            "operationId": target,
            "parameters": {"id": f"$response.body#{source}"},
        }
        for target in targets
    }


_ENDPOINT_OPERATIONS = (
    "getEndpoint",
    "updateEndpoint",
    "revealSecret",
    "rotateSecret",
    "endpointStats",
    "sendTest",
    "deleteEndpoint",
)


def _operation(
    operation_id: str,
    summary: str,
    ok: dict[str, Schema],
    *,
    params: tuple[Schema, ...] = (),
    body: str | None = None,
    body_required: bool = True,
    found: bool = True,
    conflict: bool = False,
    forbidden: bool = False,
    tag: str,
) -> Schema:
    """One operation with the problem responses every /v1 operation can give."""
    responses: dict[str, Schema] = dict(ok)

    def problem(status: str, name: str) -> None:
        responses[status] = {"$ref": f"#/components/responses/{name}"}

    problem("401", "Unauthorized")
    if forbidden:
        problem("403", "Forbidden")
    if found:
        problem("404", "NotFound")
    if conflict:
        problem("409", "Conflict")
    problem("422", "Invalid")
    problem("503", "Unavailable")
    op: Schema = {
        "operationId": operation_id,
        "summary": summary,
        "tags": [tag],
        "parameters": list(params),
        "responses": responses,
    }
    if body is not None:
        problem("400", "BadRequest")
        problem("413", "TooLarge")
        problem("415", "UnsupportedMediaType")
        op["requestBody"] = {"required": body_required, "content": {JSON: {"schema": _ref(body)}}}
    op["responses"] = dict(sorted(responses.items()))
    return op


_ID = (_param("Id"),)
_NAME = (
    {
        "name": "name",
        "in": "path",
        "required": True,
        "schema": _ref("EventTypeName"),
        "example": "order.paid",
    },
)
_PAGE = (_param("Limit"), _param("Cursor"))

_PATHS: dict[str, Schema] = {
    "/v1/endpoints": {
        "get": _operation(
            "listEndpoints",
            "List endpoints, newest first",
            {"200": _json(_ref("EndpointPage"), "A page of endpoints.")},
            params=_PAGE,
            found=False,
            tag="endpoints",
        ),
        "post": _operation(
            "createEndpoint",
            "Create an endpoint (a tenant token creates it in its tenant)",
            {
                "201": {
                    **_json(
                        _ref("EndpointCreated"),
                        "Created; the signing secret is shown here once.",
                        {"Location": {"required": True, "schema": {"type": "string"}}},
                    ),
                    "links": _links("/id", _ENDPOINT_OPERATIONS),
                }
            },
            body="NewEndpoint",
            found=False,
            conflict=True,
            tag="endpoints",
        ),
    },
    "/v1/endpoints/{id}": {
        "get": _operation(
            "getEndpoint",
            "Get an endpoint",
            {"200": _json(_ref("Endpoint"), "The endpoint.")},
            params=_ID,
            tag="endpoints",
        ),
        "patch": _operation(
            "updateEndpoint",
            "Change the given fields of an endpoint",
            {"200": _json(_ref("Endpoint"), "The changed endpoint.")},
            params=_ID,
            body="EndpointChanges",
            conflict=True,
            tag="endpoints",
        ),
        "delete": _operation(
            "deleteEndpoint",
            "Delete an endpoint (its open deliveries fail; history stays)",
            {"204": {"description": "Deleted."}},
            params=_ID,
            conflict=True,
            tag="endpoints",
        ),
    },
    "/v1/endpoints/{id}/secret": {
        "get": _operation(
            "revealSecret",
            "Reveal an endpoint's signing secret",
            {"200": _json(_ref("SecretView"), "The secret.")},
            params=_ID,
            tag="endpoints",
        )
    },
    "/v1/endpoints/{id}/secret/rotate": {
        "post": _operation(
            "rotateSecret",
            "New signing secret; the old one also signs for `grace_s`",
            {"200": _json(_ref("SecretView"), "The new secret.")},
            params=_ID,
            body="RotateSecret",
            conflict=True,
            tag="endpoints",
        )
    },
    "/v1/endpoints/{id}/stats": {
        "get": _operation(
            "endpointStats",
            "Last status, success rate and durations over the last hour and day",
            {"200": _json(_ref("EndpointStats"), "The figures.")},
            params=_ID,
            tag="endpoints",
        )
    },
    "/v1/endpoints/{id}/test": {
        "post": _operation(
            "sendTest",
            "Deliver a signed hookd.ping event to this endpoint and wait for the attempt (a"
            " hookd.ping gets one attempt: a failed one ends the delivery failed, not retried)",
            {
                "200": {
                    **_json(
                        _ref("TestResult"), "The test delivery and, if it finished, its attempt."
                    ),
                    "links": {
                        **_links("/delivery/id", ("getDelivery", "listAttempts", "resendDelivery")),
                        **_links("/delivery/event_id", ("getEvent",)),
                    },
                }
            },
            params=_ID,
            body="SendTest",
            body_required=False,
            conflict=True,
            tag="endpoints",
        )
    },
    "/v1/event-types": {
        "get": _operation(
            "listEventTypes",
            "Event types seen in the outbox, sorted",
            {"200": _json(_ref("EventTypeList"), "The event types.")},
            found=False,
            tag="events",
        )
    },
    "/v1/events": {
        "get": _operation(
            "listEvents",
            "List events, newest first",
            {"200": _json(_ref("EventPage"), "A page of events.")},
            params=(
                _query("event_type", _ref("EventTypeFilter"), "Only this type (or pattern)."),
                _query("tenant", _ref("Tenant"), "Only this tenant's events."),
                _param("Since"),
                _param("Until"),
                *_PAGE,
            ),
            found=False,
            tag="events",
        )
    },
    "/v1/events/{id}": {
        "get": _operation(
            "getEvent",
            "Get an event",
            {"200": _json(_ref("Event"), "The event.")},
            params=_ID,
            tag="events",
        )
    },
    "/v1/deliveries": {
        "get": _operation(
            "listDeliveries",
            "List deliveries, newest first",
            {"200": _json(_ref("DeliveryPage"), "A page of deliveries.")},
            params=(
                _query("endpoint_id", _ref("Id"), "Only this endpoint's deliveries."),
                _query("event_id", _ref("Id"), "Only this event's deliveries."),
                _query("state", _ref("DeliveryState"), "Only deliveries in this state."),
                _param("Since"),
                _param("Until"),
                *_PAGE,
            ),
            tag="deliveries",
        )
    },
    "/v1/deliveries/{id}": {
        "get": _operation(
            "getDelivery",
            "Get a delivery",
            {"200": _json(_ref("Delivery"), "The delivery.")},
            params=_ID,
            tag="deliveries",
        )
    },
    "/v1/deliveries/{id}/attempts": {
        "get": _operation(
            "listAttempts",
            "The attempts of a delivery, oldest first",
            {"200": _json(_ref("AttemptList"), "The attempts.")},
            params=_ID,
            tag="deliveries",
        )
    },
    "/v1/deliveries/{id}/resend": {
        "post": _operation(
            "resendDelivery",
            "One more attempt of a delivered or failed delivery (same webhook-id)",
            {"200": _json(_ref("Delivery"), "The delivery, pending again.")},
            params=_ID,
            conflict=True,
            tag="deliveries",
        )
    },
    "/v1/retry": {
        "post": _operation(
            "retryDeliveries",
            "Another attempt for dead-lettered (failed) deliveries",
            {"200": _json(_ref("ActionResult"), "How many deliveries are pending again.")},
            body="Retry",
            conflict=True,
            tag="deliveries",
        )
    },
    "/v1/replay": {
        "post": _operation(
            "replayDeliveries",
            "Make one endpoint's finished deliveries pending again (or count them: dry_run)",
            {"200": _json(_ref("ActionResult"), "How many deliveries are (or would be) pending.")},
            body="Replay",
            conflict=True,
            tag="deliveries",
        )
    },
    "/v1/catalogue/event-types": {
        "get": _operation(
            "listCatalogue",
            "The event catalogue, by name",
            {"200": _json(_ref("CatalogueList"), "The entries.")},
            found=False,
            tag="catalogue",
        )
    },
    "/v1/catalogue/event-types/{name}": {
        "get": _operation(
            "getCatalogueEntry",
            "One event type of the catalogue",
            {"200": _json(_ref("CatalogueEntry"), "The entry.")},
            params=_NAME,
            tag="catalogue",
        ),
        "put": _operation(
            "putCatalogueEntry",
            "Add or replace an event type (operators only)",
            {
                "200": _json(_ref("CatalogueEntry"), "Replaced."),
                "201": _json(
                    _ref("CatalogueEntry"),
                    "Added.",
                    {"Location": {"required": True, "schema": {"type": "string"}}},
                ),
            },
            params=_NAME,
            body="CatalogueEntryPut",
            body_required=False,
            found=False,
            conflict=True,
            forbidden=True,
            tag="catalogue",
        ),
        "delete": _operation(
            "removeCatalogueEntry",
            "Remove an event type (operators only)",
            {"204": {"description": "Removed."}},
            params=_NAME,
            forbidden=True,
            tag="catalogue",
        ),
    },
    "/v1/catalogue/strict": {
        "get": _operation(
            "getStrictMode",
            "Whether publishing refuses event types the catalogue lacks",
            {"200": _json(_ref("StrictMode"), "The switch.")},
            found=False,
            tag="catalogue",
        ),
        "put": _operation(
            "setStrictMode",
            "Turn strict mode on or off (operators only)",
            {"200": _json(_ref("StrictModeResult"), "The switch as it is now.")},
            body="StrictMode",
            found=False,
            conflict=True,
            forbidden=True,
            tag="catalogue",
        ),
    },
    "/catalogue.json": {
        "get": {
            "operationId": "catalogueDocument",
            "summary": "The event catalogue for receivers: types, descriptions, schemas, examples",
            "tags": ["catalogue"],
            "security": [],
            "responses": {
                "200": _json(_ref("CatalogueDocument"), "The catalogue (public: no token)."),
                "503": {"$ref": "#/components/responses/Unavailable"},
            },
        }
    },
    "/openapi.json": {
        "get": {
            "operationId": "openapi",
            "summary": "This document",
            "tags": ["meta"],
            "security": [],
            "responses": {"200": _json({"type": "object"}, "The OpenAPI document.")},
        }
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
