"""The operator API's resources: one handler per operation of the OpenAPI document, each a
call of hookd.service.Service whose result is shaped as the document's JSON.

Handlers get a `Call` whose parameters and body were already checked against the document
(hookd/validation.py); errors propagate as exceptions for hookd/api.py to turn into problems.
Endpoints are shown without their secret and with only the kinds of credentials configured;
lists carry an opaque `next_cursor` (the keyset position, base64url).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from hookd.models import DeliveryState, Endpoint, EventType
from hookd.openapi import DEFAULT_TEST_WAIT_S, DOCUMENT, JSON
from hookd.service import (
    MAX_ID,
    EndpointChanges,
    EventTypeChanges,
    NewEndpoint,
    Page,
    PageRequest,
    Scope,
    Selection,
    Service,
)
from hookd.signing import PRIVATE_KEY_PREFIX, public_key
from hookd.validation import FieldError, InvalidRequest, parse_time

CREDENTIAL_KINDS = ("basic", "bearer", "headers", "oauth2", "tls")
"""The kinds of authentication an endpoint can have, in the order they are listed."""

_DOCUMENT_BYTES = orjson.dumps(DOCUMENT)
_JSON_OPTIONS = orjson.OPT_UTC_Z
_CURSOR = re.compile(rb"^p1:([0-9]{1,19})$")


@dataclass(frozen=True, slots=True)
class Call:
    """One validated request: who asks, its converted parameters and its JSON body."""

    request: web.Request
    scope: Scope
    args: dict[str, Any]
    body: dict[str, Any]


Handler = Callable[[Call], Awaitable[web.StreamResponse]]


def json_response(
    data: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    """`data` as JSON (orjson: dataclasses, enums and aware datetimes as RFC 3339 with Z)."""
    return web.Response(
        status=status,
        body=orjson.dumps(data, option=_JSON_OPTIONS),
        content_type=JSON,
        headers=headers,
    )


def encode_cursor(before_id: int | None) -> str | None:
    """The opaque `next_cursor` for a page that ends before `before_id`."""
    if before_id is None:
        return None
    return base64.urlsafe_b64encode(b"p1:%d" % before_id).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str) -> int:
    """The keyset position in a cursor from `encode_cursor`. Raises InvalidRequest."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (binascii.Error, ValueError):
        raw = b""
    m = _CURSOR.match(raw)
    if m is None or not 1 <= int(m.group(1)) <= MAX_ID:
        raise InvalidRequest(
            [FieldError("not a cursor: give a previous page's next_cursor", parameter="cursor")]
        )
    return int(m.group(1))


def endpoint_json(ep: Endpoint) -> dict[str, Any]:
    """An endpoint as the API shows it: never its secret, credentials only as the kinds set."""
    creds = ep.credentials or {}
    return {
        "id": ep.id,
        "url": ep.url,
        "tenant": ep.tenant,
        "event_types": list(ep.event_types),
        "filter": ep.payload_filter,
        "enabled": ep.enabled,
        "disabled_reason": ep.disabled_reason,
        "description": ep.description,
        "metadata": dict(ep.metadata or {}),
        "settings": dict(ep.settings),
        "credentials": [k for k in CREDENTIAL_KINDS if k in creds],
        "secret_kind": "ed25519" if ep.secret.startswith(PRIVATE_KEY_PREFIX) else "hmac",
        "created_at": ep.created_at,
        "updated_at": ep.updated_at,
        "breaker_open_until": ep.breaker_open_until,
        "previous_secret_until": ep.previous_secret_until,
    }


def catalogue_entry_json(e: EventType) -> dict[str, Any]:
    """An entry of the event catalogue as the API shows it."""
    return {
        "name": e.name,
        "description": e.description,
        "schema": e.schema,
        "example": e.example,
        "created_at": e.created_at,
        "updated_at": e.updated_at,
    }


def _page(page: Page[Any], shape: Callable[[Any], Any] = lambda item: item) -> web.Response:
    return json_response(
        {"data": [shape(i) for i in page.items], "next_cursor": encode_cursor(page.next_before_id)}
    )


def _page_request(args: Mapping[str, Any]) -> PageRequest:
    cursor = args.get("cursor")
    return PageRequest(limit=args["limit"], before_id=decode_cursor(cursor) if cursor else None)


def _body_time(body: Mapping[str, Any], name: str) -> Any:
    if body.get(name) is None:
        return None
    try:
        return parse_time(body[name])
    except ValueError as exc:
        raise InvalidRequest([FieldError(str(exc), pointer=f"/{name}")]) from None


class Resources:
    """The handlers over one Service."""

    def __init__(self, service: Service) -> None:
        self.service = service

    def handlers(self) -> dict[str, Handler]:
        """Each operation's handler, by `operationId`."""
        return {
            "openapi": self._openapi,
            "listEndpoints": self._list_endpoints,
            "createEndpoint": self._create_endpoint,
            "getEndpoint": self._get_endpoint,
            "updateEndpoint": self._update_endpoint,
            "deleteEndpoint": self._delete_endpoint,
            "revealSecret": self._reveal_secret,
            "rotateSecret": self._rotate_secret,
            "endpointStats": self._endpoint_stats,
            "sendTest": self._send_test,
            "listEventTypes": self._event_types,
            "listEvents": self._list_events,
            "getEvent": self._get_event,
            "listDeliveries": self._list_deliveries,
            "getDelivery": self._get_delivery,
            "listAttempts": self._attempts,
            "resendDelivery": self._resend,
            "retryDeliveries": self._retry,
            "replayDeliveries": self._replay,
            "listCatalogue": self._list_catalogue,
            "getCatalogueEntry": self._get_catalogue_entry,
            "putCatalogueEntry": self._put_catalogue_entry,
            "removeCatalogueEntry": self._remove_catalogue_entry,
            "getStrictMode": self._get_strict,
            "setStrictMode": self._set_strict,
            "catalogueDocument": self._catalogue_document,
        }

    async def _openapi(self, call: Call) -> web.Response:
        return web.Response(body=_DOCUMENT_BYTES, content_type=JSON)

    async def _list_endpoints(self, call: Call) -> web.Response:
        page = await self.service.list_endpoints(call.scope, _page_request(call.args))
        return _page(page, endpoint_json)

    async def _create_endpoint(self, call: Call) -> web.Response:
        b = call.body
        new = NewEndpoint(
            url=b["url"],
            event_types=tuple(b.get("event_types", ("*",))),
            tenant=b.get("tenant"),
            description=b.get("description"),
            metadata=dict(b.get("metadata", {})),
            settings=dict(b.get("settings", {})),
            credentials=b.get("credentials"),
            secret=b.get("secret"),
            kind=b.get("kind", "hmac"),
            enabled=b.get("enabled", True),
            payload_filter=b.get("filter"),
        )
        ep, secret = await self.service.create_endpoint(call.scope, new)
        data = {**endpoint_json(ep), "secret": secret, "public_key": public_key(secret)}
        return json_response(data, 201, {"Location": f"/v1/endpoints/{ep.id}"})

    async def _get_endpoint(self, call: Call) -> web.Response:
        return json_response(
            endpoint_json(await self.service.get_endpoint(call.scope, call.args["id"]))
        )

    async def _update_endpoint(self, call: Call) -> web.Response:
        given = dict(call.body)
        if "event_types" in given:
            given["event_types"] = tuple(given["event_types"])
        if "filter" in given:
            given["payload_filter"] = given.pop("filter")
        ep = await self.service.update_endpoint(
            call.scope, call.args["id"], EndpointChanges(**given)
        )
        return json_response(endpoint_json(ep))

    async def _delete_endpoint(self, call: Call) -> web.Response:
        await self.service.delete_endpoint(call.scope, call.args["id"])
        return web.Response(status=204)

    async def _reveal_secret(self, call: Call) -> web.Response:
        return json_response(await self.service.reveal_secret(call.scope, call.args["id"]))

    async def _rotate_secret(self, call: Call) -> web.Response:
        view = await self.service.rotate_secret(
            call.scope, call.args["id"], float(call.body["grace_s"]), call.body.get("secret")
        )
        return json_response(view)

    async def _endpoint_stats(self, call: Call) -> web.Response:
        return json_response(await self.service.endpoint_stats(call.scope, call.args["id"]))

    async def _send_test(self, call: Call) -> web.Response:
        wait_s = float(call.body.get("wait_s", DEFAULT_TEST_WAIT_S))
        result = await self.service.send_test(
            call.scope, call.args["id"], wait_s, call.body.get("event_type")
        )
        return json_response(
            {
                "delivery": result.delivery,
                "attempt": result.attempt,
                "webhook_id": result.webhook_id,
            }
        )

    async def _event_types(self, call: Call) -> web.Response:
        return json_response({"data": await self.service.event_types(call.scope)})

    async def _list_events(self, call: Call) -> web.Response:
        a = call.args
        page = await self.service.list_events(
            call.scope,
            _page_request(a),
            event_type=a["event_type"],
            tenant=a["tenant"],
            since=a["since"],
            until=a["until"],
        )
        return _page(page)

    async def _get_event(self, call: Call) -> web.Response:
        return json_response(await self.service.get_event(call.scope, call.args["id"]))

    async def _list_deliveries(self, call: Call) -> web.Response:
        a = call.args
        page = await self.service.list_deliveries(
            call.scope,
            _page_request(a),
            endpoint_id=a["endpoint_id"],
            event_id=a["event_id"],
            state=DeliveryState(a["state"]) if a["state"] else None,
            since=a["since"],
            until=a["until"],
        )
        return _page(page)

    async def _get_delivery(self, call: Call) -> web.Response:
        return json_response(await self.service.get_delivery(call.scope, call.args["id"]))

    async def _attempts(self, call: Call) -> web.Response:
        return json_response({"data": await self.service.attempts(call.scope, call.args["id"])})

    async def _resend(self, call: Call) -> web.Response:
        return json_response(await self.service.resend(call.scope, call.args["id"]))

    async def _retry(self, call: Call) -> web.Response:
        b = call.body
        selection = Selection(
            ids=tuple(b["ids"]) if "ids" in b else None,
            endpoint_id=b.get("endpoint_id"),
            event_type=b.get("event_type"),
            since=_body_time(b, "since"),
            until=_body_time(b, "until"),
        )
        return json_response(await self.service.retry(call.scope, selection))

    async def _replay(self, call: Call) -> web.Response:
        b = call.body
        selection = Selection(
            endpoint_id=b["endpoint_id"],
            event_type=b.get("event_type"),
            states=tuple(DeliveryState(s) for s in b.get("states", ("failed",))),
            since=_body_time(b, "since"),
            until=_body_time(b, "until"),
        )
        dry_run = bool(b.get("dry_run", False))
        return json_response(await self.service.replay(call.scope, selection, dry_run=dry_run))

    # -- the event catalogue -----------------------------------------------------------------

    async def _list_catalogue(self, call: Call) -> web.Response:
        entries = await self.service.catalogue(call.scope)
        return json_response({"data": [catalogue_entry_json(e) for e in entries]})

    async def _get_catalogue_entry(self, call: Call) -> web.Response:
        entry = await self.service.catalogue_entry(call.scope, call.args["name"])
        return json_response(catalogue_entry_json(entry))

    async def _put_catalogue_entry(self, call: Call) -> web.Response:
        b = call.body
        # PUT replaces the whole entry: what the body leaves out takes its default.
        changes = EventTypeChanges(
            description=b.get("description", ""),
            schema=b.get("schema"),
            example=b.get("example"),
        )
        entry, created = await self.service.put_catalogue_entry(
            call.scope, call.args["name"], changes
        )
        if created:
            location = {"Location": f"/v1/catalogue/event-types/{entry.name}"}
            return json_response(catalogue_entry_json(entry), 201, location)
        return json_response(catalogue_entry_json(entry))

    async def _remove_catalogue_entry(self, call: Call) -> web.Response:
        await self.service.remove_catalogue_entry(call.scope, call.args["name"])
        return web.Response(status=204)

    async def _get_strict(self, call: Call) -> web.Response:
        return json_response({"strict": await self.service.catalogue_strict(call.scope)})

    async def _set_strict(self, call: Call) -> web.Response:
        done = await self.service.set_catalogue_strict(call.scope, call.body["strict"])
        return json_response(done)

    async def _catalogue_document(self, call: Call) -> web.Response:
        return json_response(await self.service.catalogue_document())
