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
    Forbidden: the scope may not do this at all (a tenant changing the installation-wide event
        catalogue).
    StoreUnavailable: the database is unavailable for now.

The event catalogue (`catalogue*` methods) is installation-wide: every scope reads it, only an
operator scope changes it.

Actions that make deliveries due (retry, resend, replay, test) wake running daemons with a NOTIFY
on `hookd_wake` carrying the payload "due", so they are attempted at once, not at the next poll.
"""

from __future__ import annotations

import asyncio
import math
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar
from urllib.parse import urlsplit

from hookd import models
from hookd.auth import validate_credentials
from hookd.catalogue import check_example, check_schema, document, name_problem
from hookd.destinations import DestinationPolicy, DestinationRefused, literal_addresses
from hookd.endpoints import SETTING_TYPES, parse_event_types, validate_settings, validate_url
from hookd.errors import Busy, HookdError, InvalidEndpoint, InvalidPayloadFilter
from hookd.models import (
    AttemptLogEntry,
    DeliveryRecord,
    DeliveryState,
    Endpoint,
    EndpointStats,
    EventRecord,
    EventType,
)
from hookd.sender import webhook_id
from hookd.signing import InvalidSecret, decode_secret, generate_secret, public_key
from hookd.store import Store

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


class _HasId(Protocol):
    @property
    def id(self) -> int: ...


_R = TypeVar("_R", bound=_HasId)


def _page(rows: list[_R], limit: int) -> Page[_R]:
    items = rows[:limit]
    return Page(items, items[-1].id if len(rows) > limit and items else None)


def _invalid(exc: Exception, default_field: str) -> InvalidInput:
    """InvalidInput from a validator's message: "settings.x: expected ..." names its own field."""
    message = str(exc)
    head, sep, rest = message.partition(": ")
    if sep and " " not in head and (head == default_field or head.startswith(default_field + ".")):
        return InvalidInput(head, rest)
    return InvalidInput(default_field, message)


def _text(field_name: str, value: object, max_length: int, *, empty_ok: bool = False) -> str:
    """A string PostgreSQL can store: no NUL, valid UTF-8, within `max_length` characters."""
    if not isinstance(value, str):
        raise InvalidInput(field_name, "expected a string")
    if not value and not empty_ok:
        raise InvalidInput(field_name, "must not be empty")
    if len(value) > max_length:
        raise InvalidInput(field_name, f"is {len(value)} characters; at most {max_length} allowed")
    if "\0" in value:
        raise InvalidInput(field_name, "must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(field_name, "is not valid Unicode text") from None
    return value


def _tenant(value: object) -> str | None:
    if value is None:
        return None
    return _text("tenant", value, MAX_TENANT_LENGTH)


def _description(value: object) -> str | None:
    if value is None:
        return None
    return _text("description", value, MAX_DESCRIPTION_LENGTH, empty_ok=True)


def _metadata(value: object) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidInput("metadata", "expected an object of string keys and values")
    if len(value) > MAX_METADATA_KEYS:
        raise InvalidInput("metadata", f"has {len(value)} keys; at most {MAX_METADATA_KEYS}")
    out: dict[str, str] = {}
    for key, item in value.items():
        k = _text("metadata", key, MAX_METADATA_KEY_LENGTH)
        out[k] = _text(f"metadata.{k}", item, MAX_METADATA_VALUE_LENGTH, empty_ok=True)
    return out


def _event_types(value: object) -> tuple[str, ...]:
    """A filter from "a.*,b" or a list of entries (names, 'prefix.*' or '*')."""
    try:
        if isinstance(value, str):
            return parse_event_types(value)
        if not isinstance(value, Sequence) or not value:
            raise InvalidInput("event_types", "give at least one (or '*' for all)")
        out: list[str] = []
        for item in value:
            if not isinstance(item, str) or "," in item:
                raise InvalidInput(
                    "event_types", f"{item!r} is not an event type, a 'prefix.*' pattern or '*'"
                )
            out.extend(parse_event_types(item))
        if not out:
            raise InvalidInput("event_types", "give at least one (or '*' for all)")
        return tuple(dict.fromkeys(out))
    except InvalidInput:
        raise
    except InvalidEndpoint as exc:
        message = str(exc).removeprefix("event types: ")
        raise InvalidInput("event_types", message) from None


def _settings(value: object) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidInput("settings", "expected an object of overrides")
    try:
        return validate_settings(value)
    except InvalidEndpoint as exc:
        raise _invalid(exc, "settings") from None


def _setting_changes(value: object) -> tuple[dict[str, Any], list[str]]:
    """(overrides to set, keys to remove) from a settings patch where None removes a key."""
    if not isinstance(value, Mapping):
        raise InvalidInput("settings", "expected an object of overrides")
    unset = [k for k, v in value.items() if v is None]
    for key in unset:
        if key not in SETTING_TYPES:
            raise InvalidInput(
                f"settings.{key}", f"unknown key (known: {', '.join(SETTING_TYPES)})"
            )
    return _settings({k: v for k, v in value.items() if v is not None}), unset


def check_url(value: object, *, allow_http: bool) -> str:
    """The form of an endpoint URL (hookd.endpoints.validate_url), without the SSRF guard's
    look at its destination; what callers can check before they reach the database.

    Raises InvalidInput("url", ...); a plain-http URL refused names `security.allow_http`.
    """
    url = _text("url", value, 4096)
    try:
        return validate_url(url, allow_http=allow_http)
    except InvalidEndpoint as exc:
        message = str(exc)
        if not allow_http and urlsplit(url).scheme == "http":
            message += " (set security.allow_http = true to allow plain http)"
        raise InvalidInput("url", message) from None


_FILTER_HINTS = {
    "22038": "not a predicate: write a comparison such as $.total > 100, or exists($.field) to"
    " test that a field is there",
    "42704": "a filter cannot use variables",
}
"""What to add to PostgreSQL's message, by SQLSTATE: 22038 singleton_sql_json_item_required
(the path yields values, not one boolean), 42704 undefined_object (a $variable)."""


def _filter_problem(exc: InvalidPayloadFilter) -> str:
    hint = _FILTER_HINTS.get(exc.sqlstate)
    return f"{exc} ({hint})" if hint else str(exc)


def _aware(field_name: str, value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise InvalidInput(field_name, "give a time zone (e.g. 2026-01-01T00:00:00Z)")
    return value


def _filter_id(field_name: str, value: int | None) -> int | None:
    if value is not None and not 1 <= value <= MAX_ID:
        raise InvalidInput(field_name, f"not a valid id: {value}")
    return value


class Service:
    """The operating service over one Store. See the module docstring for scopes and errors.

    `policy`: the SSRF guard's DestinationPolicy, so endpoints it would refuse at delivery are
    refused when they are created or changed (naming the setting that opens them); None checks
    nothing. `allow_http`: accept plain-http URLs (`security.allow_http`).
    """

    def __init__(self, store: Store, *, allow_http: bool, policy: DestinationPolicy | None) -> None:
        self.store = store
        self.allow_http = allow_http
        self.policy = policy
        self._install_id: str | None = None

    # -- validation shared by create and update ----------------------------------------------

    async def _url(self, value: object) -> str:
        """A valid endpoint URL whose destination the SSRF guard allows.

        IP literals (any spelling) are checked directly; a host name is resolved (at most
        RESOLVE_TIMEOUT_S) and every address checked. A name that does not resolve now is
        accepted: the guard checks again at every delivery.
        """
        url = check_url(value, allow_http=self.allow_http)
        host = urlsplit(url).hostname
        if self.policy is None or not host:
            return url
        try:
            self.policy.check_host(host)
            if self.policy.host_allowed(host) or literal_addresses(host):
                return url
            try:
                async with asyncio.timeout(RESOLVE_TIMEOUT_S):
                    infos = await asyncio.get_running_loop().getaddrinfo(
                        host, None, type=socket.SOCK_STREAM
                    )
            except (OSError, TimeoutError, UnicodeError):
                return url  # not resolvable now: the delivery-time guard still applies
            self.policy.check_addresses(host, [str(info[4][0]) for info in infos])
        except DestinationRefused as exc:
            raise InvalidInput("url", str(exc)) from None
        return url

    async def check_payload_filter(self, value: object) -> str | None:
        """A payload filter as stored: PostgreSQL's canonical text of `value` (None: no filter).

        The filter is a predicate in PostgreSQL's SQL/JSON path language, evaluated at fan-out
        with `payload @@ filter` (jsonb_path_match): a comparison (`$.total > 100`), a boolean
        combination (`&&`, `||`, `!`), `exists($.field)`, `like_regex`, `starts with`,
        `is unknown`. Only true creates a delivery; false and unknown (strict mode meeting a
        missing field, a type mismatch) do not. A bare path (`$.total`) is not a predicate and is
        refused: `@@` would answer unknown for it, and `@?` (jsonb_path_exists) would be true
        whenever a result exists, even `false`. PostgreSQL itself checks the text; no evaluator
        of hookd's own.

        Raises InvalidInput("filter", <PostgreSQL's message>) for an empty or invalid filter, one
        that is not a predicate, or one that names a variable ($x).
        """
        if value is None:
            return None
        text = _text("filter", value, MAX_FILTER_LENGTH)
        if not text.strip():
            raise InvalidInput("filter", "must not be empty (null, or --no-filter, removes it)")
        try:
            return await self.store.check_payload_filter(text)
        except InvalidPayloadFilter as exc:
            raise InvalidInput("filter", _filter_problem(exc)) from None

    def _credentials(self, scope: Scope, value: object) -> dict[str, Any] | None:
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise InvalidInput("credentials", "expected an object (see the authentication kinds)")
        if scope.tenant is not None and "tls" in value:
            # TLS files are paths on the daemon's host: a tenant could probe for files or make
            # hookd use one of the operator's.
            raise InvalidInput(
                "credentials.tls", "file paths on the daemon's host; only an operator sets them"
            )
        try:
            return validate_credentials(value, allow_http=self.allow_http) or None
        except InvalidEndpoint as exc:
            raise _invalid(exc, "credentials") from None

    # -- endpoints ---------------------------------------------------------------------------

    async def list_endpoints(self, scope: Scope, page: PageRequest) -> Page[Endpoint]:
        """Endpoints in scope, newest first."""
        before = _check_page(page)
        rows = await self.store.endpoints_page(scope.tenant, before, page.limit + 1)
        return _page(rows, page.limit)

    async def get_endpoint(self, scope: Scope, endpoint_id: int) -> Endpoint:
        """One endpoint. Raises NotFound."""
        ep = None
        if 1 <= endpoint_id <= MAX_ID:
            ep = await self.store.endpoint(endpoint_id, scope.tenant)
        if ep is None:
            raise NotFound(f"no endpoint with id {endpoint_id}")
        return ep

    async def create_endpoint(self, scope: Scope, new: NewEndpoint) -> tuple[Endpoint, str]:
        """Returns the endpoint and its signing secret (shown once here; `reveal_secret` later).
        A tenant scope forces `tenant` to the scope's tenant (InvalidInput if another is given).

        Raises InvalidInput for any invalid field, including a URL the SSRF guard refuses
        (`security.allow_cidrs` / `security.allow_hosts` open internal targets).
        """
        tenant = _tenant(new.tenant)
        if scope.tenant is not None:
            if tenant is not None and tenant != scope.tenant:
                raise InvalidInput("tenant", "can only create endpoints of the caller's tenant")
            tenant = scope.tenant
        event_types = _event_types(new.event_types)
        description = _description(new.description)
        metadata = _metadata(new.metadata)
        settings = _settings(new.settings)
        credentials = self._credentials(scope, new.credentials)
        payload_filter = await self.check_payload_filter(new.payload_filter)
        if not isinstance(new.enabled, bool):
            raise InvalidInput("enabled", "expected true or false")
        if new.secret is None:
            if new.kind not in ("hmac", "ed25519"):
                raise InvalidInput("kind", "expected 'hmac' or 'ed25519'")
            secret = generate_secret(new.kind)
        else:
            secret = _text("secret", new.secret, 200)
            try:
                decode_secret(secret)
            except InvalidSecret as exc:
                raise InvalidInput("secret", str(exc)) from None
        url = await self._url(new.url)
        ep = await self.store.add_endpoint(
            url,
            secret,
            event_types,
            tenant,
            settings,
            description=description,
            metadata=metadata,
            credentials=credentials,
            enabled=new.enabled,
            payload_filter=payload_filter,
        )
        return ep, secret

    async def update_endpoint(
        self, scope: Scope, endpoint_id: int, changes: EndpointChanges
    ) -> Endpoint:
        """Change only the fields of `changes` that are not UNSET (see EndpointChanges), in one
        transaction, and return the endpoint as it is now.

        `settings` None removes every override. `enabled` False pauses the endpoint's pending
        deliveries, True resumes them. A tenant scope cannot move an endpoint to another tenant
        (InvalidInput "tenant"). Raises NotFound, InvalidInput.
        """
        current = await self.get_endpoint(scope, endpoint_id)
        fields: dict[str, Any] = {}
        if changes.url is not UNSET:
            fields["url"] = await self._url(changes.url)
        if changes.event_types is not UNSET:
            fields["event_types"] = list(_event_types(changes.event_types))
        if changes.tenant is not UNSET:
            tenant = _tenant(changes.tenant)
            if scope.tenant is not None and tenant != scope.tenant:
                raise InvalidInput("tenant", "cannot move an endpoint out of the caller's tenant")
            fields["tenant"] = tenant
        if changes.description is not UNSET:
            fields["description"] = _description(changes.description)
        if changes.metadata is not UNSET:
            fields["metadata"] = _metadata(changes.metadata)
        if changes.payload_filter is not UNSET:
            fields["payload_filter"] = await self.check_payload_filter(changes.payload_filter)
        unset: list[str] = []
        if changes.settings is not UNSET:
            if changes.settings is None:
                unset = list(current.settings)
            else:
                fields["settings"], unset = _setting_changes(changes.settings)
        replace_credentials = changes.credentials is not UNSET
        credentials = self._credentials(scope, changes.credentials) if replace_credentials else None
        enabled: bool | None = None
        if changes.enabled is not UNSET:
            if not isinstance(changes.enabled, bool):
                raise InvalidInput("enabled", "expected true or false")
            enabled = changes.enabled
        if not fields and not unset and not replace_credentials and enabled is None:
            return current
        ep = await self.store.update_endpoint(
            endpoint_id,
            scope.tenant,
            fields,
            settings_unset=unset,
            credentials=credentials,
            replace_credentials=replace_credentials,
            enabled=enabled,
        )
        if ep is None:
            raise NotFound(f"no endpoint with id {endpoint_id}")
        return ep

    async def delete_endpoint(self, scope: Scope, endpoint_id: int) -> None:
        """Delete an endpoint; its open deliveries are settled as failed, its history stays.
        Raises NotFound."""
        await self.get_endpoint(scope, endpoint_id)
        if not await self.store.delete_endpoint(endpoint_id, scope.tenant):
            raise NotFound(f"no endpoint with id {endpoint_id}")

    async def rotate_secret(
        self, scope: Scope, endpoint_id: int, grace_s: float, secret: str | None = None
    ) -> SecretView:
        """Make a new signing secret current (`secret`, or a generated one of the same kind);
        the old one also signs for `grace_s` seconds (0 to MAX_GRACE_S). Raises NotFound,
        InvalidInput."""
        if not (isinstance(grace_s, int | float) and 0 <= grace_s <= MAX_GRACE_S):
            raise InvalidInput("grace_s", f"expected 0 to {MAX_GRACE_S:.0f} seconds")
        current = await self.get_endpoint(scope, endpoint_id)
        if secret is None:
            secret = generate_secret("ed25519" if current.secret.startswith("whsk_") else "hmac")
        else:
            secret = _text("secret", secret, 200)
            try:
                decode_secret(secret)
            except InvalidSecret as exc:
                raise InvalidInput("secret", str(exc)) from None
        if not await self.store.rotate_secret(endpoint_id, secret, float(grace_s)):
            raise NotFound(f"no endpoint with id {endpoint_id}")
        return await self.reveal_secret(scope, endpoint_id)

    async def reveal_secret(self, scope: Scope, endpoint_id: int) -> SecretView:
        """The endpoint's current signing secret (and its Ed25519 public key). Raises NotFound."""
        ep = await self.get_endpoint(scope, endpoint_id)
        return SecretView(ep.id, ep.secret, public_key(ep.secret), ep.previous_secret_until)

    async def endpoint_stats(self, scope: Scope, endpoint_id: int) -> EndpointStats:
        """The endpoint's newest attempt and its attempts over the last hour and day.
        Raises NotFound."""
        await self.get_endpoint(scope, endpoint_id)
        return await self.store.endpoint_stats(endpoint_id)

    # -- events ------------------------------------------------------------------------------

    async def event_types(self, scope: Scope) -> list[str]:
        """Event types seen in the outbox, sorted."""
        return await self.store.event_types(scope.tenant)

    async def get_event(self, scope: Scope, event_id: int) -> EventRecord:
        """One event of the outbox. Raises NotFound."""
        ev = None
        if 1 <= event_id <= MAX_ID:
            ev = await self.store.event(event_id, scope.tenant)
        if ev is None:
            raise NotFound(f"no event with id {event_id}")
        return ev

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
        """Events matching every given filter, newest first; `since`/`until` bound the time of
        publishing (until exclusive). A tenant scope lists only its own events."""
        before = _check_page(page)
        if event_type is not None:
            _text("event_type", event_type, 200)
        rows = await self.store.events_page(
            scope.tenant,
            before,
            page.limit + 1,
            event_type=event_type,
            tenant=_tenant(tenant),
            since=_aware("since", since),
            until=_aware("until", until),
        )
        return _page(rows, page.limit)

    # -- deliveries and attempts ---------------------------------------------------------------

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
        """Deliveries matching every given filter, newest first; `since`/`until` bound their
        creation time (until exclusive).

        NotFound when `event_id` names no event in scope, or (for a tenant scope) `endpoint_id`
        no endpoint of the tenant; an operator may list a deleted endpoint's history.
        """
        before = _check_page(page)
        _filter_id("endpoint_id", endpoint_id)
        _filter_id("event_id", event_id)
        if event_id is not None:
            await self.get_event(scope, event_id)
        if endpoint_id is not None and scope.tenant is not None:
            await self.get_endpoint(scope, endpoint_id)
        rows = await self.store.deliveries(
            DeliveryState(state).value if state is not None else None,
            endpoint_id,
            page.limit + 1,
            event_id=event_id,
            tenant=scope.tenant,
            before_id=before,
            since=_aware("since", since),
            until=_aware("until", until),
        )
        return _page(rows, page.limit)

    async def get_delivery(self, scope: Scope, delivery_id: int) -> DeliveryRecord:
        """One delivery. Raises NotFound."""
        rows = []
        if 1 <= delivery_id <= MAX_ID:
            rows = await self.store.deliveries(ids=[delivery_id], tenant=scope.tenant, limit=1)
        if not rows:
            raise NotFound(f"no delivery with id {delivery_id}")
        return rows[0]

    async def attempts(self, scope: Scope, delivery_id: int) -> list[AttemptLogEntry]:
        """The delivery's attempts, oldest first. NotFound if the delivery is not in scope."""
        await self.get_delivery(scope, delivery_id)
        return await self.store.attempts(delivery_id)

    # -- actions -------------------------------------------------------------------------------

    async def _check_selection(self, scope: Scope, selection: Selection) -> None:
        """NotFound for an endpoint or delivery id the selection names that is not in scope."""
        if selection.endpoint_id is not None:
            await self.get_endpoint(scope, selection.endpoint_id)
        if selection.ids is not None:
            ids = list(dict.fromkeys(selection.ids))
            if len(ids) > MAX_SELECTED_IDS:
                raise InvalidInput("ids", f"at most {MAX_SELECTED_IDS} ids")
            for bad in (i for i in ids if not 1 <= i <= MAX_ID):
                raise NotFound(f"no delivery with id {bad}")
            found = {
                d.id
                for d in await self.store.deliveries(ids=ids, tenant=scope.tenant, limit=len(ids))
            }
            for missing in (i for i in ids if i not in found):
                raise NotFound(f"no delivery with id {missing}")
        if selection.event_type is not None:
            _text("event_type", selection.event_type, 200)
        _aware("since", selection.since)
        _aware("until", selection.until)

    async def _requeue(
        self,
        scope: Scope,
        selection: Selection,
        states: tuple[DeliveryState, ...],
        *,
        dry_run: bool = False,
    ) -> ActionResult:
        done = await self.store.requeue(
            states,
            ids=list(selection.ids) if selection.ids is not None else None,
            endpoint_id=selection.endpoint_id,
            event_type=selection.event_type,
            since=selection.since,
            until=selection.until,
            tenant=scope.tenant,
            dry_run=dry_run,
        )
        if not dry_run and done.count > done.paused:
            await self.store.notify_due()
        return ActionResult(done.count, done.ids, dry_run, done.paused)

    async def retry(self, scope: Scope, selection: Selection) -> ActionResult:
        """Dead-lettered (failed) deliveries matching `selection` get another attempt, in one
        statement: pending and due now, or paused if their endpoint is disabled (they go out when
        it is enabled). `selection.states` is ignored (always failed); deliveries of deleted
        endpoints are left alone. Running daemons are woken.

        Raises NotFound for an endpoint or delivery id not in scope, InvalidInput.
        """
        await self._check_selection(scope, selection)
        return await self._requeue(scope, selection, (DeliveryState.FAILED,))

    async def resend(self, scope: Scope, delivery_id: int) -> DeliveryRecord:
        """A delivered or failed delivery gets one more attempt (same webhook-id: it is the same
        event): pending and due now, or paused if its endpoint is disabled (it goes out when the
        endpoint is enabled). Returns the delivery as it is now.

        Raises NotFound; Conflict if it is pending or paused, or its endpoint was deleted.
        """
        delivery = await self.get_delivery(scope, delivery_id)
        if delivery.state in (DeliveryState.PENDING, DeliveryState.PAUSED):
            raise Conflict(
                f"delivery {delivery_id} is {delivery.state.value}: only delivered or failed"
                " deliveries can be resent"
            )
        done = await self._requeue(
            scope,
            Selection(ids=(delivery_id,)),
            (DeliveryState.DELIVERED, DeliveryState.FAILED),
        )
        if done.count == 0:
            if await self.store.endpoint(delivery.endpoint_id) is None:
                raise Conflict(f"delivery {delivery_id}: its endpoint was deleted")
            raise Conflict(f"delivery {delivery_id} changed state meanwhile; try again")
        return await self.get_delivery(scope, delivery_id)

    async def replay(self, scope: Scope, selection: Selection, *, dry_run: bool) -> ActionResult:
        """Deliveries of one endpoint in final states matching `selection` become pending again
        (paused if the endpoint is disabled; they go out when it is enabled), in one statement:
        `count` is exact and nothing else is touched (not the same events' deliveries to other
        endpoints). With `dry_run` nothing changes and `count` is what would be, from the same
        selection. `selection.states` ⊆ {delivered, failed}; `since`/`until` bound the delivery's
        creation time.

        Raises InvalidInput (no endpoint_id, other states), NotFound (endpoint or ids not in
        scope).
        """
        if selection.endpoint_id is None:
            raise InvalidInput("endpoint_id", "a replay needs the endpoint it replays to")
        states = tuple(dict.fromkeys(DeliveryState(s) for s in selection.states))
        final = (DeliveryState.DELIVERED, DeliveryState.FAILED)
        if not states or any(s not in final for s in states):
            raise InvalidInput("states", "give one or both of delivered and failed")
        await self._check_selection(scope, selection)
        return await self._requeue(scope, selection, states, dry_run=dry_run)

    async def send_test(
        self, scope: Scope, endpoint_id: int, wait_s: float, event_type: str | None = None
    ) -> TestResult:
        """Create a signed test event delivered to this endpoint only, and wait up to `wait_s`
        (at most MAX_TEST_WAIT_S; larger waits are cut to it) for its first attempt.

        Without `event_type` the event is a `hookd.ping` with payload {"endpoint_id": N,
        "message": ...}. With it, the event has that type and the catalogue's example as its
        payload (checked against the entry's schema again), whatever the endpoint's filters
        say: a test shows what the receiver does with such an event. The event has the
        endpoint's tenant; it is marked fanned out when created, so no other endpoint receives
        it. A running daemon is woken to attempt it at once. `attempt` is None if none finished
        within the wait (the delivery goes on as any other).

        Raises NotFound; Conflict if the endpoint is disabled; InvalidInput for a negative wait,
        or an `event_type` the catalogue lacks, has no example for, or whose example fails its
        schema.
        """
        if not (isinstance(wait_s, int | float) and not math.isnan(wait_s) and wait_s >= 0):
            raise InvalidInput("wait_s", f"expected 0 to {MAX_TEST_WAIT_S:.0f} seconds")
        wait_s = min(float(wait_s), MAX_TEST_WAIT_S)
        ep = await self.get_endpoint(scope, endpoint_id)
        if not ep.enabled:
            raise Conflict(f"endpoint {endpoint_id} is disabled: enable it to send a test event")
        payload: Any = {"endpoint_id": endpoint_id, "message": "test event from hookd"}
        if event_type is not None:
            payload = await self._catalogue_example(event_type)
        made = await self.store.insert_test_delivery(
            endpoint_id, scope.tenant, event_type or TEST_EVENT_TYPE, payload
        )
        if made is None:
            await self.get_endpoint(scope, endpoint_id)
            raise Conflict(f"endpoint {endpoint_id} is disabled: enable it to send a test event")
        delivery_id, event_id = made
        await self.store.notify_due()
        if self._install_id is None:
            self._install_id = await self.store.install_id()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while True:
            attempt = await self.store.first_attempt(delivery_id)
            left = deadline - loop.time()
            if attempt is not None or left <= 0:
                break
            await asyncio.sleep(min(TEST_POLL_S, left))
        delivery = await self.get_delivery(scope, delivery_id)
        return TestResult(delivery, attempt, webhook_id(self._install_id, event_id))

    # -- the event catalogue ---------------------------------------------------------------------

    async def catalogue(self, scope: Scope) -> list[EventType]:
        """Every entry of the event catalogue, by name (any scope may read it)."""
        return await self.store.catalogue()

    async def catalogue_entry(self, scope: Scope, name: str) -> EventType:
        """One entry of the event catalogue. Raises NotFound, InvalidInput ("name")."""
        entry = await self.store.catalogue_entry(_catalogue_name(name))
        if entry is None:
            raise NotFound(f"no event type {name} in the catalogue")
        return entry

    async def put_catalogue_entry(
        self, scope: Scope, name: str, changes: EventTypeChanges
    ) -> tuple[EventType, bool]:
        """Add an event type to the catalogue, or change the given fields of one (see
        EventTypeChanges); returns the entry and whether it was created.

        The schema is checked with the jsonschema library, and the example (the one given, or
        the one stored) against the schema that results.

        Raises Forbidden for a tenant scope; InvalidInput ("name", "description", "schema" or
        "example", the message naming the JSON path of the first problem); Conflict if the
        entry changed meanwhile (try again).
        """
        _operator(scope, "change the event catalogue")
        name = _catalogue_name(name)
        current = await self.store.catalogue_entry(name)
        description = current.description if current else ""
        schema = current.schema if current else None
        example = current.example if current else None
        if changes.description is not UNSET:
            description = _description(changes.description) or ""
        if changes.schema is not UNSET:
            schema = changes.schema
            if schema is not None:
                try:
                    check_schema(schema)
                except ValueError as exc:
                    raise InvalidInput("schema", str(exc)) from None
        if changes.example is not UNSET:
            example = changes.example
        if example is not None:
            try:
                check_example(schema, example)
            except ValueError as exc:
                stored = "" if changes.example is not UNSET else "the stored example "
                raise InvalidInput("example", f"{stored}{exc}") from None
        done = await self.store.put_catalogue_entry(
            name, description, schema, example, current.updated_at if current else None
        )
        if done is None:
            raise Conflict(f"event type {name} changed meanwhile; try again")
        return done

    async def remove_catalogue_entry(self, scope: Scope, name: str) -> None:
        """Remove an event type from the catalogue (in strict mode, publishing it fails from
        then on). Raises Forbidden for a tenant scope, NotFound, InvalidInput ("name")."""
        _operator(scope, "change the event catalogue")
        if not await self.store.remove_catalogue_entry(_catalogue_name(name)):
            raise NotFound(f"no event type {name} in the catalogue")

    async def catalogue_strict(self, scope: Scope) -> bool:
        """Whether publishing refuses event types the catalogue lacks (strict mode)."""
        return await self.store.strict_event_types()

    async def set_catalogue_strict(self, scope: Scope, strict: bool) -> StrictResult:
        """Turn strict mode on or off. While on, `hookd.publish` (and anything else that adds an
        event: captured table changes, test events of catalogue types) fails with SQLSTATE 22023
        for an event type the catalogue lacks, except hookd's own `hookd.ping`; while off it
        costs publishing nothing (hookd/sql/021_event_catalogue.sql).

        Raises Forbidden for a tenant scope; InvalidInput ("strict"); Conflict when hookd.events
        stays locked by long transactions (try again).
        """
        _operator(scope, "change strict mode")
        if not isinstance(strict, bool):
            raise InvalidInput("strict", "expected true or false")
        try:
            await self.store.set_strict_event_types(strict)
        except Busy as exc:
            raise Conflict(f"strict mode not changed: {exc}") from None
        unknown: list[str] = []
        if strict:
            known = {e.name for e in await self.store.catalogue()}
            seen = await self.store.event_types(None)
            unknown = [t for t in seen if t not in known and t != TEST_EVENT_TYPE][:100]
        return StrictResult(strict, unknown)

    async def catalogue_document(self) -> dict[str, Any]:
        """The catalogue as published to receivers (hookd.catalogue.document): public, the same
        for every caller."""
        return document(await self.store.catalogue())

    async def _catalogue_example(self, event_type: str) -> Any:
        """The catalogue's example payload of `event_type`, checked against its schema.
        Raises InvalidInput ("event_type")."""
        if problem := name_problem(event_type):
            raise InvalidInput("event_type", problem)
        entry = await self.store.catalogue_entry(event_type)
        if entry is None:
            raise InvalidInput(
                "event_type",
                f"{event_type} is not in the event catalogue (add it with `hookd event-type add"
                f" {event_type} --example FILE`)",
            )
        if entry.example is None:
            raise InvalidInput(
                "event_type",
                f"{event_type} has no example in the catalogue (add one with `hookd event-type"
                f" add {event_type} --example FILE`)",
            )
        try:
            check_example(entry.schema, entry.example)
        except ValueError as exc:
            raise InvalidInput("event_type", f"the example of {event_type} {exc}") from None
        return entry.example


def _operator(scope: Scope, action: str) -> None:
    if scope.tenant is not None:
        raise Forbidden(f"only an operator may {action} (it is installation-wide)")


def _catalogue_name(name: object) -> str:
    if problem := name_problem(name):
        raise InvalidInput("name", problem)
    assert isinstance(name, str)
    return name


def _check_page(page: PageRequest) -> int | None:
    """Validate a page request; return the `before_id` to query with."""
    if isinstance(page.limit, bool) or not isinstance(page.limit, int):
        raise InvalidInput("limit", "expected an integer")
    if not 1 <= page.limit <= MAX_PAGE_SIZE:
        raise InvalidInput("limit", f"expected 1 to {MAX_PAGE_SIZE}")
    before = page.before_id
    if before is None:
        return None
    if isinstance(before, bool) or not isinstance(before, int) or before < 1:
        raise InvalidInput("before_id", "expected a positive id")
    return None if before > MAX_ID else before
