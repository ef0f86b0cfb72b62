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

This module keeps the set-up, the routes and the handling of errors; the rest lives in
hookd/console_session.py (sessions, cookies, CSRF tokens, login nonces, flash messages),
hookd/console_view.py (templates, rendering, redirects, security headers),
hookd/console_pages.py (the GET pages) and hookd/console_actions.py (the POST actions).
"""

from __future__ import annotations

import hmac
import logging
import secrets
from collections.abc import Awaitable, Callable
from importlib import resources

from aiohttp import web

from hookd.console_actions import CONSOLE_TEST_WAIT_S, ConsoleActions
from hookd.console_pages import BODY_PREVIEW_CHARS, PAGE_SIZE, BadFilter, ConsolePages
from hookd.console_session import (
    FLASH_COOKIE,
    LOGIN_COOKIE,
    MAX_TOKEN_CHARS,
    PREFIX,
    SESSION_COOKIE,
    Flash,
    Session,
    csrf_token,
)
from hookd.console_view import setup_templates
from hookd.errors import (
    DatabaseUnavailable,
    HookdError,
    InvalidEndpoint,
    SchemaMissing,
)
from hookd.service import Conflict, NotFound, Service
from hookd.tokens import TokenFile

__all__ = [
    "BODY_PREVIEW_CHARS",
    "CONSOLE_TEST_WAIT_S",
    "FLASH_COOKIE",
    "LOGIN_COOKIE",
    "MAX_TOKEN_CHARS",
    "PAGE_SIZE",
    "PREFIX",
    "SESSION_COOKIE",
    "BadFilter",
    "Console",
    "Flash",
    "Handler",
    "Session",
    "csrf_token",
    "setup_console",
]

log = logging.getLogger("hookd.console")


def setup_console(
    service: Service, tokens: TokenFile, *, secure_cookies: bool
) -> Callable[[web.Application], None]:
    """A set-up function for the API server: adds the console's routes under /console to an
    aiohttp application before it starts. `secure_cookies` marks the cookies Secure (for a
    console reached over HTTPS)."""
    return Console(service, tokens, secure_cookies=secure_cookies).install


Handler = Callable[[web.Request, Session], Awaitable[web.StreamResponse]]
"""A console handler that needs a session."""


class Console(ConsolePages, ConsoleActions):
    """The console's handlers over one Service and one tokens file."""

    def __init__(self, service: Service, tokens: TokenFile, *, secure_cookies: bool) -> None:
        self.service = service
        self.tokens = tokens
        self.secure_cookies = secure_cookies
        # Signs flash cookies and login nonces only: losing either at a restart costs a reload.
        self._key = secrets.token_bytes(32)
        self._css = resources.files("hookd").joinpath("templates/console/console.css").read_text()

    # -- set-up and routing ----------------------------------------------------------------

    def install(self, app: web.Application) -> None:
        """Add the templates and routes to `app` (before it starts)."""
        setup_templates(app)
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

    # -- error handling --------------------------------------------------------------------

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

    # -- the index, the style sheet, the login's errors ------------------------------------

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


# -- helpers -----------------------------------------------------------------------------------


def _unavailable(exc: HookdError) -> str:
    return f"{exc}; try again shortly"


def _back_for(path: str) -> str:
    """Where an action at `path` returns to: the page of the object it acted on."""
    head, _, _ = path.rstrip("/").rpartition("/")
    return head if head.startswith(PREFIX + "/") else PREFIX
