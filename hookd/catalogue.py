"""The event catalogue's rules: event type names, payload JSON Schemas and examples, and the
document that publishes the catalogue to receivers.

Schemas and examples are checked with the `jsonschema` library: a schema against its dialect's
metaschema (the `$schema` it names, else JSON Schema 2020-12), an example against its schema, with
format assertions (`date-time`, `email`, ... as far as the installed checkers go). A problem is
reported as one line with the JSON path (RFC 9535 form, `$.items[0].sku`) of the most relevant
error (`jsonschema.exceptions.best_match`). `$ref`s resolve inside the schema only (`#/$defs/x`):
nothing is fetched over the network.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC
from typing import Any, cast

import orjson
from jsonschema import validators
from jsonschema.exceptions import best_match
from referencing.exceptions import Unresolvable

from hookd.models import EventType

MAX_NAME_LENGTH = 200
"""Longest event type name, in characters (hookd.publish's limit)."""

MAX_JSON_BYTES = 262_144
"""Largest schema or example, in bytes of JSON (hookd.publish's payload cap)."""

_NAME = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")


def name_problem(name: object) -> str | None:
    """Why `name` cannot be an event type (the rule of hookd.publish), or None."""
    if not isinstance(name, str) or not name:
        return "expected an event type name, e.g. order.paid"
    if len(name) > MAX_NAME_LENGTH or not _NAME.match(name):
        return (
            f"{name[:210]!r} is not an event type: use 1-{MAX_NAME_LENGTH} characters,"
            " dot-separated words of letters, digits, _ and -, e.g. order.paid"
        )
    return None


def _json_problem(value: Any) -> str | None:
    """Why `value` cannot be stored as jsonb: too large, too deep, or a NUL character (which
    PostgreSQL's jsonb cannot hold, as hookd.publish's payloads cannot)."""
    try:
        text = orjson.dumps(value)
    except TypeError:  # orjson stops at 255 levels of nesting (or a value that is not JSON)
        return "is nested too deeply, or is not JSON"
    if len(text) > MAX_JSON_BYTES:
        return f"is {len(text)} bytes of JSON; at most {MAX_JSON_BYTES}"
    # The escape also appears for a backslash followed by "u0000": then look at the strings.
    if b"\\u0000" in text and _has_nul(value):
        return "contains a NUL character (\\u0000), which PostgreSQL cannot store"
    return None


def _has_nul(value: Any) -> bool:
    """Whether a NUL character is in any string or key of `value` (iterative: no recursion)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\0" in item:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _validator_class(schema: Any) -> Any:
    """The jsonschema validator class for `schema`'s dialect. Raises ValueError for a `$schema`
    that names no dialect the library knows."""
    if isinstance(schema, dict) and "$schema" in schema:
        if not isinstance(schema["$schema"], str):
            raise ValueError("$schema must be a string: the URI of a JSON Schema dialect")
        # `default` is returned as given when $schema names no known dialect (the stubs type it
        # as a validator class only).
        cls = validators.validator_for(schema, default=cast(Any, None))
        if cls is None:
            raise ValueError(
                f"$schema {str(schema['$schema'])[:200]!r} is not a JSON Schema dialect hookd"
                " knows (use https://json-schema.org/draft/2020-12/schema or an earlier draft)"
            )
        return cls
    return validators.validator_for(schema)


def check_schema(schema: Any) -> None:
    """Check that `schema` (a parsed JSON value) is a valid JSON Schema: an object or a boolean
    that its dialect's metaschema accepts, at most MAX_JSON_BYTES.

    Raises ValueError: "not a valid JSON Schema at $.properties.total.type: 'numbr' is not valid
    under any of the given schemas" and the like.
    """
    if not isinstance(schema, dict | bool):
        raise ValueError("a JSON Schema is an object (or true/false)")
    if problem := _json_problem(schema):
        raise ValueError(problem)
    cls = _validator_class(schema)
    # With the format checker: a `pattern` that is no regular expression is refused here, not
    # met as re.error when an example is checked.
    metaschema = cls(cls.META_SCHEMA, format_checker=cls.FORMAT_CHECKER)
    try:
        error = best_match(metaschema.iter_errors(schema))
    except RecursionError:
        raise ValueError("is nested too deeply to check") from None
    if error is not None:
        raise ValueError(f"not a valid JSON Schema at {error.json_path}: {error.message}")


def check_example(schema: Any | None, example: Any) -> None:
    """Check that `example` (a parsed JSON value) can be a payload (not null, at most
    MAX_JSON_BYTES) and, when `schema` is given (already checked), matches it.

    Raises ValueError: "does not match the schema at $.total: 'lots' is not of type 'number'",
    or the `$ref` that cannot be resolved.
    """
    if example is None:
        raise ValueError("an example payload cannot be null")
    if problem := _json_problem(example):
        raise ValueError(problem)
    if schema is None:
        return
    cls = _validator_class(schema)
    validator = cls(schema, format_checker=cls.FORMAT_CHECKER)
    try:
        error = best_match(validator.iter_errors(example))
    except Unresolvable as exc:
        raise ValueError(
            f"the schema's $ref cannot be resolved ({exc}): refer only inside the schema,"
            " e.g. #/$defs/item"
        ) from None
    except RecursionError:
        raise ValueError(
            "cannot be checked: the schema refers to itself without end (a $ref loop) or is"
            " nested too deeply"
        ) from None
    if error is not None:
        raise ValueError(f"does not match the schema at {error.json_path}: {error.message}")


def document(entries: Iterable[EventType]) -> dict[str, Any]:
    """The published catalogue (`GET /catalogue.json`, `hookd event-type export`):

        {"event_types": [{"name", "description", "schema", "example", "updated_at"}, ...]}

    sorted by name; `schema` and `example` are null when not given, `updated_at` is RFC 3339 UTC.
    """
    return {
        "event_types": [
            {
                "name": e.name,
                "description": e.description,
                "schema": e.schema,
                "example": e.example,
                "updated_at": e.updated_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            }
            for e in sorted(entries, key=lambda e: e.name)
        ]
    }
