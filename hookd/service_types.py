"""The operating service's vocabulary (hookd/service.py): its limits and constants, its errors
(NotFound, Conflict, Forbidden, InvalidInput), the scope and pagination types, and the value
types its callers pass in and get back (NewEndpoint, EndpointChanges, Selection, ActionResult,
TestResult, SecretView, EventTypeChanges, StrictResult, UNSET). Plain data only: no I/O and no
checks beyond what a constructor does; hookd.service re-exports every name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

from hookd import models
from hookd.errors import HookdError, InvalidEndpoint
from hookd.models import AttemptLogEntry, DeliveryRecord, DeliveryState

_T = TypeVar("_T")

MAX_PAGE_SIZE = 500
"""Most rows one page of a list may hold."""

DEFAULT_PAGE_SIZE = 50

TEST_EVENT_TYPE = models.TEST_EVENT_TYPE
"""Event type of the signed test event `send_test` delivers to one endpoint (one attempt only)."""

MAX_TEST_WAIT_S = 30.0
"""Longest `send_test` waits for the attempt's result, in seconds."""

TEST_POLL_S = 0.05
"""How often `send_test` looks for the test delivery's first attempt, in seconds."""

RESOLVE_TIMEOUT_S = 2.0
"""Longest wait for the name lookup that checks a new endpoint URL against the SSRF guard."""

MAX_TENANT_LENGTH = 200
MAX_DESCRIPTION_LENGTH = 1000
MAX_METADATA_KEYS = 50
MAX_METADATA_KEY_LENGTH = 200
MAX_METADATA_VALUE_LENGTH = 1000
MAX_FILTER_LENGTH = 2000
"""Longest payload filter, in characters."""
MAX_SELECTED_IDS = 1000
"""Most delivery ids one retry or replay may name."""
MAX_GRACE_S = 30 * 86400.0
"""Longest grace period of a secret rotation, in seconds (30 days)."""
MAX_ID = 2**63 - 1
"""Ids are PostgreSQL bigints; a larger one names nothing."""


class NotFound(HookdError):
    """No such object."""


class Conflict(HookdError):
    """The object's state forbids this action."""


class Forbidden(HookdError):
    """The caller's scope may not do this."""


class InvalidInput(InvalidEndpoint):
    """A field of the request is invalid."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True, slots=True)
class Scope:
    """Who is asking: `tenant` None is an operator (everything); else one tenant's objects only."""

    tenant: str | None = None


@dataclass(frozen=True, slots=True)
class PageRequest:
    """Keyset pagination over a list ordered by id, newest (highest id) first.

    `before_id`: return rows with ids below it (the previous page's `next_before_id`); None for the
    first page. `limit` 1..MAX_PAGE_SIZE. Rows that arrive while paging get higher ids, so they
    never shift later pages: nothing is skipped or repeated.
    """

    limit: int = DEFAULT_PAGE_SIZE
    before_id: int | None = None


@dataclass(frozen=True, slots=True)
class Page(Generic[_T]):
    """One page of a list; `next_before_id` is None on the last page."""

    items: list[_T]
    next_before_id: int | None


class _Unset:
    """Marker for "field not given" in EndpointChanges (None means "clear it")."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


@dataclass(frozen=True, slots=True)
class EndpointChanges:
    """PATCH semantics: only fields that are not UNSET change.

    `settings` is merged into the endpoint's overrides: a key with value None is removed (back to
    the configured default), other keys replace. `credentials` replaces the whole authentication
    (None: no authentication). `description`, `tenant` and `payload_filter` None clear them;
    `metadata` replaces the free-form object (string keys and values, at most 50 keys).
    """

    url: Any = UNSET
    event_types: Any = UNSET
    tenant: Any = UNSET
    description: Any = UNSET
    metadata: Any = UNSET
    enabled: Any = UNSET
    settings: Any = UNSET
    credentials: Any = UNSET
    payload_filter: Any = UNSET


@dataclass(frozen=True, slots=True)
class NewEndpoint:
    """What `create_endpoint` needs; `secret` None generates one of `kind` ("hmac" or "ed25519").

    `payload_filter`: a predicate in PostgreSQL's SQL/JSON path language over the event payload
    (`$.total > 100 && $.currency == "EUR"`); see `Service.check_payload_filter`.
    """

    url: str
    event_types: tuple[str, ...] = ("*",)
    tenant: str | None = None
    description: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    credentials: dict[str, Any] | None = None
    secret: str | None = None
    kind: str = "hmac"
    enabled: bool = True
    payload_filter: str | None = None


@dataclass(frozen=True, slots=True)
class SecretView:
    """An endpoint's signing secret, shown only on request. `public_key` for Ed25519 secrets."""

    endpoint_id: int
    secret: str
    public_key: str | None
    previous_secret_until: datetime | None


@dataclass(frozen=True, slots=True)
class Selection:
    """Which deliveries a retry or replay acts on. All given conditions must hold.

    A replay needs `endpoint_id`; `states` are final states only ("delivered", "failed");
    `since`/`until` bound the delivery's creation time (until exclusive).
    """

    endpoint_id: int | None = None
    ids: tuple[int, ...] | None = None
    event_type: str | None = None
    states: tuple[DeliveryState, ...] = (DeliveryState.FAILED,)
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True, slots=True)
class ActionResult:
    """What a retry, resend or replay did: exact `count` of deliveries made pending (or, for a
    dry run, that would be), and their ids (at most 1,000 listed)."""

    count: int
    ids: list[int]
    dry_run: bool = False
    paused: int = 0
    """Of `count`, deliveries made paused rather than pending because their endpoint is disabled
    (they go out when it is enabled)."""


@dataclass(frozen=True, slots=True)
class TestResult:
    """A test event's delivery and, if it finished within the wait, its first attempt."""

    delivery: DeliveryRecord
    attempt: AttemptLogEntry | None
    webhook_id: str


@dataclass(frozen=True, slots=True)
class EventTypeChanges:
    """What `put_catalogue_entry` sets: fields left UNSET keep their value (for a new entry: an
    empty description, no schema, no example); `schema` or `example` None removes it.

    `schema` is a JSON Schema (parsed: an object, or true/false), `example` a payload (any JSON
    value but null); the example must match the schema that results.
    """

    description: Any = UNSET
    schema: Any = UNSET
    example: Any = UNSET


@dataclass(frozen=True, slots=True)
class StrictResult:
    """Strict mode after a change, and the event types of the outbox the catalogue lacks (when
    it is on, publishing them fails from now on); at most 100 listed."""

    strict: bool
    unknown_seen: list[str]
