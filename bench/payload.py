"""Event payloads of a chosen size, shared by the burst load and the raw-client ceiling.

hookd's request body is `{"type":…,"timestamp":…,"position":…,"data":<payload>}` with the payload
spliced in as PostgreSQL's `jsonb` prints it (hookd/sender.py, `build_body`). `payload_json`
writes that same canonical text (keys ordered by length, ", " and ": " separators) and `request_body` the same
envelope, so the raw client and the peers send bodies of the same shape and size as hookd's
without importing hookd's internals.

Standard library only: `bench/producer.py` imports this module from the peers' environments too.
"""

from __future__ import annotations

import json

EVENT_TYPE = "order.paid"
DEFAULT_BODY_BYTES = 768
"""Target size of one request body, bytes (docs/design-notes.md item 8: 512 B-1 KiB)."""

_TIMESTAMP = "2026-01-01T00:00:00.000000Z"
"""A timestamp of the length hookd writes (RFC 3339, microseconds, UTC)."""


def request_body(payload: str, event_type: str = EVENT_TYPE, position: int = 1) -> bytes:
    """The envelope hookd POSTs around `payload` (the stored JSON text), for an event without an
    ordering key; `position` is the event id."""
    return b'{"type":%b,"timestamp":"%b","position":%d,"data":%b}' % (
        json.dumps(event_type).encode(),
        _TIMESTAMP.encode(),
        position,
        payload.encode(),
    )


def payload_json(event_no: int, body_bytes: int = DEFAULT_BODY_BYTES) -> str:
    """The payload of event `event_no`, padded so the request body is about `body_bytes` bytes."""
    head = f'{{"id": {event_no}, "pad": "'
    overhead = len(request_body(head + '"}'))
    return head + "x" * max(0, body_bytes - overhead) + '"}'
