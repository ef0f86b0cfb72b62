"""Two daemons on one database share the work without sending anything twice; when one dies, the
other takes over its deliveries once their leases expire.

Which daemon sent a request is told by its User-Agent (`http.user_agent`, different per daemon).
"""

from __future__ import annotations

import signal
from collections import Counter
from pathlib import Path

import asyncpg

from support.daemon import add_endpoint, wait_until
from support.proc import DaemonProcess, Ledger, SlowReceiver, write_config

EVENTS = 1000
PATHS = ("/one", "/two")

_PUBLISH = (
    "SELECT hookd.publish('order.paid', jsonb_build_object('i', i)) FROM generate_series(1, $1) i"
)


def _config(tmp_path: Path, name: str) -> Path:
    # A small in-flight cap and claim batch, so neither daemon can take the whole backlog at once.
    return write_config(
        tmp_path / f"{name}.toml",
        {
            "daemon": {"max_in_flight": 100, "claim_batch": 50},
            "http": {"user_agent": name},
        },
    )


async def test_two_daemons_share_work_and_survive_one_killed(
    dsn: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    ledger = Ledger()
    async with (
        SlowReceiver(ledger, delay_s=0.05) as rx_one,
        SlowReceiver(ledger, delay_s=0.05) as rx_two,
        DaemonProcess(dsn, _config(tmp_path, "A"), name="A") as a,
        DaemonProcess(dsn, _config(tmp_path, "B"), name="B") as b,
    ):
        receivers = (rx_one, rx_two)
        path_of: dict[int, str] = {}
        for path, rx in zip(PATHS, receivers, strict=True):
            ep_id, _ = await add_endpoint(dsn, rx.url_for(path))
            path_of[ep_id] = path
        install_id = await db.fetchval("SELECT install_id FROM hookd.meta")

        # -- both healthy: every delivery exactly once, both doing a real share -------------------
        await db.execute(_PUBLISH, EVENTS)
        await wait_until(
            db,
            "SELECT count(*) = $1 FROM hookd.deliveries WHERE state = 'delivered'",
            EVENTS * len(PATHS),
            timeout_s=40,
        )
        expected = {
            (p, f"msg_{install_id}_{e}")
            for e in await db.fetchval("SELECT array_agg(id) FROM hookd.events")
            for p in PATHS
        }
        counts = ledger.pairs()
        assert set(counts) == expected
        repeated = {p: n for p, n in counts.items() if n > 1}
        assert not repeated, f"{len(repeated)} deliveries sent twice by healthy daemons"
        share = Counter(h.user_agent for h in ledger.hits)
        assert set(share) == {"A", "B"} and min(share.values()) >= 0.25 * len(expected), share
        assert await db.fetchval("SELECT count(*) FROM hookd.deliveries WHERE attempts <> 1") == 0

        # -- A is killed mid-run; B finishes, taking A's deliveries once their leases expire ------
        phase_1 = len(ledger.hits)
        for rx in receivers:
            rx.delay_s = 0.2
        await db.execute(_PUBLISH, EVENTS)

        def both_busy() -> bool:
            agents = Counter(h.user_agent for h in ledger.hits[phase_1:])
            return agents["A"] >= 100 and agents["B"] >= 100

        await ledger.wait_until(both_busy, 30, "100 requests from each daemon")
        await a.kill9()
        rows = await db.fetch(
            "SELECT id, endpoint_id, event_id, next_attempt_at FROM hookd.deliveries"
            " WHERE state = 'pending' AND lease_owner = $1::uuid",
            a.lease_owner,
        )
        # Leased to A when it died. A superset of A's unfinished work: an outcome write of A's
        # still in the server may commit just after this read.
        a_leased = {
            (path_of[r["endpoint_id"]], f"msg_{install_id}_{r['event_id']}"): r for r in rows
        }
        assert len(a_leased) >= 20, f"A held only {len(a_leased)} deliveries when it was killed"

        await wait_until(
            db,
            "SELECT count(*) = $1 FROM hookd.deliveries WHERE state = 'delivered'",
            2 * EVENTS * len(PATHS),
            timeout_s=40,
        )
        b.send(signal.SIGTERM)
        assert await b.wait_exit(15) == 0, b.stderr
    assert "Traceback" not in a.stderr + b.stderr, a.stderr + b.stderr

    expected = {
        (p, f"msg_{install_id}_{e}")
        for e in await db.fetchval("SELECT array_agg(id) FROM hookd.events")
        for p in PATHS
    }
    counts = ledger.pairs()
    missing = expected - set(counts)
    assert not missing, f"{len(missing)} deliveries never received, e.g. {sorted(missing)[:5]}"
    assert set(counts) == expected
    repeated = {p for p, n in counts.items() if n > 1}
    assert repeated <= set(a_leased), (
        f"duplicates outside what A held at its death: {sorted(repeated - set(a_leased))[:5]}"
    )
    assert max(counts.values()) <= 2

    # B took over A's leases, and only after they expired.
    b_hits = {(h.path, h.webhook_id): h for h in ledger.hits[phase_1:] if h.user_agent == "B"}
    attempts = dict(
        await db.fetch(
            "SELECT id, attempts FROM hookd.deliveries WHERE id = ANY ($1::bigint[])",
            [r["id"] for r in a_leased.values()],
        )
    )
    taken_over = 0
    for pair, r in a_leased.items():
        hit = b_hits.get(pair)
        if hit is None:
            # Only possible if A's own outcome landed after the snapshot: then nobody re-claimed it.
            assert attempts[r["id"]] == 1, (pair, attempts[r["id"]])
            continue
        taken_over += 1
        lease_end_s = r["next_attempt_at"].timestamp()
        assert hit.wall_s >= lease_end_s - 0.05, (
            f"B sent {pair} {lease_end_s - hit.wall_s:.2f}s before A's lease expired"
        )
    assert taken_over >= 0.9 * len(a_leased), f"B took over {taken_over} of {len(a_leased)}"
