"""SIGKILL in the middle of a burst: after a restart, the ledger shows nothing lost and few repeats.

The daemon is a real child process; three slow receivers (one origin each) keep hundreds of requests
open, so the kill lands while many deliveries are leased, sent, or answered but not yet written back.
"""

from __future__ import annotations

import signal
from pathlib import Path

import asyncpg

from support.daemon import add_endpoint, wait_until
from support.proc import DaemonProcess, Ledger, SlowReceiver, write_config

EVENTS = 2000
KILL_AFTER_REQUESTS = 1500
RECEIVER_DELAY_S = 0.2

Pair = tuple[str, str]
"""(receiver path, webhook-id): one delivery as the receivers see it."""


async def _wait_backends_gone(db: asyncpg.Connection) -> None:
    # A killed client's backends finish (commit or roll back) what they were doing and then exit;
    # once they are gone the database shows exactly what the dead daemon achieved.
    await wait_until(
        db,
        "SELECT count(*) = 0 FROM pg_stat_activity"
        " WHERE datname = current_database() AND application_name LIKE 'hookd%'",
        timeout_s=10,
    )


async def test_sigkill_with_hundreds_in_flight_loses_nothing(
    dsn: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    ledger = Ledger()
    async with (
        SlowReceiver(ledger, delay_s=RECEIVER_DELAY_S) as rx_a,
        SlowReceiver(ledger, delay_s=RECEIVER_DELAY_S) as rx_b,
        SlowReceiver(ledger, delay_s=RECEIVER_DELAY_S) as rx_c,
    ):
        routes = {"/a": (rx_a, ("*",)), "/b": (rx_b, ("*",)), "/c": (rx_c, ("order.*",))}
        path_of: dict[int, str] = {}
        for path, (rx, types) in routes.items():
            ep_id, _ = await add_endpoint(dsn, rx.url_for(path), types)
            path_of[ep_id] = path

        await db.execute(
            "SELECT hookd.publish("
            " CASE WHEN i % 2 = 0 THEN 'order.paid' ELSE 'user.created' END,"
            " jsonb_build_object('i', i))"
            " FROM generate_series(1, $1) AS i",
            EVENTS,
        )
        install_id = await db.fetchval("SELECT install_id FROM hookd.meta")

        def pair(endpoint_id: int, event_id: int) -> Pair:
            return path_of[endpoint_id], f"msg_{install_id}_{event_id}"

        expected: set[Pair] = set()
        for r in await db.fetch("SELECT id, event_type FROM hookd.events"):
            for path, (_, types) in routes.items():
                if types == ("*",) or r["event_type"].startswith("order."):
                    expected.add((path, f"msg_{install_id}_{r['id']}"))
        assert len(expected) == EVENTS * 2 + EVENTS // 2

        base = {"http": {"per_endpoint_limit": 128, "per_host_limit": 128}}
        first_cfg = write_config(
            tmp_path / "first.toml", {**base, "http": {**base["http"], "user_agent": "first"}}
        )
        second_cfg = write_config(
            tmp_path / "second.toml", {**base, "http": {**base["http"], "user_agent": "second"}}
        )

        # -- run, and kill mid-burst -----------------------------------------------------------
        async with DaemonProcess(dsn, first_cfg, name="first") as first:
            await ledger.wait_until(
                lambda: len(ledger.hits) >= KILL_AFTER_REQUESTS,
                timeout_s=30,
                what=f"{KILL_AFTER_REQUESTS} requests",
            )
            open_at_kill = ledger.active
            await first.kill9()
            first_owner = first.lease_owner
        await _wait_backends_gone(db)
        rows = await db.fetch(
            "SELECT endpoint_id, event_id, state, lease_owner::text AS owner FROM hookd.deliveries"
        )
        leased_at_kill = {
            pair(r["endpoint_id"], r["event_id"])
            for r in rows
            if r["state"] == "pending" and r["owner"] is not None
        }
        assert {r["owner"] for r in rows if r["owner"] is not None} <= {first_owner}
        delivered_at_kill = {
            pair(r["endpoint_id"], r["event_id"]) for r in rows if r["state"] == "delivered"
        }
        sent_by_first = {(h.path, h.webhook_id) for h in ledger.hits if h.user_agent == "first"}
        assert all(h.webhook_id is not None for h in ledger.hits)
        # Received (or being received) but the outcome not in the database: these, and every
        # delivery still leased to the dead daemon, may legitimately be sent again.
        in_flight = leased_at_kill | (sent_by_first - delivered_at_kill)
        assert open_at_kill >= 100 and len(in_flight) >= 200, (
            f"the kill did not land mid-burst: {open_at_kill} requests open at the receivers, "
            f"{len(in_flight)} deliveries in flight"
        )

        # -- restart and drain -----------------------------------------------------------------
        async with DaemonProcess(dsn, second_cfg, name="second") as second:
            # The dead daemon's leases expire after lease_s (5 s), then the rest is quick.
            await wait_until(
                db,
                "SELECT count(*) = $1 FROM hookd.deliveries WHERE state = 'delivered'",
                len(expected),
                timeout_s=60,
            )
            second.send(signal.SIGTERM)
            assert await second.wait_exit(15) == 0, second.stderr
        assert "Traceback" not in second.stderr, second.stderr

    # -- the ledger ----------------------------------------------------------------------------
    counts = ledger.pairs()
    received = set(counts)
    missing = expected - received
    unexpected = received - expected
    assert not missing, (
        f"{len(missing)} (event, endpoint) pairs never received, e.g. {sorted(missing)[:5]}"
    )
    assert not unexpected, f"requests nobody should have got: {sorted(unexpected)[:5]}"
    assert len(received) == EVENTS * 2 + EVENTS // 2  # published x matching endpoints

    repeats = {p: n for p, n in counts.items() if n > 1}
    extra = sum(n - 1 for n in repeats.values())
    assert extra <= len(in_flight), (
        f"{extra} duplicate requests, more than the {len(in_flight)} deliveries in flight at the kill"
    )
    outside = set(repeats) - in_flight
    assert not outside, (
        f"duplicates of deliveries that were settled before the kill: {sorted(outside)[:5]}"
    )
    assert max(counts.values()) <= 2, "a delivery was sent more than once after the restart"
    assert await db.fetchval("SELECT count(*) FROM hookd.deliveries") == len(expected)
    assert await db.fetchval("SELECT count(*) FROM hookd.events WHERE fanned_out_at IS NULL") == 0
