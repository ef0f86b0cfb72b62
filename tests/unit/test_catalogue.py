"""Unit tests for hookd.catalogue: names, schemas and examples (the jsonschema library), the
published document. Every problem is a one-line ValueError, never another exception."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from hookd.catalogue import MAX_JSON_BYTES, check_example, check_schema, document, name_problem
from hookd.models import EventType


def _nested(depth: int) -> dict[str, Any]:
    root: dict[str, Any] = {}
    node = root
    for _ in range(depth):
        node["items"] = {}
        node = node["items"]
    return root


@pytest.mark.parametrize("name", ["order.paid", "a", "user-v2.created_at", "x" * 200])
def test_names_follow_the_publish_rule(name: str) -> None:
    assert name_problem(name) is None


@pytest.mark.parametrize("name", ["", "order paid", "order.", ".paid", "a..b", "x" * 201, 7, None])
def test_other_names_are_refused(name: object) -> None:
    assert name_problem(name) is not None


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ({"type": "objekt"}, "not a valid JSON Schema at $.type: 'objekt' is not valid"),
        ({"pattern": "("}, "not a valid JSON Schema at $.pattern: '(' is not a 'regex'"),
        ({"patternProperties": {"(": {}}}, "not a valid JSON Schema at $.patternProperties"),
        ({"$schema": 5}, "$schema must be a string"),
        ({"$schema": "urn:mine"}, "$schema 'urn:mine' is not a JSON Schema dialect hookd knows"),
        ([], "a JSON Schema is an object (or true/false)"),
        ("object", "a JSON Schema is an object (or true/false)"),
        ({"description": "x" * MAX_JSON_BYTES}, "is 262162 bytes of JSON; at most 262144"),
        (_nested(400), "is nested too deeply, or is not JSON"),
        (_nested(200), "is nested too deeply to check"),
    ],
)
def test_invalid_schemas(schema: Any, message: str) -> None:
    with pytest.raises(ValueError) as info:
        check_schema(schema)
    assert str(info.value).startswith(message), str(info.value)


@pytest.mark.parametrize(
    "schema",
    [
        True,
        {},
        {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object"},
        {"$schema": "http://json-schema.org/draft-04/schema#", "id": "x", "type": "object"},
    ],
)
def test_valid_schemas_of_every_known_dialect(schema: Any) -> None:
    check_schema(schema)


@pytest.mark.parametrize(
    ("schema", "example", "message"),
    [
        ({"type": "object"}, None, "an example payload cannot be null"),
        (None, {"a": "x" * MAX_JSON_BYTES}, "is 262152 bytes of JSON"),
        (
            {"properties": {"n": {"type": "integer"}}},
            {"n": 1.5},
            "does not match the schema at $.n: 1.5 is not of type 'integer'",
        ),
        (
            {"items": {"required": ["sku"]}},
            [{"sku": 1}, {}],
            "does not match the schema at $[1]: 'sku' is a required property",
        ),
        ({"$ref": "#"}, 1, "cannot be checked: the schema refers to itself without end"),
        ({"$ref": "#/$defs/nope"}, 1, "the schema's $ref cannot be resolved"),
        ({"$ref": "https://example.com/s.json"}, 1, "the schema's $ref cannot be resolved"),
        (False, 1, "does not match the schema at $: False schema does not allow 1"),
        (None, {"note": "a\0b"}, "contains a NUL character"),
        (None, {"a\0": 1}, "contains a NUL character"),
    ],
)
def test_examples_that_do_not_fit(schema: Any, example: Any, message: str) -> None:
    with pytest.raises(ValueError) as info:
        check_example(schema, example)
    assert str(info.value).startswith(message), str(info.value)


def test_a_backslash_before_u0000_is_not_a_nul() -> None:
    check_example(None, {"path": "C:\\u0000"})


def test_local_refs_resolve() -> None:
    schema = {"$ref": "#/$defs/order", "$defs": {"order": {"required": ["id"]}}}
    check_schema(schema)
    check_example(schema, {"id": 1})
    with pytest.raises(ValueError, match="'id' is a required property"):
        check_example(schema, {})


def test_document_is_sorted_with_utc_times() -> None:
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2)))
    entries = [
        EventType("order.paid", "paid", {"type": "object"}, {"id": 1}, at, at),
        EventType("account.created", "", None, None, at, at),
    ]
    assert document(entries) == {
        "event_types": [
            {
                "name": "account.created",
                "description": "",
                "schema": None,
                "example": None,
                "updated_at": "2026-01-02T01:04:05Z",
            },
            {
                "name": "order.paid",
                "description": "paid",
                "schema": {"type": "object"},
                "example": {"id": 1},
                "updated_at": "2026-01-02T01:04:05Z",
            },
        ]
    }
