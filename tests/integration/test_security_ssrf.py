# ruff: noqa: RUF001 (full-width digits and dots in host names are the point of some cases)
"""The SSRF guard on real sockets (issue 4, point 4).

Canaries are TCP listeners on 127.0.0.1 and ::1 (same port) that count every connection, HTTP or
not. With the guard on and no allow-list they must see nothing, whatever spelling the endpoint URL
uses; every refused attempt is logged with the reason "refused by the SSRF guard".

Safety: some variants (NAT64, 6to4, IPv4-compatible) name addresses that are not loopback. They
must be refused before any connection, but should hookd ever regress, a tripwire on the event
loop's `sock_connect` blocks (and records) any connection to a non-loopback address, so these tests
never send a packet off this machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import orjson
import pytest
import pytest_asyncio
from aiohttp.abc import AbstractResolver, ResolveResult

from hookd.classify import FailureKind
from hookd.config import HttpConfig
from hookd.destinations import DestinationPolicy
from hookd.hostpool import HostPools, Origin, SendFailed

from support.daemon import add_endpoint, publish, running_daemon, wait_until
from support.receiver import REDIRECT, Receiver

# One row per attempt. A daemon stopped right after writing an outcome can log the same attempt
# twice (the writer re-queues a batch whose COMMIT was interrupted by shutdown's cancellation and
# writes it again); that engine issue is reported on its own, so counts here use distinct attempts.
ATTEMPTS = (
    "(SELECT DISTINCT ON (delivery_id, attempt) * FROM hookd.attempts"
    " ORDER BY delivery_id, attempt, started_at)"
)

GUARD_ONLY: dict[str, dict[str, Any]] = {
    # The shared test settings open loopback; these tests need the guard with nothing opened.
    "security": {"ssrf_guard": True, "allow_cidrs": []},
    "retry": {"schedule_s": [0.0, 0.2], "max_attempts": 2, "jitter": 0.0},
}


# -- safety net and canaries ----------------------------------------------------------------------


def _is_loopback(host: str) -> bool:
    addr = ipaddress.ip_address(host.split("%", 1)[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    # Connecting to the unspecified address reaches this host's own listeners.
    return addr.is_loopback or addr.is_unspecified


@pytest_asyncio.fixture(autouse=True, loop_scope="session")
async def tripwire() -> AsyncIterator[list[Any]]:
    """Refuse (and record) any TCP connection the event loop would open off loopback."""
    loop = asyncio.get_running_loop()
    blocked: list[Any] = []
    real = loop.sock_connect

    async def guarded(sock: socket.socket, address: Any) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address[0]):
            blocked.append(address)
            raise OSError(errno.ENETUNREACH, f"test tripwire: no connection to {address[0]}")
        await real(sock, address)

    loop.sock_connect = guarded  # type: ignore[method-assign]
    try:
        yield blocked
    finally:
        loop.sock_connect = real  # type: ignore[method-assign]
    assert blocked == [], f"hookd tried to connect off loopback: {blocked}"


class Canary:
    """A TCP listener that counts connections and closes them."""

    def __init__(self) -> None:
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        writer.close()


@asynccontextmanager
async def canaries() -> AsyncIterator[tuple[int, Canary, Canary]]:
    """Canaries on 127.0.0.1 and ::1 with the same port: (port, v4 canary, v6 canary)."""
    v4, v6 = Canary(), Canary()
    for _ in range(20):
        v4.server = await asyncio.start_server(v4._on_connect, "127.0.0.1", 0)
        port = v4.server.sockets[0].getsockname()[1]
        try:
            v6.server = await asyncio.start_server(v6._on_connect, "::1", port)
            break
        except OSError:
            v4.server.close()
            await v4.server.wait_closed()
    else:
        raise AssertionError("no port free on both 127.0.0.1 and ::1")
    try:
        yield port, v4, v6
    finally:
        for c in (v4, v6):
            assert c.server is not None
            c.server.close()
            await c.server.wait_closed()


# -- the guard in the daemon ----------------------------------------------------------------------

# Every spelling of "this machine" a URL can carry, plus addresses that embed 127.0.0.1. (Names are
# ones /etc/hosts answers: a test must not send DNS queries off the machine.)
VARIANTS = [
    "127.0.0.1",
    "127.0.0.2",
    "localhost",
    "LOCALHOST",
    "2130706433",
    "0177.0.0.1",
    "0x7f.0.0.1",
    "0x7f000001",
    "127.1",
    "0",
    "0.0.0.0",
    "１２７.０.０.１",
    "127。0。0。1",
    "[::1]",
    "[::]",
    "[0:0:0:0:0:0:0:1]",
    "[::ffff:127.0.0.1]",
    "[::ffff:7f00:1]",
    "[::127.0.0.1]",
    "[64:ff9b::7f00:1]",
    "[2002:7f00:1::]",
]


async def test_no_spelling_of_loopback_gets_through(dsn: str, db: asyncpg.Connection) -> None:
    async with canaries() as (port, v4, v6):
        ids = {}
        for host in VARIANTS:
            ids[host], _ = await add_endpoint(dsn, f"http://{host}:{port}/hook")
        await publish(db, "order.paid", {"id": 1})
        async with running_daemon(dsn, GUARD_ONLY) as daemon:
            await wait_until(
                db,
                "SELECT count(*) = $1 FROM hookd.deliveries WHERE state = 'failed'",
                len(VARIANTS),
                timeout_s=15,
            )
            refused = daemon.metrics.attempts.labels("refused_destination")._value.get()
        assert (v4.connections, v6.connections) == (0, 0)
    rows = await db.fetch(
        f"SELECT d.endpoint_id, a.status, a.error FROM {ATTEMPTS} a"
        " JOIN hookd.deliveries d ON d.id = a.delivery_id"
    )
    by_endpoint: dict[int, list[str]] = {}
    for r in rows:
        assert r["status"] is None
        by_endpoint.setdefault(r["endpoint_id"], []).append(r["error"])
    for host, ep_id in ids.items():
        errors = by_endpoint.get(ep_id, [])
        assert len(errors) == 2, (host, errors)
        assert all(e.startswith("refused by the SSRF guard") for e in errors), (host, errors)
    assert refused == 2 * len(VARIANTS)


async def test_a_refused_attempt_says_why_and_which_setting_opens_it(
    dsn: str, db: asyncpg.Connection
) -> None:
    """The attempt log, the delivery's last error and the log say it was the SSRF guard, what
    kind of address it was, and which settings open it; the metric class stays the same."""
    hint = "(allow it with security.allow_cidrs, e.g. {}, or the host with security.allow_hosts)"
    async with canaries() as (port, v4, v6):
        cases = {
            f"http://127.0.0.1:{port}/a": "127.0.0.1 is a loopback address "
            + hint.format('"127.0.0.1/32"'),
            f"http://localhost:{port}/b": "localhost resolves to {}, a loopback address ",
            "http://169.254.169.254/latest/meta-data/": "169.254.169.254 is the cloud metadata"
            " address (link-local) " + hint.format('"169.254.169.254/32"'),
            "http://10.0.0.7/hook": "10.0.0.7 is a private address (RFC 1918) "
            + hint.format('"10.0.0.7/32"'),
        }
        ids = {url: (await add_endpoint(dsn, url))[0] for url in cases}
        await publish(db, "order.paid", {"id": 1})
        async with running_daemon(dsn, GUARD_ONLY) as daemon:
            await wait_until(
                db,
                "SELECT count(*) = $1 FROM hookd.deliveries WHERE state = 'failed'",
                len(cases),
                timeout_s=15,
            )
            refused = daemon.metrics.attempts.labels("refused_destination")._value.get()
        assert (v4.connections, v6.connections) == (0, 0)
    assert refused == 2 * len(cases)
    for url, ep_id in ids.items():
        last_error = await db.fetchval(
            "SELECT last_error FROM hookd.deliveries WHERE endpoint_id = $1", ep_id
        )
        errors = [
            r["error"]
            for r in await db.fetch(
                f"SELECT a.error FROM {ATTEMPTS} a JOIN hookd.deliveries d"
                " ON d.id = a.delivery_id WHERE d.endpoint_id = $1",
                ep_id,
            )
        ]
        assert len(errors) == 2 and set(errors) == {last_error}, (url, errors, last_error)
        expected = cases[url]
        if "localhost" in url:
            # /etc/hosts may answer ::1 or 127.0.0.1 first; the message names the one refused.
            addr = "::1" if "resolves to ::1" in last_error else "127.0.0.1"
            cidr = '"::1/128"' if addr == "::1" else '"127.0.0.1/32"'
            expected = expected.format(addr) + hint.format(cidr)
        assert last_error == f"refused by the SSRF guard: {expected}", url


async def test_allow_cidrs_open_exactly_what_they_list(dsn: str, db: asyncpg.Connection) -> None:
    async with canaries() as (port, v4, v6), Receiver(host="127.0.0.2", port=port) as allowed:
        await add_endpoint(dsn, allowed.url_for("/ok"))
        refused_hosts = ["127.0.0.1", "[::1]", "[::ffff:127.0.0.2]", "localhost", "127.0.0.3"]
        for host in refused_hosts:
            await add_endpoint(dsn, f"http://{host}:{port}/no")
        await publish(db, "order.paid", {})
        overrides = {
            **GUARD_ONLY,
            "security": {"ssrf_guard": True, "allow_cidrs": ["127.0.0.2/32"]},
        }
        async with running_daemon(dsn, overrides):
            await wait_until(
                db,
                "SELECT count(*) FILTER (WHERE state = 'delivered') = 1"
                " AND count(*) FILTER (WHERE state = 'failed') = $1 FROM hookd.deliveries",
                len(refused_hosts),
                timeout_s=15,
            )
        assert [r.path for r in allowed.requests] == ["/ok"]
        assert (v4.connections, v6.connections) == (0, 0)
    errors = [
        r["error"]
        for r in await db.fetch(f"SELECT error FROM {ATTEMPTS} a WHERE error IS NOT NULL")
    ]
    assert len(errors) == 2 * len(refused_hosts)
    assert all(e.startswith("refused by the SSRF guard") for e in errors), errors


async def test_allow_hosts_opens_a_name_but_not_its_address(
    dsn: str, db: asyncpg.Connection
) -> None:
    async with Receiver() as rx:
        await add_endpoint(dsn, f"http://localhost:{rx.port}/by-name")
        await add_endpoint(dsn, rx.url_for("/by-address"))
        await publish(db, "order.paid", {})
        overrides = {
            **GUARD_ONLY,
            "security": {"ssrf_guard": True, "allow_cidrs": [], "allow_hosts": ["localhost"]},
        }
        async with running_daemon(dsn, overrides):
            await wait_until(
                db,
                "SELECT count(*) FILTER (WHERE state = 'delivered') = 1"
                " AND count(*) FILTER (WHERE state = 'failed') = 1 FROM hookd.deliveries",
                timeout_s=15,
            )
        assert [r.path for r in rx.requests] == ["/by-name"]


async def test_canary_is_reachable_without_the_guard(dsn: str, db: asyncpg.Connection) -> None:
    """The control: with loopback allowed, the same canary does see hookd (so zero means zero)."""
    async with canaries() as (port, v4, _):
        await add_endpoint(dsn, f"http://0x7f.0.0.1:{port}/hook")
        await publish(db, "order.paid", {})
        overrides = {
            **GUARD_ONLY,
            "security": {"ssrf_guard": True, "allow_cidrs": ["127.0.0.1/32"]},
        }
        async with running_daemon(dsn, overrides):
            await wait_until(db, "SELECT state = 'failed' FROM hookd.deliveries", timeout_s=15)
        assert v4.connections >= 1
    errors = [r["error"] for r in await db.fetch(f"SELECT error FROM {ATTEMPTS} a")]
    assert not any(e.startswith("refused by the SSRF guard") for e in errors), errors


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_redirects_are_never_followed(dsn: str, db: asyncpg.Connection, status: int) -> None:
    async with canaries() as (port, v4, v6), Receiver() as rx:
        rx.script("/moved", [(REDIRECT, status, f"http://127.0.0.1:{port}/internal")])
        await add_endpoint(dsn, rx.url_for("/moved"))
        await publish(db, "order.paid", {})
        overrides = {
            **GUARD_ONLY,
            "security": {"ssrf_guard": True, "allow_cidrs": ["127.0.0.0/8", "::1/128"]},
        }
        async with running_daemon(dsn, overrides):
            await wait_until(db, "SELECT state = 'failed' FROM hookd.deliveries", timeout_s=15)
        assert len(rx.requests) == 2, "each attempt goes to the endpoint's own URL"
        assert (v4.connections, v6.connections) == (0, 0)
    rows = await db.fetch(
        f"SELECT delivery_id, attempt, started_at, status, error FROM {ATTEMPTS} a"
        " ORDER BY started_at"
    )
    assert [(r["status"], r["error"]) for r in rows] == [
        (status, f"redirect not followed (HTTP {status})")
    ] * 2, [tuple(r) for r in rows]


async def test_oauth_token_url_is_guarded_too(dsn: str, db: asyncpg.Connection) -> None:
    async with canaries() as (port, v4, v6):
        ep_id, _ = await add_endpoint(dsn, f"http://127.0.0.1:{port}/hook")
        await db.execute(
            "UPDATE hookd.endpoints SET credentials = $2 WHERE id = $1",
            ep_id,
            orjson.dumps(
                {
                    "oauth2": {
                        "token_url": f"http://[::1]:{port}/token",
                        "client_id": "c",
                        "client_secret": "s",
                    }
                }
            ).decode(),
        )
        await publish(db, "order.paid", {})
        async with running_daemon(dsn, GUARD_ONLY):
            await wait_until(db, "SELECT state = 'failed' FROM hookd.deliveries", timeout_s=15)
        assert (v4.connections, v6.connections) == (0, 0)
    errors = [r["error"] for r in await db.fetch(f"SELECT error FROM {ATTEMPTS} a")]
    assert errors and all(e.startswith("refused by the SSRF guard") for e in errors), errors


# -- DNS rebinding: the address checked is the address connected to --------------------------------


class ScriptedResolver(AbstractResolver):
    """Answers each lookup with the next list of addresses (the last one repeats)."""

    def __init__(self, answers: list[list[str]]) -> None:
        self.answers = answers
        self.calls: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.calls.append(host)
        addrs = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        return [
            ResolveResult(
                hostname=host,
                host=a,
                port=port,
                family=socket.AF_INET6 if ":" in a else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for a in addrs
        ]

    async def close(self) -> None:
        pass


HTTP = HttpConfig(connect_timeout_s=2.0, total_timeout_s=5.0)
REBIND_POLICY = DestinationPolicy(allow_cidrs=["127.0.0.2/32"])


async def test_dns_rebinding_cannot_switch_the_address_after_the_check() -> None:
    async with canaries() as (port, v4, v6), Receiver(host="127.0.0.2", port=port) as good:
        # First lookup: the allowed 127.0.0.2; every later one: 127.0.0.1, where the canary is.
        resolver = ScriptedResolver([["127.0.0.2"], ["127.0.0.1"]])
        url = f"http://rebind.test:{port}/hook"
        async with HostPools(HTTP, REBIND_POLICY, resolver=resolver) as pools:
            for _ in range(3):
                resp = await pools.post(Origin.of(url), url, b"{}", {})
                assert resp.status == 204
        assert resolver.calls == ["rebind.test"], "one lookup: the connection used its answer"
        assert [r.headers["Host"] for r in good.requests] == [f"rebind.test:{port}"] * 3

        # A new pool looks the name up again and now gets 127.0.0.1: refused before connecting.
        async with HostPools(HTTP, REBIND_POLICY, resolver=resolver) as pools:
            with pytest.raises(SendFailed) as info:
                await pools.post(Origin.of(url), url, b"{}", {})
        assert info.value.kind is FailureKind.DESTINATION_REFUSED
        assert str(info.value) == (
            "refused by the SSRF guard: rebind.test resolves to 127.0.0.1, a loopback address"
            ' (allow it with security.allow_cidrs, e.g. "127.0.0.1/32", or the host with'
            " security.allow_hosts)"
        )
        assert resolver.calls == ["rebind.test", "rebind.test"]
        assert (v4.connections, v6.connections) == (0, 0)
        assert len(good.requests) == 3


async def test_one_bad_answer_refuses_the_whole_lookup() -> None:
    async with canaries() as (port, v4, v6), Receiver(host="127.0.0.2", port=port) as good:
        # If hookd dropped only the bad address, or tried addresses in turn, the canary would
        # be reached when the first one fails.
        await good.stop()
        resolver = ScriptedResolver([["127.0.0.2", "127.0.0.1", "::1"]])
        url = f"http://mixed.test:{port}/hook"
        async with HostPools(HTTP, REBIND_POLICY, resolver=resolver) as pools:
            with pytest.raises(SendFailed) as info:
                await pools.post(Origin.of(url), url, b"{}", {})
        assert info.value.kind is FailureKind.DESTINATION_REFUSED
        assert (v4.connections, v6.connections) == (0, 0)


async def test_stale_connection_retry_is_guarded_as_well() -> None:
    """The one retry on a fresh connection (after a pooled one went stale) resolves again, and
    that lookup is checked like the first."""
    async with canaries() as (port, v4, v6), Receiver(host="127.0.0.2", port=port) as good:
        good.script("/hook", ["close", 204])
        resolver = ScriptedResolver([["127.0.0.2"], ["127.0.0.1"]])
        url = f"http://stale.test:{port}/hook"
        async with HostPools(HTTP, REBIND_POLICY, resolver=resolver) as pools:
            assert (await pools.post(Origin.of(url), url, b"{}", {})).status == 204
            # The receiver closed the kept-alive connection; whatever path aiohttp takes now
            # (a new pooled connection from its DNS cache, or hookd's fresh-connection retry with
            # a new lookup), nothing may reach 127.0.0.1.
            for _ in range(3):
                # Refused, or the stale connection's own error: both are fine here.
                with contextlib.suppress(SendFailed):
                    await pools.post(Origin.of(url), url, b"{}", {})
        assert (v4.connections, v6.connections) == (0, 0)
        assert good.count >= 1


async def test_guard_off_is_really_off() -> None:
    """With the guard disabled (`ssrf_guard = false`) loopback is reachable: the other tests'
    zeros come from the guard, not from the set-up."""
    async with canaries() as (port, v4, _):
        url = f"http://127.0.0.1:{port}/"
        async with HostPools(HTTP, DestinationPolicy(enabled=False)) as pools:
            with pytest.raises(SendFailed) as info:
                await pools.post(Origin.of(url), url, b"{}", {})
        # The canary hangs up without answering: a failure, but not the guard's.
        assert info.value.kind is not FailureKind.DESTINATION_REFUSED
        assert v4.connections >= 1
