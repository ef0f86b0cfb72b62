"""The operating service: everything an operator or a tenant can do to endpoints, events,
deliveries and attempts, in one place behind the HTTP API (hookd/api.py), the web console
(hookd/console.py) and the CLI (hookd/cli.py).

Every call takes a `Scope`: `Scope()` is an operator who sees everything; `Scope("acme")` sees and
changes only tenant "acme"'s endpoints, events, deliveries and attempts. Anything outside the scope
is reported exactly like something that does not exist (`NotFound`), so a tenant cannot probe for
other tenants' ids.

Errors (all `HookdError`, one line each, safe to show to the caller):
    NotFound: no such object within the scope.
    InvalidInput: a field is invalid; `field` names it (e.g. "url", "settings.total_timeout_s").
    Conflict: the object exists but is in a state that forbids the action (e.g. resending a
        pending delivery, testing a disabled endpoint).
    StoreUnavailable: the database is unavailable for now.

Actions that make deliveries due (retry, resend, replay, test) wake running daemons with a NOTIFY
on `hookd_wake` carrying the payload "due", so they are attempted at once, not at the next poll.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

from hookd.errors import HookdError, InvalidEndpoint
from hookd.models import (
    AttemptLogEntry,
    DeliveryRecord,
    DeliveryState,
    Endpoint,
    EndpointStats,
    EventRecord,
)
from hookd.store import Store

_T = TypeVar("_T")

MAX_PAGE_SIZE = 500
"""Most rows one page of a list may hold."""

DEFAULT_PAGE_SIZE = 50

TEST_EVENT_TYPE = "hookd.ping"
"""Event type of the signed test event `send_test` delivers to one endpoint."""

MAX_TEST_WAIT_S = 30.0
"""Longest `send_test` waits for the attempt's result, in seconds."""


class NotFound(HookdError):
    """No such object."""


class Conflict(HookdError):
    """The object's state forbids this action."""


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
    (None: no authentication). `description` and `tenant` None clear them; `metadata` replaces the
    free-form object (string keys and values, at most 50 keys).
    """

    url: Any = UNSET
    event_types: Any = UNSET
    tenant: Any = UNSET
    description: Any = UNSET
    metadata: Any = UNSET
    enabled: Any = UNSET
    settings: Any = UNSET
    credentials: Any = UNSET


@dataclass(frozen=True, slots=True)
class NewEndpoint:
    """What `create_endpoint` needs; `secret` None generates one of `kind` ("hmac" or "ed25519")."""

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


@dataclass(frozen=True, slots=True)
class TestResult:
    """A test event's delivery and, if it finished within the wait, its first attempt."""

    delivery: DeliveryRecord
    attempt: AttemptLogEntry | None
    webhook_id: str


class Service:
    """The operating service over one Store. See the module docstring for scopes and errors.

    `policy`: the SSRF guard's DestinationPolicy, so endpoints it would refuse at delivery are
    refused when they are created or changed (naming the setting that opens them).
    `allow_http`: accept plain-http URLs.
    """

    def __init__(self, store: Store, *, allow_http: bool, policy: Any) -> None:
        self.store = store
        self.allow_http = allow_http
        self.policy = policy

    # endpoints
    async def list_endpoints(self, scope: Scope, page: PageRequest) -> Page[Endpoint]:
        raise NotImplementedError

    async def get_endpoint(self, scope: Scope, endpoint_id: int) -> Endpoint:
        raise NotImplementedError

    async def create_endpoint(self, scope: Scope, new: NewEndpoint) -> tuple[Endpoint, str]:
        """Returns the endpoint and its signing secret (shown once here; `reveal_secret` later).
        A tenant scope forces `tenant` to the scope's tenant (InvalidInput if another is given)."""
        raise NotImplementedError

    async def update_endpoint(
        self, scope: Scope, endpoint_id: int, changes: EndpointChanges
    ) -> Endpoint:
        raise NotImplementedError

    async def delete_endpoint(self, scope: Scope, endpoint_id: int) -> None:
        raise NotImplementedError

    async def rotate_secret(
        self, scope: Scope, endpoint_id: int, grace_s: float, secret: str | None = None
    ) -> SecretView:
        raise NotImplementedError

    async def reveal_secret(self, scope: Scope, endpoint_id: int) -> SecretView:
        raise NotImplementedError

    async def endpoint_stats(self, scope: Scope, endpoint_id: int) -> EndpointStats:
        raise NotImplementedError

    # events
    async def event_types(self, scope: Scope) -> list[str]:
        """Event types seen in the outbox, sorted."""
        raise NotImplementedError

    async def get_event(self, scope: Scope, event_id: int) -> EventRecord:
        raise NotImplementedError

    async def list_events(
        self,
        scope: Scope,
        page: PageRequest,
        *,
        event_type: str | None = None,
        tenant: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> Page[EventRecord]:
        raise NotImplementedError

    # deliveries and attempts
    async def list_deliveries(
        self,
        scope: Scope,
        page: PageRequest,
        *,
        endpoint_id: int | None = None,
        event_id: int | None = None,
        state: DeliveryState | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> Page[DeliveryRecord]:
        raise NotImplementedError

    async def get_delivery(self, scope: Scope, delivery_id: int) -> DeliveryRecord:
        raise NotImplementedError

    async def attempts(self, scope: Scope, delivery_id: int) -> list[AttemptLogEntry]:
        """The delivery's attempts, oldest first. NotFound if the delivery is not in scope."""
        raise NotImplementedError

    # actions
    async def retry(self, scope: Scope, selection: Selection) -> ActionResult:
        """Dead-lettered (failed) deliveries matching `selection` get another attempt."""
        raise NotImplementedError

    async def resend(self, scope: Scope, delivery_id: int) -> DeliveryRecord:
        """A delivered or failed delivery gets one more attempt (same webhook-id).
        Conflict if it is pending or paused."""
        raise NotImplementedError

    async def replay(self, scope: Scope, selection: Selection, *, dry_run: bool) -> ActionResult:
        """Deliveries of one endpoint in final states matching `selection` become pending again;
        with `dry_run` nothing changes and `count` is what would be."""
        raise NotImplementedError

    async def send_test(self, scope: Scope, endpoint_id: int, wait_s: float) -> TestResult:
        """Create a signed `hookd.ping` event delivered to this endpoint only, and wait up to
        `wait_s` (at most MAX_TEST_WAIT_S) for its first attempt. Conflict if disabled."""
        raise NotImplementedError
