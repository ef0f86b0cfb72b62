"""The web console's pages (hookd/console.py): the GET handlers, each rendering one template for
a session's scope. The login form; the endpoints, each with its health over the last hour; one
endpoint with its settings, overrides and breaker; the deliveries, filtered by endpoint, state and
time, a page at a time; one delivery with its attempts and its event's payload. Also the query
parameters of these pages, whose invalid values are BadFilter (a 400 page).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import orjson
from aiohttp import web

from hookd.console_session import Session
from hookd.console_view import ConsoleView, format_time, path_id
from hookd.errors import HookdError
from hookd.models import DeliveryState, Endpoint, EndpointStats
from hookd.service import NotFound, PageRequest, Scope, Service

PAGE_SIZE = 50
"""Rows per page of the endpoint and delivery lists."""
BODY_PREVIEW_CHARS = 1000
"""How much of a response body or event payload a page shows."""


class BadFilter(HookdError):
    """A query parameter of a console page is invalid."""


class ConsolePages(ConsoleView):
    """The console's GET pages: part of Console (hookd/console.py), which sets `service`."""

    service: Service

    async def _login_form(self, request: web.Request) -> web.StreamResponse:
        return self._login_page(request, status=200)

    async def _no_such_page(self, request: web.Request, session: Session) -> web.StreamResponse:
        return self._error(request, 404, "Not found", f"no console page at {request.path}", session)

    # -- endpoints -------------------------------------------------------------------------

    async def _endpoints(self, request: web.Request, session: Session) -> web.StreamResponse:
        before = _int_param(request, "before")
        page = await self.service.list_endpoints(session.scope, PageRequest(PAGE_SIZE, before))
        stats = await self._stats_of(session.scope, page.items)
        now = datetime.now(UTC)
        rows = [
            {"endpoint": ep, "stats": stats.get(ep.id), "breaker": _breaker(ep, now)}
            for ep in page.items
        ]
        context = {"rows": rows, "next_before_id": page.next_before_id}
        return self._render(request, "endpoints.html", context, session=session)

    async def _stats_of(
        self, scope: Scope, endpoints: list[Endpoint]
    ) -> dict[int, EndpointStats | None]:
        """Each endpoint's stats; None for one deleted between the list and its stats."""

        async def one(endpoint_id: int) -> EndpointStats | None:
            try:
                return await self.service.endpoint_stats(scope, endpoint_id)
            except NotFound:
                return None

        # A few at a time: concurrent enough for a page, without taking the whole pool.
        out: dict[int, EndpointStats | None] = {}
        for start in range(0, len(endpoints), 4):
            chunk = endpoints[start : start + 4]
            results = await asyncio.gather(*(one(ep.id) for ep in chunk))
            out.update(zip((ep.id for ep in chunk), results, strict=True))
        return out

    async def _endpoint(self, request: web.Request, session: Session) -> web.StreamResponse:
        endpoint_id = path_id(request, "endpoint")
        endpoint = await self.service.get_endpoint(session.scope, endpoint_id)
        stats = await self.service.endpoint_stats(session.scope, endpoint_id)
        context = {
            "endpoint": endpoint,
            "stats": stats,
            "breaker": _breaker(endpoint, datetime.now(UTC)),
            "settings": sorted(endpoint.settings.items()),
            "auth": sorted(endpoint.credentials or {}),
            "metadata": sorted((endpoint.metadata or {}).items()),
        }
        return self._render(request, "endpoint.html", context, session=session)

    # -- deliveries ------------------------------------------------------------------------

    async def _deliveries(self, request: web.Request, session: Session) -> web.StreamResponse:
        q = request.query
        endpoint_id = _int_param(request, "endpoint")
        state_text = q.get("state", "").strip()
        try:
            state = DeliveryState(state_text) if state_text else None
        except ValueError:
            raise BadFilter(
                f"state: expected one of {', '.join(s.value for s in DeliveryState)}"
            ) from None
        since = _time_param(request, "since")
        until = _time_param(request, "until")
        page = await self.service.list_deliveries(
            session.scope,
            PageRequest(PAGE_SIZE, _int_param(request, "before")),
            endpoint_id=endpoint_id,
            state=state,
            since=since,
            until=until,
        )
        filters = {
            "endpoint": "" if endpoint_id is None else str(endpoint_id),
            "state": state_text,
            "since": q.get("since", "").strip(),
            "until": q.get("until", "").strip(),
        }
        older = None
        if page.next_before_id is not None:
            older = {k: v for k, v in filters.items() if v}
            older["before"] = str(page.next_before_id)
        context = {
            "deliveries": page.items,
            "filters": filters,
            "states": [s.value for s in DeliveryState],
            "older": older,
        }
        return self._render(request, "deliveries.html", context, session=session)

    async def _delivery(self, request: web.Request, session: Session) -> web.StreamResponse:
        delivery_id = path_id(request, "delivery")
        delivery = await self.service.get_delivery(session.scope, delivery_id)
        attempts = await self.service.attempts(session.scope, delivery_id)
        try:
            event = await self.service.get_event(session.scope, delivery.event_id)
        except NotFound:
            event = None  # removed by retention meanwhile; the delivery is still worth showing
        payload = None
        if event is not None:
            payload = orjson.dumps(event.payload, option=orjson.OPT_INDENT_2).decode()
        context = {
            "delivery": delivery,
            "attempts": attempts,
            "event": event,
            "payload": _preview(payload),
            "preview": _preview,
            "can_retry": delivery.state == DeliveryState.FAILED,
            "can_resend": delivery.state in (DeliveryState.DELIVERED, DeliveryState.FAILED),
        }
        return self._render(request, "delivery.html", context, session=session)


def _int_param(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name, "").strip()
    if not raw:
        return None
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18 or int(raw) < 1:
        raise BadFilter(f"{name}: expected a positive whole number, got {raw!r}")
    return int(raw)


def _time_param(request: web.Request, name: str) -> datetime | None:
    """An ISO 8601 time from the query; without an offset it is UTC."""
    raw = request.query.get(name, "").strip()
    if not raw:
        return None
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise BadFilter(
            f"{name}: expected an ISO 8601 time such as 2026-05-01T10:00 or "
            f"2026-05-01T10:00:00+02:00, got {raw!r}"
        ) from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _breaker(endpoint: Endpoint, now: datetime) -> str:
    until = endpoint.breaker_open_until
    if until is None:
        return "closed"
    if until > now:
        return f"open until {format_time(until)}"
    return "half-open (next attempt is the probe)"


def _preview(text: str | None) -> str | None:
    if text is None or len(text) <= BODY_PREVIEW_CHARS:
        return text
    return text[:BODY_PREVIEW_CHARS] + f"… ({len(text) - BODY_PREVIEW_CHARS} more characters)"
