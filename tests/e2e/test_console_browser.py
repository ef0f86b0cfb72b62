"""The web console in a real browser: Chromium (Debian's) driven by Playwright, against a real daemon.

The daemon runs as a child process with the API server on (a tokens file in tmp_path), on a real
database, delivering to a real receiver on loopback: one endpoint answers 500 (with a `<script>` in
its body) and allows one attempt, so its delivery is dead-lettered at once; another answers 204 and
has a `<script>` in its URL. The browser logs in with a token, finds both endpoints, follows the
failing one to its dead letters and the attempt's 500, retries it once the receiver answers 200 and
sees it delivered, resends it, sends a test event to the healthy endpoint, disables and enables it,
and logs out; a forged form without the CSRF token is refused; a tenant's token sees only its
tenant; while the daemon's database is unreachable the console says so. Every page is screenshotted into tests/artifacts/<test name>/ (the path is printed).

Every wait is bounded: Playwright's own timeouts (a few seconds, tests/support/browser.py), the
receiver's waits, and a reload loop with a deadline where the page has to catch up with the
database (an outcome is written a moment after the receiver answered).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from playwright.async_api import BrowserContext, Page, expect

from hookd import tokens
from hookd.signing import generate_secret
from hookd.store import Store

from support.browser import Screenshots, chromium, new_context
from support.daemon import publish, wait_until
from support.proc import DaemonProcess, write_config
from support.receiver import BODY, Receiver
from support.tcpproxy import TcpProxy

pytestmark = pytest.mark.timeout(180)

SCRIPT_IN_BODY = "<script>window.__pwned = 'body'</script> upstream exploded"
SCRIPT_IN_URL = "<script>window.__pwned='url'</script>"
SCRIPT_IN_DESCRIPTION = "<script>window.__pwned = 'description'</script> billing hooks"
_API_LINE = re.compile(r"operator API on (http://[0-9.]+:\d+)")


async def _add_endpoint(
    dsn: str,
    url: str,
    *,
    tenant: str | None = None,
    settings: dict[str, Any] | None = None,
    description: str | None = None,
) -> int:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
    assert pool is not None
    try:
        endpoint = await Store(pool).add_endpoint(
            url, generate_secret(), ("*",), tenant, settings or {}, description=description
        )
    finally:
        await pool.close()
    return endpoint.id


@asynccontextmanager
async def _console_daemon(dsn: str, tmp_path: Path, token_lines: list[str]) -> AsyncIterator[str]:
    """A daemon with the API (and so the console) on a free port, reaching its database at `dsn`;
    yields the base URL."""
    tokens_file = tmp_path / "tokens"
    tokens_file.write_text("\n".join(token_lines) + "\n", encoding="utf-8")
    cfg = write_config(
        tmp_path / "hookd.toml",
        {
            "api": {"port": 0, "tokens_file": str(tokens_file)},
            # A database outage must show as a page within Playwright's patience.
            "database": {"connect_timeout_s": 2.0},
        },
    )
    async with DaemonProcess(dsn, cfg, name="hookd-console") as daemon:
        line = await daemon.wait_for_line("operator API on", 10)
        match = _API_LINE.search(line)
        assert match, f"no API address in {line!r}"
        yield match.group(1)


async def _row_state(page: Page, delivery_id: int) -> str:
    return (await page.locator(f'tr[data-delivery="{delivery_id}"] td.state').inner_text()).strip()


async def _reload_until_heading(page: Page, want: str, timeout_s: float) -> None:
    """Reload the page until its heading reads `want`, within `timeout_s`."""
    heading = ""
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                heading = (await page.locator("h1").inner_text()).strip()
                if heading == want:
                    return
                await asyncio.sleep(0.1)  # between reloads: the pool reconnects on demand
                await page.reload()
    except TimeoutError:
        raise AssertionError(
            f"page heading still {heading!r}, not {want!r}, after {timeout_s}s"
        ) from None


async def _reload_until_state(page: Page, want: str, timeout_s: float) -> None:
    """Reload the page until its delivery state reads `want` (the outcome is written a moment after
    the receiver answered), within `timeout_s`."""
    state = ""
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                state = (await page.locator("#state").inner_text()).strip()
                if state.startswith(want):
                    return
                await asyncio.sleep(0.1)  # between reloads: the database has no push to the page
                await page.reload()
    except TimeoutError:
        raise AssertionError(
            f"delivery state still {state!r}, not {want!r}, after {timeout_s}s"
        ) from None


def _watch_urls(context: BrowserContext, seen: list[str]) -> None:
    """Add every URL the context requests (navigations, redirects, the style sheet) to `seen`."""
    context.on("request", lambda request: seen.append(request.url))


async def test_console_in_a_browser(
    dsn: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    operator_token = tokens.generate()
    tenant_token = tokens.generate()
    token_lines = [
        tokens.line_for("ops", operator_token),
        tokens.line_for("acme-app", tenant_token, tenant="acme"),
    ]
    shots = Screenshots(request.node.name)
    urls: list[str] = []
    pages_html: list[str] = []
    print(f"console screenshots: {shots.directory}")

    async with Receiver() as receiver:
        receiver.script("/failing", [(BODY, 500, SCRIPT_IN_BODY)])
        failing_id = await _add_endpoint(
            dsn, receiver.url_for("/failing"), settings={"retry_max_attempts": 1}
        )
        healthy_id = await _add_endpoint(
            dsn,
            receiver.url_for("/healthy?tag=" + SCRIPT_IN_URL),
            description=SCRIPT_IN_DESCRIPTION,
        )
        acme_id = await _add_endpoint(dsn, receiver.url_for("/acme"), tenant="acme")

        conn = await asyncpg.connect(dsn)
        try:
            # The daemon reaches the database through a proxy the test can break.
            async with (
                TcpProxy.to_postgres(dsn) as proxy,
                _console_daemon(proxy.dsn_through(dsn), tmp_path, token_lines) as base,
            ):
                event_id = await publish(conn, "order.paid", {"order": 1})
                await publish(conn, "order.paid", {"order": 2}, tenant="acme")
                failed_id: int = await wait_until(
                    conn,
                    "SELECT id FROM hookd.deliveries WHERE endpoint_id = $1 AND event_id = $2"
                    " AND state = 'failed'",
                    failing_id,
                    event_id,
                )
                await wait_until(
                    conn,
                    "SELECT count(*) = 2 FROM hookd.deliveries WHERE state = 'delivered'",
                )

                async with chromium() as browser:
                    context = await new_context(browser)
                    _watch_urls(context, urls)
                    page = await context.new_page()

                    async def shot(name: str) -> None:
                        pages_html.append(await page.content())
                        # No page runs a script: neither one it shows as text nor any other.
                        assert await page.locator("script").count() == 0, name
                        await shots.take(page, name)

                    # -- log in ------------------------------------------------------------------
                    await page.goto(base + "/console")
                    await expect(page).to_have_url(base + "/console/login")
                    await shot("login")
                    await page.fill("#token", "hkd_not-a-token")
                    await page.click("form.login button")
                    await expect(page.locator(".flash.error")).to_contain_text("unknown token")
                    await page.fill("#token", operator_token)
                    await page.click("form.login button")
                    await expect(page).to_have_url(base + "/console/endpoints")
                    session = [c for c in await context.cookies() if c["name"] == "hookd_session"]
                    assert len(session) == 1, await context.cookies()
                    assert session[0]["httpOnly"] is True
                    assert session[0]["sameSite"] == "Strict"
                    assert session[0]["path"] == "/console"
                    # HttpOnly: the page's own scripts cannot read it.
                    assert operator_token not in await page.evaluate("document.cookie")

                    # -- endpoints ---------------------------------------------------------------
                    table = page.locator("#endpoints")
                    for endpoint_id in (failing_id, healthy_id, acme_id):
                        await expect(
                            table.locator(f'tr[data-endpoint="{endpoint_id}"]')
                        ).to_be_visible()
                    healthy_row = table.locator(f'tr[data-endpoint="{healthy_id}"]')
                    # The URL's <script> is shown as text, not run.
                    await expect(healthy_row.locator("td.url")).to_contain_text(SCRIPT_IN_URL)
                    await expect(healthy_row).to_contain_text(SCRIPT_IN_DESCRIPTION)
                    failing_row = table.locator(f'tr[data-endpoint="{failing_id}"]')
                    await expect(failing_row).to_contain_text("500")
                    await expect(healthy_row).to_contain_text("204")
                    await expect(healthy_row).to_contain_text("100.0 %")
                    await shot("endpoints")

                    # -- the failing endpoint and its dead letters -------------------------------
                    await failing_row.locator("td a").first.click()
                    await expect(page).to_have_url(f"{base}/console/endpoints/{failing_id}")
                    await expect(page.locator("#settings")).to_contain_text("retry_max_attempts")
                    await shot("endpoint-failing")
                    await page.locator(".actions").get_by_role("link", name="Dead letters").click()
                    await expect(page).to_have_url(
                        f"{base}/console/deliveries?endpoint={failing_id}&state=failed"
                    )
                    rows = page.locator("#deliveries tbody tr")
                    await expect(rows).to_have_count(1)
                    assert await _row_state(page, failed_id) == "failed"
                    await shot("deliveries-failed")

                    # -- the failed delivery's attempt -------------------------------------------
                    await page.locator(f'tr[data-delivery="{failed_id}"] td a').first.click()
                    await expect(page).to_have_url(f"{base}/console/deliveries/{failed_id}")
                    attempts = page.locator("#attempts tbody tr")
                    await expect(attempts).to_have_count(1)
                    await expect(attempts.first.locator("td.status")).to_have_text("500")
                    await expect(attempts.first).to_contain_text(SCRIPT_IN_BODY)
                    assert await page.evaluate("window.__pwned") is None
                    await expect(page.locator("#state")).to_contain_text("failed")
                    await expect(page.get_by_role("button", name="Resend")).to_be_visible()
                    await shot("delivery-failed")

                    # -- retry once the receiver is healthy again --------------------------------
                    receiver.script("/failing", [200])
                    await page.get_by_role("button", name="Retry").click()
                    await expect(page).to_have_url(f"{base}/console/deliveries/{failed_id}")
                    await expect(page.locator(".flash.ok")).to_contain_text(
                        "queued for another attempt"
                    )
                    await receiver.wait_for(2, timeout_s=10, path="/failing")
                    await _reload_until_state(page, "delivered", timeout_s=10)
                    await expect(attempts).to_have_count(2)
                    await expect(attempts.last.locator("td.status")).to_have_text("200")
                    await expect(page.get_by_role("button", name="Retry")).to_have_count(0)
                    await shot("delivery-retried")

                    # -- resend the delivered one: same webhook-id -------------------------------
                    await page.get_by_role("button", name="Resend").click()
                    await expect(page.locator(".flash.ok")).to_contain_text("sent again")
                    sent = await receiver.wait_for(3, timeout_s=10, path="/failing")
                    assert len({r.webhook_id for r in sent}) == 1, [r.webhook_id for r in sent]
                    await _reload_until_state(page, "delivered", timeout_s=10)
                    await expect(attempts).to_have_count(3)

                    # -- test event to the healthy endpoint --------------------------------------
                    await page.goto(f"{base}/console/endpoints/{healthy_id}")
                    await expect(page.locator("#details")).to_contain_text(SCRIPT_IN_URL)
                    await expect(page.locator("#description")).to_have_text(SCRIPT_IN_DESCRIPTION)
                    await page.get_by_role("button", name="Send test event").click()
                    await expect(page.locator(".flash.ok")).to_contain_text(
                        "test event delivered: HTTP 204"
                    )
                    pings = [
                        r
                        for r in receiver.requests_for("/healthy")
                        if r.json and r.json.get("type") == "hookd.ping"
                    ]
                    assert len(pings) == 1, [r.describe() for r in receiver.requests]
                    await shot("endpoint-test-sent")

                    # -- disable and enable ------------------------------------------------------
                    await page.get_by_role("button", name="Disable").click()
                    await expect(page.locator(".flash.ok")).to_contain_text("disabled")
                    await expect(page.locator("#state")).to_contain_text("disabled")
                    await shot("endpoint-disabled")
                    # A disabled endpoint cannot be tested: the Conflict is a readable flash.
                    await page.get_by_role("button", name="Send test event").click()
                    await expect(page.locator(".flash.error")).to_be_visible()
                    await page.get_by_role("button", name="Enable").click()
                    await expect(page.locator(".flash.ok")).to_contain_text("enabled")
                    await expect(page.locator("#state")).to_have_text("enabled")
                    assert await conn.fetchval(
                        "SELECT enabled FROM hookd.endpoints WHERE id = $1", healthy_id
                    )

                    # -- forged forms: no CSRF token, a wrong one --------------------------------
                    for form in ({}, {"csrf": "0" * 64}):
                        forged = await context.request.post(
                            f"{base}/console/endpoints/{healthy_id}/disable",
                            form=form,
                            max_redirects=0,
                        )
                        assert forged.status == 403, (form, forged.status)
                    assert await conn.fetchval(
                        "SELECT enabled FROM hookd.endpoints WHERE id = $1", healthy_id
                    ), "a forged form disabled the endpoint"

                    # -- errors are pages, not tracebacks ----------------------------------------
                    await page.goto(f"{base}/console/deliveries/999999")
                    await expect(page.locator("h1")).to_have_text("Not found")
                    await page.goto(f"{base}/console/deliveries?state=lost")
                    await expect(page.locator(".flash.error")).to_contain_text("state:")
                    await shot("error-bad-filter")

                    # -- the database goes away, and comes back ----------------------------------
                    postgres = proxy.upstream
                    proxy.retarget(tmp_path / "no-postgres-here.sock")
                    await proxy.cut()
                    await page.goto(f"{base}/console/endpoints")
                    await expect(page.locator("h1")).to_have_text("Database unavailable")
                    await shot("error-database-unavailable")
                    proxy.retarget(postgres)
                    await _reload_until_heading(page, "Endpoints", timeout_s=10)

                    # -- log out -----------------------------------------------------------------
                    await page.get_by_role("button", name="Log out").click()
                    await expect(page).to_have_url(base + "/console/login")
                    names = {c["name"] for c in await context.cookies()}
                    assert "hookd_session" not in names, names
                    await page.goto(base + "/console/endpoints")
                    await expect(page).to_have_url(base + "/console/login")
                    await context.close()

                    # -- a tenant's token sees only its tenant -----------------------------------
                    tenant_context = await new_context(browser)
                    _watch_urls(tenant_context, urls)
                    page = await tenant_context.new_page()
                    await page.goto(base + "/console/login")
                    await page.fill("#token", tenant_token)
                    await page.click("form.login button")
                    await expect(page).to_have_url(base + "/console/endpoints")
                    await expect(page.locator("#endpoints tbody tr")).to_have_count(1)
                    await expect(page.locator(f'tr[data-endpoint="{acme_id}"]')).to_be_visible()
                    await shot("tenant-endpoints")
                    await page.goto(f"{base}/console/endpoints/{failing_id}")
                    await expect(page.locator("h1")).to_have_text("Not found")
                    await page.goto(f"{base}/console/deliveries/{failed_id}")
                    await expect(page.locator("h1")).to_have_text("Not found")
                    await tenant_context.close()
        finally:
            await conn.close()

    assert urls, "the browser requested nothing"
    for secret in (operator_token, tenant_token):
        assert not [u for u in urls if secret in u], "a token appeared in a URL"
        assert not [h for h in pages_html if secret in h], "a token appeared in a page"
    print(f"console screenshots ({len(shots.taken)}): {shots.directory}")
