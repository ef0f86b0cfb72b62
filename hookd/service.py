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

The code is split by area: hookd/service_types.py (constants, errors, value types),
hookd/service_validation.py (pure input checks), hookd/service_endpoints.py (endpoints) and
hookd/service_catalogue.py (the event catalogue); this module holds `Service` itself (events,
deliveries, attempts and the actions) and re-exports every public name of the others.
"""

from __future__ import annotations

import asyncio
import math
from datetime import datetime
from typing import Any

from hookd.destinations import DestinationPolicy
from hookd.models import AttemptLogEntry, DeliveryRecord, DeliveryState, EventRecord
from hookd.sender import webhook_id
from hookd.service_catalogue import CatalogueOperations
from hookd.service_endpoints import EndpointOperations
from hookd.service_types import (
    DEFAULT_PAGE_SIZE,
    MAX_DESCRIPTION_LENGTH,
    MAX_FILTER_LENGTH,
    MAX_GRACE_S,
    MAX_ID,
    MAX_METADATA_KEY_LENGTH,
    MAX_METADATA_KEYS,
    MAX_METADATA_VALUE_LENGTH,
    MAX_PAGE_SIZE,
    MAX_SELECTED_IDS,
    MAX_TENANT_LENGTH,
    MAX_TEST_WAIT_S,
    RESOLVE_TIMEOUT_S,
    TEST_EVENT_TYPE,
    TEST_POLL_S,
    UNSET,
    ActionResult,
    Conflict,
    EndpointChanges,
    EventTypeChanges,
    Forbidden,
    InvalidInput,
    NewEndpoint,
    NotFound,
    Page,
    PageRequest,
    Scope,
    SecretView,
    Selection,
    StrictResult,
    TestResult,
)
from hookd.service_validation import (
    _aware,
    _check_page,
    _filter_id,
    _page,
    _tenant,
    _text,
    check_url,
)
from hookd.store import Store

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MAX_DESCRIPTION_LENGTH",
    "MAX_FILTER_LENGTH",
    "MAX_GRACE_S",
    "MAX_ID",
    "MAX_METADATA_KEYS",
    "MAX_METADATA_KEY_LENGTH",
    "MAX_METADATA_VALUE_LENGTH",
    "MAX_PAGE_SIZE",
    "MAX_SELECTED_IDS",
    "MAX_TENANT_LENGTH",
    "MAX_TEST_WAIT_S",
    "RESOLVE_TIMEOUT_S",
    "TEST_EVENT_TYPE",
    "TEST_POLL_S",
    "UNSET",
    "ActionResult",
    "Conflict",
    "EndpointChanges",
    "EventTypeChanges",
    "Forbidden",
    "InvalidInput",
    "NewEndpoint",
    "NotFound",
    "Page",
    "PageRequest",
    "Scope",
    "SecretView",
    "Selection",
    "Service",
    "StrictResult",
    "TestResult",
    "check_url",
]


class Service(EndpointOperations, CatalogueOperations):
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
