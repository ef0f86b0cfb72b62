"""The test support itself: Postgres fixtures, the recording receiver, the breakable TCP proxy."""

from __future__ import annotations

import asyncio
import os
import sys
import textwrap
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import asyncpg
import pytest
from standardwebhooks.webhooks import Webhook

from hookd.signing import generate_secret

from support.receiver import HANG, Receiver
from support.tcpproxy import TcpProxy


def _dbname(dsn: str) -> str:
    return urlsplit(dsn).path.lstrip("/")


# -- Postgres fixtures ---------------------------------------------------------------------------


async def test_template_has_hookd_schema(db: asyncpg.Connection) -> None:
    event_id = await db.fetchval(
        "SELECT hookd.publish(event_type => 'a.b', payload => '{}'::jsonb)"
    )
    assert isinstance(event_id, int)


@pytest.mark.parametrize("round_", range(3))
async def test_each_test_gets_a_fresh_database(db: asyncpg.Connection, round_: int) -> None:
    assert await db.fetchval("SELECT count(*) FROM hookd.events") == 0
    await db.fetchval("SELECT hookd.publish(event_type => 'a.b', payload => '{}'::jsonb)")
    assert await db.fetchval("SELECT count(*) FROM hookd.events") == 1


@pytest.mark.parametrize("round_", range(10))
async def test_many_databases_leave_nothing_behind(
    pg_cluster: Any, db: asyncpg.Connection, round_: int
) -> None:
    # Databases of this run (names carry the pid): only the current test's one exists.
    ours = await db.fetchval(
        "SELECT count(*) FROM pg_database WHERE datname LIKE $1", f"hookd\\_t\\_{os.getpid()}\\_%"
    )
    assert ours == 1
    if pg_cluster.embedded:
        # The cluster is ours alone: no client but this test's `db` connection may be left.
        others = await db.fetch(
            "SELECT datname, application_name FROM pg_stat_activity"
            " WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
        )
        assert others == []


async def test_dsn_works_in_a_subprocess(dsn: str) -> None:
    code = textwrap.dedent(
        """
        import asyncio, sys
        import asyncpg

        async def main():
            conn = await asyncpg.connect(sys.argv[1])
            print(await conn.fetchval("SELECT current_database()"))
            await conn.close()

        asyncio.run(main())
        """
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, dsn, stdout=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(30):
        out, _ = await proc.communicate()
    assert proc.returncode == 0
    assert out.decode().strip() == _dbname(dsn)


# -- Receiver ------------------------------------------------------------------------------------


def _signed_headers(secret: str, msg_id: str, body: bytes) -> dict[str, str]:
    now = datetime.now(UTC)
    signature = Webhook(secret).sign(msg_id=msg_id, timestamp=now, data=body.decode())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
    }


async def test_receiver_verifies_signatures() -> None:
    secret = generate_secret()
    body = b'{"type":"a.b","data":{"n":1}}'
    async with Receiver(secrets={"/hook": secret}) as receiver, aiohttp.ClientSession() as http:
        good = _signed_headers(secret, "msg_1", body)
        async with http.post(receiver.url_for("/hook"), data=body, headers=good) as resp:
            assert resp.status == 204
        bad = _signed_headers(secret, "msg_2", body)
        async with http.post(receiver.url_for("/hook"), data=body + b" ", headers=bad) as resp:
            assert resp.status == 204
        other = _signed_headers(generate_secret(), "msg_3", body)
        async with http.post(receiver.url_for("/hook"), data=body, headers=other) as resp:
            assert resp.status == 204
        async with http.post(receiver.url_for("/unsigned"), data=b"not json") as resp:
            assert resp.status == 204

        records = await receiver.wait_for(3, path="/hook", timeout_s=2)
    assert [r.verified for r in records] == [True, False, False]
    assert records[0].json == {"type": "a.b", "data": {"n": 1}}
    assert records[1].verify_error is not None
    assert receiver.ids_for("/hook") == ["msg_1", "msg_2", "msg_3"]
    unsigned = receiver.requests_for("/unsigned")[0]
    assert unsigned.verified is None
    assert unsigned.json is None
    assert unsigned.body == b"not json"
    assert receiver.count == 4


async def test_receiver_scripts_and_restarts_on_the_same_port() -> None:
    async with Receiver() as receiver, aiohttp.ClientSession() as http:
        receiver.script("/x", [500, (429, {"Retry-After": "7"}), 200])
        seen = []
        for _ in range(4):
            async with http.post(receiver.url_for("/x"), json={}) as resp:
                seen.append((resp.status, resp.headers.get("Retry-After")))
        assert seen == [(500, None), (429, "7"), (200, None), (200, None)]

        port = receiver.port
        await receiver.stop()
        with pytest.raises(aiohttp.ClientConnectionError):
            async with http.post(receiver.url_for("/x"), json={}):
                pass
        await receiver.start()
        assert receiver.port == port
        async with http.post(receiver.url_for("/y"), json={}) as resp:
            assert resp.status == 204
        assert receiver.count == 5


async def test_receiver_hang_holds_the_request_until_the_client_gives_up() -> None:
    async with Receiver() as receiver, aiohttp.ClientSession() as http:
        receiver.script("/slow", [HANG])
        with pytest.raises(TimeoutError):
            async with http.post(
                receiver.url_for("/slow"), json={}, timeout=aiohttp.ClientTimeout(total=0.2)
            ):
                pass
        assert [r.status for r in receiver.requests_for("/slow")] == [None]
        # A hung request still in flight must not hold up stop().
        task = asyncio.ensure_future(http.post(receiver.url_for("/slow"), json={}))
        try:
            await receiver.wait_for(2, path="/slow", timeout_s=2)
            async with asyncio.timeout(2):
                await receiver.stop()
            with pytest.raises(aiohttp.ClientConnectionError):
                async with asyncio.timeout(2):
                    await task
        finally:
            task.cancel()


async def test_receiver_wait_for_timeout_says_what_arrived() -> None:
    async with Receiver() as receiver, aiohttp.ClientSession() as http:
        async with http.post(receiver.url_for("/a"), json={}) as resp:
            assert resp.status == 204
        with pytest.raises(AssertionError, match=r"(?s)received 1 request.*POST /a"):
            await receiver.wait_for(1, path="/b", timeout_s=0.05)
        with pytest.raises(AssertionError, match="predicate"):
            await receiver.wait_for(lambda r: r.count > 1, timeout_s=0.05)


# -- TCP proxy -----------------------------------------------------------------------------------


async def test_proxy_forwards_postgres_and_cut_breaks_it(dsn: str) -> None:
    async with TcpProxy.to_postgres(dsn) as proxy:
        conn = await asyncpg.connect(proxy.dsn_through(dsn), timeout=5)
        try:
            assert await conn.fetchval("SELECT current_database()") == _dbname(dsn)
            assert await proxy.cut() == 1
            # cut() returns after the RST went out, so asyncpg has usually already seen the
            # connection die (InterfaceError "connection is closed"); if not, the query itself
            # fails with ConnectionDoesNotExistError.
            with pytest.raises((asyncpg.InterfaceError, asyncpg.ConnectionDoesNotExistError)):
                async with asyncio.timeout(5):
                    await conn.fetchval("SELECT 1")
        finally:
            conn.terminate()
        # Still accepting after a cut.
        again = await asyncpg.connect(proxy.dsn_through(dsn), timeout=5)
        try:
            assert await again.fetchval("SELECT 1") == 1
        finally:
            await again.close(timeout=5)
        assert proxy.accepted_total == 2


async def test_proxy_blackhole_hangs_until_timeout_and_restore_serves_new_connections(
    dsn: str,
) -> None:
    async with TcpProxy.to_postgres(dsn) as proxy:
        conn = await asyncpg.connect(proxy.dsn_through(dsn), timeout=5)
        try:
            proxy.blackhole()
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.3):
                    await conn.fetchval("SELECT 1")
        finally:
            conn.terminate()
        with pytest.raises(TimeoutError):
            await asyncpg.connect(proxy.dsn_through(dsn), timeout=0.3)

        proxy.restore()
        fresh = await asyncpg.connect(proxy.dsn_through(dsn), timeout=5)
        try:
            assert await fresh.fetchval("SELECT 1") == 1
        finally:
            await fresh.close(timeout=5)


async def test_proxy_forwards_tcp_to_a_receiver() -> None:
    async with Receiver() as receiver, TcpProxy(("127.0.0.1", receiver.port)) as proxy:
        url = f"http://127.0.0.1:{proxy.port}/via"
        async with aiohttp.ClientSession() as http, http.post(url, json={"a": 1}) as resp:
            assert resp.status == 204
            assert proxy.active == 1  # the keep-alive connection
            assert await proxy.cut() == 1
        assert receiver.requests_for("/via")[0].json == {"a": 1}
        async with aiohttp.ClientSession() as http, http.post(url, json={}) as resp:
            assert resp.status == 204
        assert proxy.accepted_total == 2
