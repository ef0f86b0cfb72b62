"""The web console's actions (hookd/console.py): the POST handlers, each doing one thing for a
session's scope and answering with a redirect that carries a flash message (post/redirect/get).
Logging in (the token checked against the tokens file, behind the signed login nonce) and out;
sending an endpoint a signed test event; enabling and disabling an endpoint; another attempt for
a delivery (retry a failed one, resend a delivered or failed one).
"""

from __future__ import annotations

import logging

from aiohttp import web

from hookd.console_session import (
    LOGIN_COOKIE,
    MAX_TOKEN_CHARS,
    PREFIX,
    SESSION_COOKIE,
    Flash,
    Session,
)
from hookd.console_view import ConsoleView, format_duration, path_id
from hookd.models import DeliveryState
from hookd.service import EndpointChanges, Selection, Service

log = logging.getLogger("hookd.console")

CONSOLE_TEST_WAIT_S = 5.0
"""How long "send test event" waits for the attempt's result before reporting it as pending."""


class ConsoleActions(ConsoleView):
    """The console's POST actions: part of Console (hookd/console.py), which sets `service`."""

    service: Service

    # -- login and logout ------------------------------------------------------------------

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

    # -- endpoints -------------------------------------------------------------------------

    async def _send_test(self, request: web.Request, session: Session) -> web.StreamResponse:
        endpoint_id = path_id(request, "endpoint")
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
                f"{format_duration(attempt.duration_s)} (delivery {delivery.id})",
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
        endpoint_id = path_id(request, "endpoint")
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

    async def _retry(self, request: web.Request, session: Session) -> web.StreamResponse:
        delivery_id = path_id(request, "delivery")
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
        delivery_id = path_id(request, "delivery")
        delivery = await self.service.resend(session.scope, delivery_id)
        if delivery.state == DeliveryState.PAUSED:
            text = (
                f"delivery {delivery_id} is paused: it is sent again when its endpoint is enabled"
            )
        else:
            text = f"delivery {delivery_id} queued to be sent again (same webhook-id)"
        return self._redirect(f"{PREFIX}/deliveries/{delivery_id}", Flash("ok", text))
