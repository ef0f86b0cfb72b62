"""The web console's rendering (hookd/console.py): the Jinja2 templates and their filters, pages
and error pages with the flash message of the request, redirects carrying the next one, and the
security headers every console response gets (a Content-Security-Policy that allows no scripts at
all, no framing, no caching). Also the parsing of an object's id from the path, which both pages
and actions use.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web

from hookd.console_session import (
    FLASH_COOKIE,
    LOGIN_COOKIE,
    PREFIX,
    ConsoleSessions,
    Flash,
    Session,
)
from hookd.service import NotFound

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


def setup_templates(app: web.Application) -> None:
    """Add the console's templates to `app` (before it starts)."""
    aiohttp_jinja2.setup(
        app,
        app_key=_ENV_KEY,
        loader=jinja2.PackageLoader("hookd", "templates/console"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        default_helpers=False,
        filters=_FILTERS,
    )


class ConsoleView(ConsoleSessions):
    """The console's rendering: part of Console (hookd/console.py)."""

    def _redirect(self, location: str, flash: Flash | None = None) -> web.Response:
        """303 See Other to `location` (a path of ours), carrying `flash` for the next page."""
        response = web.Response(status=303, headers={"Location": location})
        if flash is not None:
            self._set_cookie(response, FLASH_COOKIE, self._flash_value(flash), max_age=60)
        _secure(response)
        return response

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

    def _login_page(self, request: web.Request, *, status: int, error: str = "") -> web.Response:
        nonce = self._new_nonce()
        response = self._render(
            request, "login.html", {"nonce": nonce, "error": error}, session=None, status=status
        )
        self._set_cookie(response, LOGIN_COOKIE, nonce)
        return response


def _secure(response: web.StreamResponse) -> None:
    for name, value in _SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)


def path_id(request: web.Request, what: str) -> int:
    raw = request.match_info["id"]
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise NotFound(f"{what} {raw} not found")
    return int(raw)


_MISSING = "\N{EN DASH}"
"""Shown where a value is missing (no attempt yet, no duration)."""


def format_time(value: datetime | None) -> str:
    if value is None:
        return _MISSING
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return _MISSING
    if seconds < 1.0:
        return f"{seconds * 1000:.0f} ms"
    return f"{seconds:.2f} s"


def _format_rate(rate: float | None) -> str:
    return _MISSING if rate is None else f"{rate * 100:.1f} %"


_FILTERS: dict[str, Callable[..., str]] = {
    "ts": format_time,
    "duration": format_duration,
    "rate": _format_rate,
}
"""Jinja2 filters of the templates: `ts` (UTC time), `duration` (seconds), `rate` (0..1)."""
