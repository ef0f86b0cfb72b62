"""Frozen value types shared by every module: endpoints, deliveries and attempt outcomes."""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

TEST_EVENT_TYPE = "hookd.ping"
"""Event type of hookd's own test event (`hookd endpoint test`): its delivery gets one attempt."""


def _as_stored(value: str) -> str:
    return value


class DeliveryState(enum.StrEnum):
    """States of a delivery (see ARCHITECTURE.md for who moves it between them)."""

    PENDING = "pending"
    """Waiting for its next attempt, or leased by a daemon that is attempting it."""
    DELIVERED = "delivered"
    """A 2xx answer was received. Final."""
    FAILED = "failed"
    """The dead letter: retries exhausted or the delivery cannot be sent. Kept; `hookd retry` revives."""
    PAUSED = "paused"
    """Its endpoint is disabled; `hookd endpoint enable` makes it pending again."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A receiver URL and the filter that decides which events it gets."""

    id: int
    url: str
    tenant: str | None
    event_types: tuple[str, ...]
    stored_secret: str
    """The signing secret as stored (`enc:v1:...` when encrypted at rest); read `secret`."""
    enabled: bool
    disabled_reason: str | None
    settings: Mapping[str, Any]
    created_at: datetime
    breaker_open_until: datetime | None = None
    stored_previous_secret: str | None = None
    """The secret before the last rotation, as stored; read `previous_secret`."""
    previous_secret_until: datetime | None = None
    stored_credentials: str | None = None
    """The credentials as stored (a JSON object, maybe encrypted); read `credentials`."""
    updated_at: datetime | None = None
    """Changes on every change to the row (enable, disable, URL, secret, settings)."""
    description: str | None = None
    """Free text for operators (at most 1,000 characters)."""
    metadata: Mapping[str, Any] | None = None
    """Free-form string keys and values (at most 50), kept for the operator or tenant."""
    payload_filter: str | None = None
    """A predicate in PostgreSQL's SQL/JSON path language, in PostgreSQL's canonical text (e.g.
    `($."total" > 100)`); fan-out gives the endpoint only events whose payload it holds for."""
    opener: Callable[[str], str] = field(default=_as_stored, compare=False)
    """Decrypts a stored value (the store's SecretBox.open). Secrets are decrypted only when read,
    so commands that show none (status, masked views) need no key. Raises SecretKeyError."""

    @property
    def secret(self) -> str:
        """The signing secret, decrypted. Raises SecretKeyError (no key, wrong key)."""
        return self.opener(self.stored_secret)

    @property
    def previous_secret(self) -> str | None:
        """The secret before the last rotation; also signed with until `previous_secret_until`."""
        stored = self.stored_previous_secret
        return self.opener(stored) if stored else None

    @property
    def credentials(self) -> Mapping[str, Any] | None:
        """How hookd authenticates to the receiver (see hookd/auth.py); decrypted.

        Raises:
            SecretKeyError: no key, or the wrong key.
        """
        stored = self.stored_credentials
        if not stored:
            return None
        value: Mapping[str, Any] = orjson.loads(self.opener(stored))
        return value

    def check_secrets(self) -> None:
        """Decrypt every stored secret once (to fail early). Raises SecretKeyError."""
        for stored in (self.stored_secret, self.stored_previous_secret, self.stored_credentials):
            if stored:
                self.opener(stored)

    def in_grace(self, now: datetime) -> bool:
        """Whether the previous secret also signs at `now` (no decryption needed to know)."""
        return bool(
            self.stored_previous_secret
            and self.previous_secret_until is not None
            and now < self.previous_secret_until
        )

    def secrets_at(self, now: datetime) -> tuple[str, ...]:
        """The secrets to sign with at `now`: the current one, plus the previous during its grace.
        Decrypts them (SecretKeyError)."""
        previous = self.previous_secret if self.in_grace(now) else None
        return (self.secret, previous) if previous else (self.secret,)

    def __repr__(self) -> str:
        # Never show secrets or credentials in logs, tracebacks or error messages.
        return f"Endpoint(id={self.id}, url={self.url!r}, tenant={self.tenant!r}, enabled={self.enabled})"


@dataclass(frozen=True, slots=True)
class Delivery:
    """One leased (event, endpoint) pair, ready for an attempt.

    `attempt` is the number of this attempt (1 for the first). `payload` is the event's JSON text as
    stored, so the body is built without parsing it. `ordering_key` is the event's ordering key:
    while this delivery is open, later deliveries of the key to the same endpoint wait.
    """

    id: int
    endpoint_id: int
    attempt: int
    event_id: int
    event_type: str
    published_at: datetime
    payload: str
    created_at: datetime
    ordering_key: str | None = None


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One HTTP attempt for the attempt log. Times in Unix seconds, duration in seconds."""

    delivery_id: int
    attempt: int
    started_unix_s: float
    duration_s: float
    status: int | None
    error: str | None
    response_body: str | None


@dataclass(frozen=True, slots=True)
class Outcome:
    """What to write back for a delivery after an attempt.

    `retry_in_s` is set when `state` is pending: seconds from the write until the next attempt.
    `counted` is False when the lease is given back without an attempt having been made.
    """

    delivery_id: int
    attempt: int
    state: DeliveryState
    retry_in_s: float | None
    status: int | None
    error: str | None
    counted: bool = True


# -- what the operating surface (hookd/service.py: API, console, CLI) reads ----------------------


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One event of the outbox as stored. `payload` is the parsed JSON value."""

    id: int
    event_type: str
    tenant: str | None
    payload: Any
    idempotency_key: str | None
    created_at: datetime
    fanned_out_at: datetime | None


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    """One delivery (event, endpoint) with its current state, for listing and inspection.

    `leased_until` is set while a daemon holds the delivery (its lease expires then; after a
    `kill -9` the delivery waits until that time before another daemon takes it).
    `next_attempt_at` is when a pending delivery may next be attempted.
    """

    id: int
    event_id: int
    endpoint_id: int
    event_type: str
    tenant: str | None
    state: DeliveryState
    attempts: int
    next_attempt_at: datetime | None
    leased_until: datetime | None
    last_status: int | None
    last_error: str | None
    created_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True, slots=True)
class AttemptLogEntry:
    """One row of the attempt log: an HTTP attempt of a delivery.

    `duration_s` in seconds; `status` is None when no answer arrived (then `error` says why);
    `response_body` is the start of the receiver's answer (at most `http.max_response_body_bytes`).
    """

    delivery_id: int
    attempt: int
    started_at: datetime
    duration_s: float
    status: int | None
    error: str | None
    response_body: str | None


@dataclass(frozen=True, slots=True)
class WindowStats:
    """Attempt figures of one endpoint over a trailing window (`window_s` seconds).

    `success_rate` is 2xx attempts / attempts (None without attempts); durations in seconds.
    """

    window_s: float
    attempts: int
    succeeded: int
    success_rate: float | None
    p50_duration_s: float | None
    p99_duration_s: float | None


@dataclass(frozen=True, slots=True)
class EndpointStats:
    """Health of one endpoint: its last attempt and the last hour and day of attempts."""

    endpoint_id: int
    last_status: int | None
    last_error: str | None
    last_attempt_at: datetime | None
    last_hour: WindowStats
    last_day: WindowStats


@dataclass(frozen=True, slots=True)
class EventType:
    """An entry of the event catalogue (installation-wide; hookd/catalogue.py).

    `schema` is a JSON Schema of the payload (an object, or true/false) and `example` an example
    payload that matches it; each None when not given.
    """

    name: str
    description: str
    schema: Any | None
    example: Any | None
    created_at: datetime
    updated_at: datetime
