"""The web console over plain HTTP, against a real daemon's API server and database: the cookie
flags, the login form's forgery check, sessions that end with their token, tenant scope on
actions, and readable errors for bad input. (The browser walk-through is tests/e2e/test_console_browser.py.)

Cookies are sent and read as headers here, so every attribute the server sets is checked as sent.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from hookd.console import PAGE_SIZE, csrf_token

from support.api import OPERATOR, api_daemon
from support.daemon import add_endpoint, publish, wait_until
from support.receiver import Receiver

_NONCE = re.compile(r'name="nonce" value="([^"]+)"')
_DELIVERY_ROW = re.compile(r'<tr data-delivery="(\d+)">')
_OLDER = re.compile(r'<a rel="next" href="([^"]+)">Older deliveries')


@asynccontextmanager
async def _console(
    dsn: str, tmp_path: Path, **api: Any
) -> AsyncIterator[tuple[str, dict[str, str], aiohttp.ClientSession]]:
    """A daemon with the console; yields its base URL, {token name: token} and a client session
    that keeps no cookies of its own."""
    async with (
        api_daemon(dsn, tmp_path, tenants=("acme",), overrides={"api": api}) as (daemon, clients),
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http,
    ):
        assert daemon.api is not None
        tokens = {name: c.token for name, c in clients.items() if c.token is not None}
        yield f"http://127.0.0.1:{daemon.api.port}", tokens, http


def _set_cookies(resp: aiohttp.ClientResponse) -> dict[str, Any]:
    """Name -> Morsel of every Set-Cookie header of `resp`."""
    jar: SimpleCookie = SimpleCookie()
    for header in resp.headers.getall("Set-Cookie", []):
        jar.load(header)
    return dict(jar)


async def _login(http: aiohttp.ClientSession, base: str, token: str) -> aiohttp.ClientResponse:
    """GET the form, POST it back with its nonce cookie; returns the POST's (unfollowed) answer."""
    async with http.get(base + "/console/login") as form:
        assert form.status == 200
        nonce = _NONCE.search(await form.text())
        assert nonce, "no nonce in the login form"
        cookie = _set_cookies(form)["hookd_login"].value
    async with http.post(
        base + "/console/login",
        data={"nonce": nonce.group(1), "token": token},
        headers={"Cookie": f"hookd_login={cookie}"},
        allow_redirects=False,
    ) as resp:
        await resp.read()
        return resp


async def test_secure_cookies_are_http_only_strict_and_secure(dsn: str, tmp_path: Path) -> None:
    async with _console(dsn, tmp_path, secure_cookies=True) as (base, tokens, http):
        async with http.get(base + "/console/login") as form:
            login = _set_cookies(form)["hookd_login"]
        resp = await _login(http, base, tokens[OPERATOR])
        assert resp.status == 303, resp.status
        assert resp.headers["Location"] == "/console/endpoints"
        session = _set_cookies(resp)["hookd_session"]
        assert session.value == tokens[OPERATOR]
        for morsel in (login, session):
            assert morsel["httponly"] is True, morsel.OutputString()
            assert morsel["secure"] is True, morsel.OutputString()
            assert morsel["samesite"] == "Strict", morsel.OutputString()
            assert morsel["path"] == "/console", morsel.OutputString()


async def test_cookies_are_not_secure_unless_configured(dsn: str, tmp_path: Path) -> None:
    async with _console(dsn, tmp_path) as (base, tokens, http):
        session = _set_cookies(await _login(http, base, tokens[OPERATOR]))["hookd_session"]
        assert session["httponly"] is True and session["samesite"] == "Strict"
        assert not session["secure"], session.OutputString()


async def test_login_form_posted_from_elsewhere_is_refused(dsn: str, tmp_path: Path) -> None:
    """Without the SameSite=Strict nonce cookie (a form on another site), no session is made."""
    async with _console(dsn, tmp_path) as (base, tokens, http):
        for cookie in ({}, {"Cookie": "hookd_login=guessed"}):
            async with http.post(
                base + "/console/login",
                data={"nonce": "guessed", "token": tokens[OPERATOR]},
                headers=cookie,
                allow_redirects=False,
            ) as resp:
                assert resp.status == 403, (cookie, resp.status)
                assert "hookd_session" not in _set_cookies(resp)
                assert "came from another site" in await resp.text()


async def test_a_session_ends_when_its_token_leaves_the_file(dsn: str, tmp_path: Path) -> None:
    async with _console(dsn, tmp_path) as (base, tokens, http):
        cookie = {"Cookie": f"hookd_session={tokens['acme']}"}
        async with http.get(base + "/console/endpoints", headers=cookie) as resp:
            assert resp.status == 200
        tokens_file = tmp_path / "api-tokens"
        kept = [line for line in tokens_file.read_text().splitlines() if "tenant=acme" not in line]
        tokens_file.write_text("\n".join(kept) + "\n", encoding="utf-8")
        async with http.get(
            base + "/console/endpoints", headers=cookie, allow_redirects=False
        ) as resp:
            assert resp.status == 303
            assert resp.headers["Location"] == "/console/login"


async def test_a_tenant_cannot_act_on_another_tenants_endpoint(dsn: str, tmp_path: Path) -> None:
    """A valid session and CSRF token of tenant acme, aimed at an endpoint without a tenant: 404,
    and nothing changes."""
    other_id, _ = await add_endpoint(dsn, "http://127.0.0.1:9/other")
    async with _console(dsn, tmp_path) as (base, tokens, http):
        acme = tokens["acme"]
        for action in ("disable", "test"):
            async with http.post(
                f"{base}/console/endpoints/{other_id}/{action}",
                data={"csrf": csrf_token(acme)},
                headers={"Cookie": f"hookd_session={acme}"},
                allow_redirects=False,
            ) as resp:
                assert resp.status == 404, (action, resp.status)
                assert resp.content_type == "text/html"
    conn = await asyncpg.connect(dsn)
    try:
        assert await conn.fetchval("SELECT enabled FROM hookd.endpoints WHERE id = $1", other_id)
        assert await conn.fetchval("SELECT count(*) FROM hookd.deliveries") == 0
    finally:
        await conn.close()


@pytest.mark.parametrize(
    ("path", "status", "says"),
    [
        ("/console/deliveries?endpoint=abc", 400, "endpoint: expected a positive whole number"),
        ("/console/deliveries?before=0", 400, "before: expected a positive whole number"),
        ("/console/deliveries?since=yesterday", 400, "since: expected an ISO 8601 time"),
        ("/console/deliveries?state=lost", 400, "state: expected one of"),
        ("/console/deliveries/12345678901234567890", 404, "not found"),
        ("/console/endpoints/77", 404, "no endpoint with id 77"),
        ("/console/no-such-page", 404, "no console page at /console/no-such-page"),
    ],
)
async def test_bad_input_is_a_readable_page(
    dsn: str, tmp_path: Path, path: str, status: int, says: str
) -> None:
    async with _console(dsn, tmp_path) as (base, tokens, http):
        cookie = {"Cookie": f"hookd_session={tokens[OPERATOR]}"}
        async with http.get(base + path, headers=cookie) as resp:
            text = await resp.text()
            assert resp.status == status, text[:500]
            assert resp.content_type == "text/html"
            assert says in text, text[:2000]
            assert "Traceback" not in text


async def test_deliveries_page_older_and_keep_the_filters(dsn: str, tmp_path: Path) -> None:
    """Keyset pages: every delivery of the endpoint exactly once, newest first, the filter kept on
    the "older" link; a delivery of another endpoint never shows."""
    total = PAGE_SIZE + 5
    async with Receiver() as receiver, _console(dsn, tmp_path) as (base, tokens, http):
        endpoint_id, _ = await add_endpoint(dsn, receiver.url_for("/mine"), ("order.*",))
        await add_endpoint(dsn, receiver.url_for("/other"), ("user.*",))
        conn = await asyncpg.connect(dsn)
        try:
            for i in range(total):
                await publish(conn, "order.paid", {"i": i})
            await publish(conn, "user.created", {"i": 0})
            await wait_until(
                conn, "SELECT count(*) = $1 FROM hookd.deliveries", total + 1, timeout_s=20
            )
            mine = await conn.fetchval(
                "SELECT array_agg(id ORDER BY id DESC) FROM hookd.deliveries WHERE endpoint_id = $1",
                endpoint_id,
            )
        finally:
            await conn.close()
        cookie = {"Cookie": f"hookd_session={tokens[OPERATOR]}"}
        seen: list[int] = []
        pages = 0
        url: str | None = f"{base}/console/deliveries?endpoint={endpoint_id}"
        while url is not None:
            pages += 1
            assert pages <= 3, "more pages than rows allow"
            async with http.get(url, headers=cookie) as resp:
                assert resp.status == 200
                text = await resp.text()
            seen += [int(i) for i in _DELIVERY_ROW.findall(text)]
            older = _OLDER.search(text)
            url = base + older.group(1).replace("&amp;", "&") if older else None
            if url is not None:
                assert f"endpoint={endpoint_id}" in url, url
        assert pages == 2
        assert seen == list(mine), seen


async def test_the_endpoint_page_shows_its_payload_filter_escaped(dsn: str, tmp_path: Path) -> None:
    async with _console(dsn, tmp_path) as (base, tokens, http):
        headers = {"Authorization": f"Bearer {tokens[OPERATOR]}"}
        body = {"url": "http://127.0.0.1:9/h", "filter": '$.tag == "<b>x</b>"'}
        async with http.post(base + "/v1/endpoints", json=body, headers=headers) as resp:
            assert resp.status == 201, await resp.text()
            ep_id = (await resp.json())["id"]
        cookie = {"Cookie": f"hookd_session={tokens[OPERATOR]}"}
        async with http.get(f"{base}/console/endpoints/{ep_id}", headers=cookie) as resp:
            text = await resp.text()
            assert resp.status == 200, text[:500]
    expected = "($.&#34;tag&#34; == &#34;&lt;b&gt;x&lt;/b&gt;&#34;)"
    assert f'<td id="filter"><code>{expected}</code></td>' in text, text
