"""The request body: the event's type, time, position, ordering key and payload, spliced as bytes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import orjson

from hookd.sender import build_body

PUBLISHED = datetime(2026, 1, 2, 3, 4, 5, 60708, tzinfo=timezone(timedelta(hours=2)))


def test_body_without_a_key_has_its_position_and_no_ordering_key() -> None:
    body = build_body("order.paid", PUBLISHED, '{"id": 1}', 42)
    assert body == (
        b'{"type":"order.paid","timestamp":"2026-01-02T01:04:05.060708Z",'
        b'"position":42,"data":{"id": 1}}'
    )


def test_an_ordering_key_is_json_escaped() -> None:
    key = 'order "42"\\\n\u00e9'
    body = build_body("a.b", PUBLISHED.astimezone(UTC), "[1, 2]", 7, key)
    parsed = orjson.loads(body)
    assert parsed == {
        "type": "a.b",
        "timestamp": "2026-01-02T01:04:05.060708Z",
        "position": 7,
        "ordering_key": key,
        "data": [1, 2],
    }
    assert body.endswith(b',"data":[1, 2]}')  # the payload text is spliced, not re-encoded
