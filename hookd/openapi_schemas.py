"""The component schemas of the OpenAPI document (hookd/openapi.py): `#/components/schemas`.

Owns every request and answer schema of the operator API (JSON Schema 2020-12), the text patterns
the validator also uses (`LINE_PATTERN`, `NO_NUL_PATTERN`) and the limits written into them that
are not the service's (`DEFAULT_TEST_WAIT_S`). The order of `_SCHEMAS` is the order served.
"""

from __future__ import annotations

from hookd.catalogue import MAX_NAME_LENGTH
from hookd.openapi_build import Schema, _closed, _nullable, _object, _ref
from hookd.service import (
    MAX_DESCRIPTION_LENGTH,
    MAX_FILTER_LENGTH,
    MAX_GRACE_S,
    MAX_ID,
    MAX_METADATA_KEY_LENGTH,
    MAX_METADATA_KEYS,
    MAX_METADATA_VALUE_LENGTH,
    MAX_SELECTED_IDS,
    MAX_TENANT_LENGTH,
    MAX_TEST_WAIT_S,
)

DEFAULT_TEST_WAIT_S = 10.0
"""How long POST /v1/endpoints/{id}/test waits for the attempt when `wait_s` is not given."""

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
