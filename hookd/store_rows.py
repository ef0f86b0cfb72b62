"""Row converters: asyncpg records of the store's queries as models, and Python values as jsonb.

The query mixins of `hookd.store` share these, so no driver record leaves the store.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg
import orjson

from hookd.models import (
    AttemptLogEntry,
    Delivery,
    DeliveryRecord,
    DeliveryState,
    Endpoint,
    EventRecord,
    EventType,
    WindowStats,
)
from hookd.secretbox import SecretBox


def _json(value: Any) -> Any:
    """A jsonb column as a Python value (asyncpg hands jsonb over as text)."""
    return orjson.loads(value) if isinstance(value, str) else value


def _endpoint(r: asyncpg.Record, box: SecretBox) -> Endpoint:
    settings = r["settings"]
    creds = r["credentials"]
    return Endpoint(
        id=r["id"],
        url=r["url"],
        tenant=r["tenant"],
        event_types=tuple(r["event_types"]),
        stored_secret=r["secret"],
        enabled=r["enabled"],
        disabled_reason=r["disabled_reason"],
        settings=orjson.loads(settings) if isinstance(settings, str) else settings,
        created_at=r["created_at"],
        breaker_open_until=r["breaker_open_until"],
        stored_previous_secret=r["previous_secret"],
        previous_secret_until=r["previous_secret_until"],
        stored_credentials=creds,
        updated_at=r["updated_at"],
        description=r["description"],
        metadata=_json(r["metadata"]),
        payload_filter=r["payload_filter"],
        opener=box.open,
    )


def _event_record(r: asyncpg.Record) -> EventRecord:
    return EventRecord(
        id=r["id"],
        event_type=r["event_type"],
        tenant=r["tenant"],
        payload=_json(r["payload"]),
        idempotency_key=r["idempotency_key"],
        created_at=r["created_at"],
        fanned_out_at=r["fanned_out_at"],
    )


def _event_type(r: asyncpg.Record) -> EventType:
    return EventType(
        name=r["name"],
        description=r["description"],
        schema=_json(r["schema"]),
        example=_json(r["example"]),
        created_at=r["created_at"],
        updated_at=r["updated_at"],
    )


def _jsonb(value: Any | None) -> str | None:
    """A Python value as jsonb text for a query parameter; None stays SQL NULL."""
    return None if value is None else orjson.dumps(value).decode()


def _delivery_record(r: asyncpg.Record) -> DeliveryRecord:
    return DeliveryRecord(
        id=r["id"],
        event_id=r["event_id"],
        endpoint_id=r["endpoint_id"],
        event_type=r["event_type"],
        tenant=r["tenant"],
        state=DeliveryState(r["state"]),
        attempts=r["attempts"],
        next_attempt_at=r["next_attempt_at"],
        leased_until=r["leased_until"],
        last_status=r["last_status"],
        last_error=r["last_error"],
        created_at=r["created_at"],
        finished_at=r["finished_at"],
    )


def _attempt_entry(r: asyncpg.Record) -> AttemptLogEntry:
    return AttemptLogEntry(
        delivery_id=r["delivery_id"],
        attempt=r["attempt"],
        started_at=r["started_at"],
        duration_s=r["duration_s"],
        status=r["status"],
        error=r["error"],
        response_body=r["response_body"],
    )


def _window(r: asyncpg.Record, prefix: str, window_s: float) -> WindowStats:
    attempts = int(r[f"{prefix}_attempts"])
    succeeded = int(r[f"{prefix}_succeeded"])
    return WindowStats(
        window_s=window_s,
        attempts=attempts,
        succeeded=succeeded,
        success_rate=succeeded / attempts if attempts else None,
        p50_duration_s=r[f"{prefix}_p50_s"],
        p99_duration_s=r[f"{prefix}_p99_s"],
    )


def _delivery(r: asyncpg.Record, created_at: datetime | None = None) -> Delivery:
    return Delivery(
        id=r["id"],
        endpoint_id=r["endpoint_id"],
        attempt=r["attempts"],
        event_id=r["event_id"],
        event_type=r["event_type"],
        published_at=r["created_at"],
        payload=r["payload"],
        created_at=created_at or r["created_at"],
        ordering_key=r["ordering_key"],
    )
