"""SIGTERM: stop claiming, let what is being sent finish within the grace period, give back the rest."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import asyncpg

from support.daemon import add_endpoint, wait_until
from support.proc import DaemonProcess, Ledger, SlowReceiver, write_config

_PUBLISH_MANY = (
    "SELECT hookd.publish('order.paid', jsonb_build_object('i', i)) FROM generate_series(1, $1) i"
)


async def _deliveries(db: asyncpg.Connection, install_id: str) -> dict[str, asyncpg.Record]:
    """Each delivery by the webhook-id the receiver sees (one endpoint per test)."""
    rows = await db.fetch(
        "SELECT event_id, state, attempts, lease_owner, last_status,"
        " next_attempt_at <= now() AS due,"
        " (SELECT count(*) FROM hookd.attempts a WHERE a.delivery_id = d.id) AS logged"
        " FROM hookd.deliveries d"
    )
    return {f"msg_{install_id}_{r['event_id']}": r for r in rows}


async def test_sigterm_drains_in_flight_releases_queued_and_restart_finishes(
    dsn: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    events, limit, grace_s = 20, 4, 5.0
    ledger = Ledger()
    async with SlowReceiver(ledger, delay_s=1.0) as rx:
        await add_endpoint(dsn, rx.url_for("/slow"))
        await db.execute(_PUBLISH_MANY, events)
        install_id = await db.fetchval("SELECT install_id FROM hookd.meta")
        cfg = write_config(
            tmp_path / "hookd.toml",
            {
                "daemon": {"shutdown_grace_s": grace_s},
                "http": {"per_endpoint_limit": limit, "per_host_limit": limit},
            },
        )

        async with DaemonProcess(dsn, cfg, name="first") as first:
            # `limit` requests open at the receiver; the other deliveries wait in the daemon.
            await ledger.wait_until(lambda: ledger.active == limit, 10, f"{limit} open requests")
            leased = await db.fetchval(
                "SELECT count(*) FROM hookd.deliveries WHERE lease_owner IS NOT NULL"
            )
            assert leased > limit, "nothing was queued behind the requests in flight"
            started = time.monotonic()
            first.send(signal.SIGTERM)
            code = await first.wait_exit(grace_s + 5)
            took_s = time.monotonic() - started
        assert code == 0, first.stderr
        assert "Traceback" not in first.stderr, first.stderr
        assert "hookd stopped" in first.stderr, first.stderr
        # The open requests (1 s each) finished well inside the grace period, and exit followed.
        assert took_s < grace_s, f"exit took {took_s:.1f}s"
        assert (ledger.answered, ledger.cancelled) == (limit, 0)
        sent = {h.webhook_id for h in ledger.hits}
        assert len(ledger.hits) == len(sent) == limit, "requests started after SIGTERM"

        rows = await _deliveries(db, install_id)
        # Events beyond what the endpoint had room for were never fanned out: still in the outbox.
        waiting = await db.fetchval("SELECT count(*) FROM hookd.events WHERE fanned_out_at IS NULL")
        assert len(rows) + waiting == events
        for wid, r in rows.items():
            if wid in sent:
                # Its outcome was written before exit.
                assert (r["state"], r["attempts"], r["lease_owner"], r["last_status"]) == (
                    "delivered",
                    1,
                    None,
                    204,
                ), dict(r)
                assert r["logged"] == 1, dict(r)
            else:
                # Given back untouched: no lease, due now, and no attempt counted or logged.
                assert (r["state"], r["attempts"], r["lease_owner"], r["due"]) == (
                    "pending",
                    0,
                    None,
                    True,
                ), dict(r)
                assert r["logged"] == 0, dict(r)

        # -- a restarted daemon finishes the rest ----------------------------------------------
        rx.delay_s = 0.0
        async with DaemonProcess(dsn, cfg, name="second") as second:
            await wait_until(
                db,
                "SELECT count(*) = $1 FROM hookd.deliveries WHERE state = 'delivered'",
                events,
                timeout_s=20,
            )
            second.send(signal.SIGTERM)
            assert await second.wait_exit(grace_s + 5) == 0, second.stderr
    ids = [h.webhook_id for h in ledger.hits]
    assert len(ids) == len(set(ids)) == events, "each delivery sent exactly once across the restart"
    assert await db.fetchval("SELECT count(*) FROM hookd.deliveries WHERE attempts <> 1") == 0


HUNG, HUNG_EVENTS, HUNG_GRACE_S, HUNG_TIMEOUT_S = 2, 5, 1.0, 10.0
"""Requests left hanging, events, shutdown grace and attempt timeout (well above the grace)."""


async def _sigterm_during_hung_attempts(
    dsn: str, db: asyncpg.Connection, tmp_path: Path
) -> tuple[DaemonProcess, float, Ledger, dict[str, asyncpg.Record]]:
    """SIGTERM while `HUNG` requests hang at the receiver, longer than grace and attempt timeout.

    Returns the exited daemon, seconds from SIGTERM to exit, the ledger and the deliveries.
    """
    ledger = Ledger()
    # Deliberately longer than the grace period and the attempt timeout: the receiver hangs.
    async with SlowReceiver(ledger, delay_s=60.0) as rx:
        await add_endpoint(dsn, rx.url_for("/hang"))
        await db.execute(_PUBLISH_MANY, HUNG_EVENTS)
        install_id = await db.fetchval("SELECT install_id FROM hookd.meta")
        cfg = write_config(
            tmp_path / "hookd.toml",
            {
                "daemon": {"shutdown_grace_s": HUNG_GRACE_S, "lease_s": HUNG_TIMEOUT_S + 5},
                "http": {
                    "per_endpoint_limit": HUNG,
                    "per_host_limit": HUNG,
                    "total_timeout_s": HUNG_TIMEOUT_S,
                },
            },
        )
        async with DaemonProcess(dsn, cfg) as daemon:
            await ledger.wait_until(lambda: ledger.active == HUNG, 10, f"{HUNG} open requests")
            started = time.monotonic()
            daemon.send(signal.SIGTERM)
            await daemon.wait_exit(HUNG_GRACE_S + 5)
            took_s = time.monotonic() - started
        # The hung requests were abandoned: the receiver sees their connections close.
        await ledger.wait_until(lambda: ledger.active == 0, 5, "hung requests closed")
    return daemon, took_s, ledger, await _deliveries(db, install_id)


async def test_sigterm_cancels_an_attempt_that_outlasts_the_grace_period(
    dsn: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    daemon, took_s, ledger, rows = await _sigterm_during_hung_attempts(dsn, db, tmp_path)
    assert daemon.returncode == 0, daemon.stderr
    assert "Traceback" not in daemon.stderr, daemon.stderr
    # Bounded by the grace period, not by the 10 s attempt timeout.
    assert HUNG_GRACE_S <= took_s < HUNG_GRACE_S + 3, f"exit took {took_s:.1f}s"
    assert (ledger.cancelled, ledger.answered, len(ledger.hits)) == (HUNG, 0, HUNG)
    # Events beyond what the endpoint had room for wait in the outbox or unleased in deliveries.
    waiting = await db.fetchval("SELECT count(*) FROM hookd.events WHERE fanned_out_at IS NULL")
    assert len(rows) + waiting == HUNG_EVENTS
    for r in rows.values():
        # Released: no lease, due again at once.
        assert (r["state"], r["lease_owner"], r["due"]) == ("pending", None, True), dict(r)
    sent = {h.webhook_id for h in ledger.hits}
    unsent = [r for wid, r in rows.items() if wid not in sent]
    assert [(r["attempts"], r["logged"]) for r in unsent] == [(0, 0)] * (len(rows) - HUNG)


async def test_sigterm_counts_and_logs_the_attempt_it_cancelled(
    dsn: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    # The cancelled requests reached the receiver: they were attempts. ARCHITECTURE.md: the
    # attempt counter "always advances, even across crashes", and shutdown gives back
    # *unattempted* leases; queries.sql: an uncounted give-back is for a lease "never sent";
    # README.md: "every attempt is logged".
    _, _, ledger, rows = await _sigterm_during_hung_attempts(dsn, db, tmp_path)
    sent = {h.webhook_id for h in ledger.hits}
    assert len(sent) == HUNG
    got = {wid: (r["attempts"], r["logged"]) for wid, r in rows.items() if wid in sent}
    assert got == dict.fromkeys(sent, (1, 1)), (
        "(attempts, attempt-log rows) of deliveries whose request was cancelled at shutdown"
    )
