"""The operations of the OpenAPI document (hookd/openapi.py): `paths`, one entry per route.

Owns each operation's id, summary, tag, parameters, request body and answers (with their links);
the problem answers every /v1 operation can give are added by `_operation`, and the schemas,
responses and parameters named by `$ref` are in hookd/openapi_schemas.py and hookd/openapi.py.
"""

from __future__ import annotations

from hookd.openapi_build import Schema, _json, _links, _ok, _operation, _param, _query, _ref

_ENDPOINT_OPERATIONS = (
    "getEndpoint",
    "updateEndpoint",
    "revealSecret",
    "rotateSecret",
    "endpointStats",
    "sendTest",
    "deleteEndpoint",
)

_ID = (_param("Id"),)
_NAME = (
    {
        "name": "name",
        "in": "path",
        "required": True,
        "schema": _ref("EventTypeName"),
        "example": "order.paid",
    },
)
_PAGE = (_param("Limit"), _param("Cursor"))
# A page of the rows created in [since, until), after the list's own filters.
_WINDOW = (_param("Since"), _param("Until"), *_PAGE)
_LOCATION = {"Location": {"required": True, "schema": {"type": "string"}}}

_PATHS: dict[str, Schema] = {
    "/v1/endpoints": {
        "get": _operation(
            "listEndpoints",
            "List endpoints, newest first",
            _ok("EndpointPage", "A page of endpoints."),
            params=_PAGE,
            found=False,
            tag="endpoints",
        ),
        "post": _operation(
            "createEndpoint",
            "Create an endpoint (a tenant token creates it in its tenant)",
            {
                "201": {
                    **_json(
                        _ref("EndpointCreated"),
                        "Created; the signing secret is shown here once.",
                        _LOCATION,
                    ),
                    "links": _links("/id", _ENDPOINT_OPERATIONS),
                }
            },
            body="NewEndpoint",
            found=False,
            conflict=True,
            tag="endpoints",
        ),
    },
    "/v1/endpoints/{id}": {
        "get": _operation(
            "getEndpoint",
            "Get an endpoint",
            _ok("Endpoint", "The endpoint."),
            params=_ID,
            tag="endpoints",
        ),
        "patch": _operation(
            "updateEndpoint",
            "Change the given fields of an endpoint",
            _ok("Endpoint", "The changed endpoint."),
            params=_ID,
            body="EndpointChanges",
            conflict=True,
            tag="endpoints",
        ),
        "delete": _operation(
            "deleteEndpoint",
            "Delete an endpoint (its open deliveries fail; history stays)",
            {"204": {"description": "Deleted."}},
            params=_ID,
            conflict=True,
            tag="endpoints",
        ),
    },
    "/v1/endpoints/{id}/secret": {
        "get": _operation(
            "revealSecret",
            "Reveal an endpoint's signing secret",
            _ok("SecretView", "The secret."),
            params=_ID,
            tag="endpoints",
        )
    },
    "/v1/endpoints/{id}/secret/rotate": {
        "post": _operation(
            "rotateSecret",
            "New signing secret; the old one also signs for `grace_s`",
            _ok("SecretView", "The new secret."),
            params=_ID,
            body="RotateSecret",
            conflict=True,
            tag="endpoints",
        )
    },
    "/v1/endpoints/{id}/stats": {
        "get": _operation(
            "endpointStats",
            "Last status, success rate and durations over the last hour and day",
            _ok("EndpointStats", "The figures."),
            params=_ID,
            tag="endpoints",
        )
    },
    "/v1/endpoints/{id}/test": {
        "post": _operation(
            "sendTest",
            "Deliver a signed hookd.ping event to this endpoint and wait for the attempt (a"
            " hookd.ping gets one attempt: a failed one ends the delivery failed, not retried)",
            {
                "200": {
                    **_json(
                        _ref("TestResult"), "The test delivery and, if it finished, its attempt."
                    ),
                    "links": {
                        **_links("/delivery/id", ("getDelivery", "listAttempts", "resendDelivery")),
                        **_links("/delivery/event_id", ("getEvent",)),
                    },
                }
            },
            params=_ID,
            body="SendTest",
            body_required=False,
            conflict=True,
            tag="endpoints",
        )
    },
    "/v1/event-types": {
        "get": _operation(
            "listEventTypes",
            "Event types seen in the outbox, sorted",
            _ok("EventTypeList", "The event types."),
            found=False,
            tag="events",
        )
    },
    "/v1/events": {
        "get": _operation(
            "listEvents",
            "List events, newest first",
            _ok("EventPage", "A page of events."),
            params=(
                _query("event_type", _ref("EventTypeFilter"), "Only this type (or pattern)."),
                _query("tenant", _ref("Tenant"), "Only this tenant's events."),
                *_WINDOW,
            ),
            found=False,
            tag="events",
        )
    },
    "/v1/events/{id}": {
        "get": _operation(
            "getEvent",
            "Get an event",
            _ok("Event", "The event."),
            params=_ID,
            tag="events",
        )
    },
    "/v1/deliveries": {
        "get": _operation(
            "listDeliveries",
            "List deliveries, newest first",
            _ok("DeliveryPage", "A page of deliveries."),
            params=(
                _query("endpoint_id", _ref("Id"), "Only this endpoint's deliveries."),
                _query("event_id", _ref("Id"), "Only this event's deliveries."),
                _query("state", _ref("DeliveryState"), "Only deliveries in this state."),
                *_WINDOW,
            ),
            tag="deliveries",
        )
    },
    "/v1/deliveries/{id}": {
        "get": _operation(
            "getDelivery",
            "Get a delivery",
            _ok("Delivery", "The delivery."),
            params=_ID,
            tag="deliveries",
        )
    },
    "/v1/deliveries/{id}/attempts": {
        "get": _operation(
            "listAttempts",
            "The attempts of a delivery, oldest first",
            _ok("AttemptList", "The attempts."),
            params=_ID,
            tag="deliveries",
        )
    },
    "/v1/deliveries/{id}/resend": {
        "post": _operation(
            "resendDelivery",
            "One more attempt of a delivered or failed delivery (same webhook-id)",
            _ok("Delivery", "The delivery, pending again."),
            params=_ID,
            conflict=True,
            tag="deliveries",
        )
    },
    "/v1/retry": {
        "post": _operation(
            "retryDeliveries",
            "Another attempt for dead-lettered (failed) deliveries",
            _ok("ActionResult", "How many deliveries are pending again."),
            body="Retry",
            conflict=True,
            tag="deliveries",
        )
    },
    "/v1/replay": {
        "post": _operation(
            "replayDeliveries",
            "Make one endpoint's finished deliveries pending again (or count them: dry_run)",
            _ok("ActionResult", "How many deliveries are (or would be) pending."),
            body="Replay",
            conflict=True,
            tag="deliveries",
        )
    },
    "/v1/catalogue/event-types": {
        "get": _operation(
            "listCatalogue",
            "The event catalogue, by name",
            _ok("CatalogueList", "The entries."),
            found=False,
            tag="catalogue",
        )
    },
    "/v1/catalogue/event-types/{name}": {
        "get": _operation(
            "getCatalogueEntry",
            "One event type of the catalogue",
            _ok("CatalogueEntry", "The entry."),
            params=_NAME,
            tag="catalogue",
        ),
        "put": _operation(
            "putCatalogueEntry",
            "Add or replace an event type (operators only)",
            {
                "200": _json(_ref("CatalogueEntry"), "Replaced."),
                "201": _json(
                    _ref("CatalogueEntry"),
                    "Added.",
                    _LOCATION,
                ),
            },
            params=_NAME,
            body="CatalogueEntryPut",
            body_required=False,
            found=False,
            conflict=True,
            forbidden=True,
            tag="catalogue",
        ),
        "delete": _operation(
            "removeCatalogueEntry",
            "Remove an event type (operators only)",
            {"204": {"description": "Removed."}},
            params=_NAME,
            forbidden=True,
            tag="catalogue",
        ),
    },
    "/v1/catalogue/strict": {
        "get": _operation(
            "getStrictMode",
            "Whether publishing refuses event types the catalogue lacks",
            _ok("StrictMode", "The switch."),
            found=False,
            tag="catalogue",
        ),
        "put": _operation(
            "setStrictMode",
            "Turn strict mode on or off (operators only)",
            _ok("StrictModeResult", "The switch as it is now."),
            body="StrictMode",
            found=False,
            conflict=True,
            forbidden=True,
            tag="catalogue",
        ),
    },
    "/catalogue.json": {
        "get": {
            "operationId": "catalogueDocument",
            "summary": "The event catalogue for receivers: types, descriptions, schemas, examples",
            "tags": ["catalogue"],
            "security": [],
            "responses": {
                "200": _json(_ref("CatalogueDocument"), "The catalogue (public: no token)."),
                "503": {"$ref": "#/components/responses/Unavailable"},
            },
        }
    },
    "/openapi.json": {
        "get": {
            "operationId": "openapi",
            "summary": "This document",
            "tags": ["meta"],
            "security": [],
            "responses": {"200": _json({"type": "object"}, "The OpenAPI document.")},
        }
    },
}
