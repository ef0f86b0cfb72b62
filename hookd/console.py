"""The web console: server-rendered pages under /console on the API server (hookd/api.py).

Pages (GET) and actions (POST, each followed by a redirect back with a flash message: the
post/redirect/get pattern, so a reload never repeats an action):

    /console                           to the endpoints, or to the login form
    /console/login                     the login form; POST checks the token, sets the session
    /console/logout                    POST: clears the session cookie
    /console/endpoints                 endpoints with their health over the last hour
    /console/endpoints/{id}            one endpoint: details, overrides, health; actions:
        POST .../test                  a signed test event (waits up to CONSOLE_TEST_WAIT_S)
        POST .../enable, .../disable
    /console/deliveries                filtered by endpoint, state, since/until; "older" pages
    /console/deliveries/{id}           one delivery and its attempts; actions:
        POST .../retry                 another attempt for a failed (dead-lettered) delivery
        POST .../resend                another attempt for a delivered or failed delivery
    /console/static/console.css        the one style sheet

Authentication: the login form takes an API token (hookd/tokens.py). The session is an HttpOnly,
SameSite=Strict cookie holding the token (Secure with `[api] secure_cookies`), checked against the
tokens file on every request, so a token removed from the file ends its sessions at once. The token
is never put in a URL. A tenant token sees only its tenant: every call gets `Scope(token.tenant)`.

Forgery: every action form carries a CSRF token, an HMAC-SHA256 of the session token (so it needs
no server-side state and holds across daemons); a missing or wrong one is refused with 403. The
login form is protected by a nonce this process signed, in a SameSite=Strict cookie that the form
repeats (double submit), so another site cannot log a browser in with its own token (a login form
left open across a restart asks to try again).

Every page is rendered by Jinja2 with autoescaping, under a Content-Security-Policy that allows no
scripts at all. Errors of the service (NotFound, Conflict, InvalidInput, StoreUnavailable) become a
readable page or flash message; anything unexpected is logged and shown as a one-line error page.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import aiohttp_jinja2
import jinja2
import orjson
from aiohttp import web

from hookd.errors import (
    DatabaseUnavailable,
    HookdError,
    InvalidEndpoint,
    SchemaMissing,
)
from hookd.models import DeliveryState, Endpoint, EndpointStats
from hookd.service import (
    Conflict,
    EndpointChanges,
    NotFound,
    PageRequest,
    Scope,
    Selection,
    Service,
)
from hookd.tokens import ApiToken, TokenFile

log = logging.getLogger("hookd.console")

PREFIX = "/console"
SESSION_COOKIE = "hookd_session"
FLASH_COOKIE = "hookd_flash"
LOGIN_COOKIE = "hookd_login"
PAGE_SIZE = 50
"""Rows per page of the endpoint and delivery lists."""
CONSOLE_TEST_WAIT_S = 5.0
"""How long "send test event" waits for the attempt's result before reporting it as pending."""
BODY_PREVIEW_CHARS = 1000
"""How much of a response body or event payload a page shows."""
MAX_TOKEN_CHARS = 512
"""Longer form input is not a token; it is refused without hashing it."""

_CSRF_CONTEXT = b"hookd console csrf v1"
_ENV_KEY = web.AppKey[jinja2.Environment]("hookd_console_templates")

# Defence in depth behind autoescaping: no script runs on a console page, whatever it shows.
_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    # Pages show deliveries and payloads: no copy in shared or browser caches.
    "Cache-Control": "no-store",
}


def setup_console(
    service: Service, tokens: TokenFile, *, secure_cookies: bool
) -> Callable[[web.Application], None]:
    """A set-up function for the API server: adds the console's routes under /console to an
    aiohttp application before it starts. `secure_cookies` marks the cookies Secure (for a
    console reached over HTTPS)."""
    return Console(service, tokens, secure_cookies=secure_cookies).install


@dataclass(frozen=True, slots=True)
class Session:
    """A logged-in browser: its token, what the tokens file says about it, and its CSRF token."""

    token: ApiToken
    csrf: str

    @property
    def scope(self) -> Scope:
        return Scope(self.token.tenant)


@dataclass(frozen=True, slots=True)
class Flash:
    """A one-time message shown on the next page: `level` "ok" or "error"."""

    level: str
    text: str


class BadFilter(HookdError):
    """A query parameter of a console page is invalid."""


Handler = Callable[[web.Request, Session], Awaitable[web.StreamResponse]]
"""A console handler that needs a session."""


def csrf_token(session_token: str) -> str:
    """The CSRF token of a session: HMAC-SHA256 keyed by the session's API token, hex."""
    key = session_token.encode("utf-8", "surrogatepass")
    return hmac.new(key, _CSRF_CONTEXT, hashlib.sha256).hexdigest()


class Console:
    """The console's handlers over one Service and one tokens file."""

    def __init__(self, service: Service, tokens: TokenFile, *, secure_cookies: bool) -> None:
        self.service = service
        self.tokens = tokens
        self.secure_cookies = secure_cookies
        # Signs flash cookies and login nonces only: losing either at a restart costs a reload.
        self._key = secrets.token_bytes(32)
        self._css = resources.files("hookd").joinpath("templates/console/console.css").read_text()

    # -- set-up ----------------------------------------------------------------------------

    def install(self, app: web.Application) -> None:
        """Add the templates and routes to `app` (before it starts)."""
        aiohttp_jinja2.setup(
            app,
            app_key=_ENV_KEY,
            loader=jinja2.PackageLoader("hookd", "templates/console"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            default_helpers=False,
            filters=_FILTERS,
        )
        r = app.router
        r.add_get(PREFIX, self._index)
        r.add_get(PREFIX + "/", self._index)
        r.add_get(PREFIX + "/static/console.css", self._stylesheet)
        r.add_get(PREFIX + "/login", self._login_form)
        r.add_post(PREFIX + "/login", self._login_guarded)
        r.add_post(PREFIX + "/logout", self._action(self._logout))
        r.add_get(PREFIX + "/endpoints", self._page(self._endpoints))
        r.add_get(PREFIX + "/endpoints/{id}", self._page(self._endpoint))
        r.add_post(PREFIX + "/endpoints/{id}/test", self._action(self._send_test))
        r.add_post(PREFIX + "/endpoints/{id}/enable", self._action(self._enable))
        r.add_post(PREFIX + "/endpoints/{id}/disable", self._action(self._disable))
        r.add_get(PREFIX + "/deliveries", self._page(self._deliveries))
        r.add_get(PREFIX + "/deliveries/{id}", self._page(self._delivery))
        r.add_post(PREFIX + "/deliveries/{id}/retry", self._action(self._retry))
        r.add_post(PREFIX + "/deliveries/{id}/resend", self._action(self._resend))
        # Last: any other path under /console is an HTML 404, not the API's problem document.
        r.add_get(PREFIX + "/{tail:.*}", self._page(self._no_such_page))

    # -- sessions and cookies --------------------------------------------------------------

    def _session(self, request: web.Request) -> Session | None:
        """The request's session, or None. Raises ConfigError if the tokens file is unreadable."""
        raw = request.cookies.get(SESSION_COOKIE)
        if not raw or len(raw) > MAX_TOKEN_CHARS:
            return None
        token = self.tokens.verify(raw)
        if token is None:
            return None
        return Session(token, csrf_token(raw))

    def _set_cookie(
        self, response: web.StreamResponse, name: str, value: str, *, max_age: int | None = None
    ) -> None:
        response.set_cookie(
            name,
            value,
            path=PREFIX,
            max_age=max_age,
            httponly=True,
            samesite="Strict",
            secure=self.secure_cookies,
        )

    def _clear_cookie(self, response: web.StreamResponse, name: str) -> None:
        response.del_cookie(
            name, path=PREFIX, httponly=True, samesite="Strict", secure=self.secure_cookies
        )

    def _flash_value(self, flash: Flash) -> str:
        body = base64.urlsafe_b64encode(orjson.dumps([flash.level, flash.text])).decode()
        return f"{body}.{self._sign('flash', body)}"

    def _read_flash(self, request: web.Request) -> Flash | None:
        raw = request.cookies.get(FLASH_COOKIE, "")
        body, _, mac = raw.partition(".")
        if not body or not hmac.compare_digest(mac, self._sign("flash", body)):
            return None
        try:
            level, text = orjson.loads(base64.urlsafe_b64decode(body))
        except (ValueError, binascii.Error, orjson.JSONDecodeError):
            return None
        return Flash(str(level), str(text))

    def _redirect(self, location: str, flash: Flash | None = None) -> web.Response:
        """303 See Other to `location` (a path of ours), carrying `flash` for the next page."""
        response = web.Response(status=303, headers={"Location": location})
        if flash is not None:
            self._set_cookie(response, FLASH_COOKIE, self._flash_value(flash), max_age=60)
        _secure(response)
        return response

    # -- rendering -------------------------------------------------------------------------

    def _render(
        self,
        request: web.Request,
        template: str,
        context: Mapping[str, Any],
        *,
        session: Session | None,
        status: int = 200,
    ) -> web.Response:
        flash = self._read_flash(request)
        response = aiohttp_jinja2.render_template(
            template,
            request,
            {"session": session, "flash": flash, "prefix": PREFIX, **context},
            app_key=_ENV_KEY,
            status=status,
        )
        if flash is not None or FLASH_COOKIE in request.cookies:
            self._clear_cookie(response, FLASH_COOKIE)
        _secure(response)
        return response

    def _error(
        self, request: web.Request, status: int, title: str, message: str, session: Session | None
    ) -> web.Response:
        context = {"title": title, "message": message, "status": status}
        return self._render(request, "error.html", context, session=session, status=status)

    def _page(self, page: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        """A GET handler: needs a session (else to the login form); errors become error pages."""

        async def handle(request: web.Request) -> web.StreamResponse:
            session: Session | None = None
            try:
                session = self._session(request)
                if session is None:
                    return self._redirect(PREFIX + "/login")
                return await page(request, session)
            except NotFound as exc:
                return self._error(request, 404, "Not found", str(exc), session)
            except (BadFilter, InvalidEndpoint) as exc:
                return self._error(request, 400, "Invalid request", str(exc), session)
            except Conflict as exc:
                return self._error(request, 409, "Not possible now", str(exc), session)
            except (DatabaseUnavailable, SchemaMissing) as exc:
                return self._error(request, 503, "Database unavailable", _unavailable(exc), session)
            except HookdError as exc:
                # ConfigError (the tokens file), PermissionDenied (grants): one line, safe to show.
                log.warning("console: %s %s: %s", request.method, request.path, exc)
                return self._error(request, 503, "Console unavailable", str(exc), session)
            except Exception:
                log.exception("console: %s %s failed", request.method, request.path)
                return self._error(
                    request, 500, "Internal error", "the request failed; see the daemon's log", None
                )

        return handle

    def _action(self, action: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        """A POST handler: needs a session and its CSRF token (else 403). The action returns its
        redirect; service errors become an error flash on the page the action came from."""

        async def handle(request: web.Request) -> web.StreamResponse:
            session: Session | None = None
            back = _back_for(request.path)
            try:
                session = self._session(request)
                form = await request.post()
                if session is None:
                    return self._redirect(
                        PREFIX + "/login", Flash("error", "your session has ended; log in again")
                    )
                sent = form.get("csrf")
                if not isinstance(sent, str) or not hmac.compare_digest(sent, session.csrf):
                    return self._error(
                        request,
                        403,
                        "Forbidden",
                        "the form did not come from this console session; reload the page and "
                        "try again",
                        session,
                    )
                return await action(request, session)
            except NotFound as exc:
                return self._error(request, 404, "Not found", str(exc), session)
            except (Conflict, InvalidEndpoint, BadFilter) as exc:
                return self._redirect(back, Flash("error", str(exc)))
            except (DatabaseUnavailable, SchemaMissing) as exc:
                return self._redirect(back, Flash("error", _unavailable(exc)))
            except HookdError as exc:
                log.warning("console: %s %s: %s", request.method, request.path, exc)
                return self._error(request, 503, "Console unavailable", str(exc), session)
            except Exception:
                log.exception("console: %s %s failed", request.method, request.path)
                return self._error(
                    request, 500, "Internal error", "the action failed; see the daemon's log", None
                )

        return handle

    # -- login -----------------------------------------------------------------------------

    async def _index(self, request: web.Request) -> web.StreamResponse:
        try:
            session = self._session(request)
        except HookdError as exc:
            return self._error(request, 503, "Console unavailable", str(exc), None)
        return self._redirect(PREFIX + ("/endpoints" if session else "/login"))

    async def _stylesheet(self, request: web.Request) -> web.StreamResponse:
        return web.Response(
            text=self._css, content_type="text/css", headers={"Cache-Control": "max-age=3600"}
        )

    async def _login_form(self, request: web.Request) -> web.StreamResponse:
        return self._login_page(request, status=200)

    def _sign(self, purpose: str, value: str) -> str:
        return hmac.new(self._key, f"{purpose}:{value}".encode(), hashlib.sha256).hexdigest()

    def _new_nonce(self) -> str:
        value = secrets.token_urlsafe(18)
        return f"{value}.{self._sign('login', value)}"

    def _nonce_ok(self, nonce: object, cookie: str) -> bool:
        """The form's nonce equals the cookie's, and this process made it."""
        if not isinstance(nonce, str) or not cookie or not hmac.compare_digest(nonce, cookie):
            return False
        value, _, mac = nonce.partition(".")
        return hmac.compare_digest(mac, self._sign("login", value))

    def _login_page(self, request: web.Request, *, status: int, error: str = "") -> web.Response:
        nonce = self._new_nonce()
        response = self._render(
            request, "login.html", {"nonce": nonce, "error": error}, session=None, status=status
        )
        self._set_cookie(response, LOGIN_COOKIE, nonce)
        return response

    async def _login_guarded(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self._login(request)
        except HookdError as exc:
            log.warning("console: login: %s", exc)
            return self._error(request, 503, "Console unavailable", str(exc), None)
        except Exception:
            log.exception("console: login failed")
            return self._error(
                request, 500, "Internal error", "the login failed; see the daemon's log", None
            )

    async def _login(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        token = form.get("token")
        if not self._nonce_ok(form.get("nonce"), request.cookies.get(LOGIN_COOKIE, "")):
            return self._login_page(
                request,
                status=403,
                error="the login form expired or came from another site; try again",
            )
        if not isinstance(token, str) or not token.strip():
            return self._login_page(request, status=400, error="enter an API token")
        token = token.strip()
        found = self.tokens.verify(token) if len(token) <= MAX_TOKEN_CHARS else None
        if found is None:
            log.warning("console: login refused (unknown token) from %s", request.remote)
            return self._login_page(
                request, status=401, error="unknown token: check it against `api.tokens_file`"
            )
        log.info("console: %s logged in from %s", found.name, request.remote)
        response = self._redirect(PREFIX + "/endpoints")
        self._set_cookie(response, SESSION_COOKIE, token)
        self._clear_cookie(response, LOGIN_COOKIE)
        return response

    async def _logout(self, request: web.Request, session: Session) -> web.StreamResponse:
        response = self._redirect(PREFIX + "/login", Flash("ok", "logged out"))
        self._clear_cookie(response, SESSION_COOKIE)
        return response

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
        endpoint_id = _path_id(request, "endpoint")
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

    async def _send_test(self, request: web.Request, session: Session) -> web.StreamResponse:
        endpoint_id = _path_id(request, "endpoint")
        back = f"{PREFIX}/endpoints/{endpoint_id}"
        result = await self.service.send_test(session.scope, endpoint_id, CONSOLE_TEST_WAIT_S)
        delivery, attempt = result.delivery, result.attempt
        if attempt is None:
            flash = Flash(
                "error",
                f"test event sent (delivery {delivery.id}, {result.webhook_id}); no answer within "
                f"{CONSOLE_TEST_WAIT_S:g} s, it is {delivery.state}",
            )
        elif attempt.status is not None and 200 <= attempt.status < 300:
            flash = Flash(
                "ok",
                f"test event delivered: HTTP {attempt.status} in "
                f"{_format_duration(attempt.duration_s)} (delivery {delivery.id})",
            )
        else:
            answer = f"HTTP {attempt.status}" if attempt.status is not None else attempt.error
            flash = Flash("error", f"test event failed: {answer} (delivery {delivery.id})")
        return self._redirect(back, flash)

    async def _enable(self, request: web.Request, session: Session) -> web.StreamResponse:
        return await self._set_enabled(request, session, enabled=True)

    async def _disable(self, request: web.Request, session: Session) -> web.StreamResponse:
        return await self._set_enabled(request, session, enabled=False)

    async def _set_enabled(
        self, request: web.Request, session: Session, *, enabled: bool
    ) -> web.StreamResponse:
        endpoint_id = _path_id(request, "endpoint")
        await self.service.update_endpoint(
            session.scope, endpoint_id, EndpointChanges(enabled=enabled)
        )
        what = (
            "enabled: its paused deliveries are pending again"
            if enabled
            else "disabled: its pending deliveries are paused"
        )
        return self._redirect(
            f"{PREFIX}/endpoints/{endpoint_id}", Flash("ok", f"endpoint {endpoint_id} {what}")
        )

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
        delivery_id = _path_id(request, "delivery")
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

    async def _retry(self, request: web.Request, session: Session) -> web.StreamResponse:
        delivery_id = _path_id(request, "delivery")
        back = f"{PREFIX}/deliveries/{delivery_id}"
        result = await self.service.retry(session.scope, Selection(ids=(delivery_id,)))
        if result.count == 0:
            # The service selects only failed deliveries: this one changed state meanwhile.
            return self._redirect(
                back, Flash("error", f"delivery {delivery_id} is not failed: nothing to retry")
            )
        if result.paused:
            return self._redirect(
                back,
                Flash(
                    "ok",
                    f"delivery {delivery_id} is paused: it gets another attempt when its "
                    "endpoint is enabled",
                ),
            )
        return self._redirect(
            back, Flash("ok", f"delivery {delivery_id} queued for another attempt")
        )

    async def _resend(self, request: web.Request, session: Session) -> web.StreamResponse:
        delivery_id = _path_id(request, "delivery")
        delivery = await self.service.resend(session.scope, delivery_id)
        if delivery.state == DeliveryState.PAUSED:
            text = (
                f"delivery {delivery_id} is paused: it is sent again when its endpoint is enabled"
            )
        else:
            text = f"delivery {delivery_id} queued to be sent again (same webhook-id)"
        return self._redirect(f"{PREFIX}/deliveries/{delivery_id}", Flash("ok", text))


# -- helpers -----------------------------------------------------------------------------------


def _secure(response: web.StreamResponse) -> None:
    for name, value in _SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)


def _unavailable(exc: HookdError) -> str:
    return f"{exc}; try again shortly"


def _back_for(path: str) -> str:
    """Where an action at `path` returns to: the page of the object it acted on."""
    head, _, _ = path.rstrip("/").rpartition("/")
    return head if head.startswith(PREFIX + "/") else PREFIX


def _path_id(request: web.Request, what: str) -> int:
    raw = request.match_info["id"]
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise NotFound(f"{what} {raw} not found")
    return int(raw)


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
        return f"open until {_format_time(until)}"
    return "half-open (next attempt is the probe)"


def _preview(text: str | None) -> str | None:
    if text is None or len(text) <= BODY_PREVIEW_CHARS:
        return text
    return text[:BODY_PREVIEW_CHARS] + f"… ({len(text) - BODY_PREVIEW_CHARS} more characters)"


_MISSING = "\N{EN DASH}"
"""Shown where a value is missing (no attempt yet, no duration)."""


def _format_time(value: datetime | None) -> str:
    if value is None:
        return _MISSING
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _format_duration(seconds: float | None) -> str:
    if seconds is None:
        return _MISSING
    if seconds < 1.0:
        return f"{seconds * 1000:.0f} ms"
    return f"{seconds:.2f} s"


def _format_rate(rate: float | None) -> str:
    return _MISSING if rate is None else f"{rate * 100:.1f} %"


_FILTERS: dict[str, Callable[..., str]] = {
    "ts": _format_time,
    "duration": _format_duration,
    "rate": _format_rate,
}
"""Jinja2 filters of the templates: `ts` (UTC time), `duration` (seconds), `rate` (0..1)."""
