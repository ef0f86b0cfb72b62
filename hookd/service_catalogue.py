"""The event catalogue side of the operating service (hookd/service.py):
`CatalogueOperations`, the methods that read the installation-wide catalogue of event types,
add, change and remove its entries, turn strict mode on and off (operator scope only), publish
the catalogue document and give a type's checked example to test events. `Service` inherits
it; it is not used alone.
"""

from __future__ import annotations

from typing import Any

from hookd.catalogue import check_example, check_schema, document, name_problem
from hookd.errors import Busy
from hookd.models import EventType
from hookd.service_types import (
    TEST_EVENT_TYPE,
    UNSET,
    Conflict,
    EventTypeChanges,
    InvalidInput,
    NotFound,
    Scope,
    StrictResult,
)
from hookd.service_validation import _catalogue_name, _description, _operator
from hookd.store import Store


class CatalogueOperations:
    """The event catalogue (see hookd.service for scopes and errors); part of `Service`."""

    store: Store

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
