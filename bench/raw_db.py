"""The raw database ceiling: claim, fan out and acknowledge hookd's outbox with asyncpg, no HTTP.

What hookd's database work costs at the least, on hookd's own tables: each round, in one short
transaction, claim up to `--batch` events (`FOR UPDATE SKIP LOCKED`), mark them fanned out and
insert one leased delivery per endpoint; then, in a second transaction, mark those deliveries
delivered and write one attempt-log row each (the same batched `unnest` shapes hookd uses).
`--workers` connections do this concurrently until the outbox is empty. No HTTP, no signing, no
per-delivery Python work: the gap between this and hookd is hookd's own overhead.

`python -m bench.raw_db --dsn DSN [--batch 500] [--workers 2]`; prints "ready" when connected
(the parent starts its meter then), then one JSON object when done, then waits for SIGTERM (at
most a minute) so the parent can read its CPU time while it is still there.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
import uuid
from collections.abc import Sequence

import asyncpg
import orjson
import uvloop

CLAIM_SQL = """
WITH ev AS (
    SELECT id, created_at FROM hookd.events
    WHERE fanned_out_at IS NULL
    ORDER BY id
    LIMIT $1
    FOR UPDATE SKIP LOCKED
), marked AS (
    UPDATE hookd.events e SET fanned_out_at = now() FROM ev
    WHERE e.id = ev.id AND e.created_at = ev.created_at
)
INSERT INTO hookd.deliveries (event_id, endpoint_id, attempts, next_attempt_at, lease_owner,
                              event_created_at)
SELECT ev.id, ep.id, 1, now() + interval '120 seconds', $2::uuid, ev.created_at
FROM ev CROSS JOIN hookd.endpoints ep
WHERE ep.enabled
RETURNING id
"""

ACK_SQL = """
UPDATE hookd.deliveries d
SET state = 'delivered', lease_owner = NULL, last_status = 204, finished_at = now()
FROM unnest($1::bigint[]) AS o(id)
WHERE d.id = o.id AND d.state = 'pending' AND d.lease_owner = $2
"""

ATTEMPTS_SQL = """
INSERT INTO hookd.attempts (delivery_id, attempt, started_at, duration_s, status)
SELECT id, 1, now(), 0.001, 204 FROM unnest($1::bigint[]) AS a(id)
"""


async def _worker(conn: asyncpg.Connection, batch: int, owner: uuid.UUID) -> int:
    done = 0
    while True:
        async with conn.transaction():
            rows = await conn.fetch(CLAIM_SQL, batch, owner)
        if not rows:
            return done
        ids = [r["id"] for r in rows]
        async with conn.transaction():
            await conn.execute(ACK_SQL, ids, owner)
            await conn.execute(ATTEMPTS_SQL, ids)
        done += len(ids)


async def run(dsn: str, batch: int, workers: int) -> dict[str, object]:
    """Drain the outbox; return deliveries/s and CPU seconds of this process."""
    conns = [await asyncpg.connect(dsn, timeout=10) for _ in range(workers)]
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    owner = uuid.uuid4()
    cpu0, t0 = time.process_time(), time.perf_counter()
    try:
        counts = await asyncio.gather(*(_worker(c, batch, owner) for c in conns))
    finally:
        for c in conns:
            await c.close()
    elapsed = time.perf_counter() - t0
    done = sum(counts)
    return {
        "deliveries": done,
        "seconds": round(elapsed, 3),
        "deliveries_per_s": round(done / elapsed, 1) if elapsed > 0 else None,
        "client_cpu_s": round(time.process_time() - cpu0, 3),
        "batch": batch,
        "workers": workers,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m bench.raw_db`."""
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM, signal.SIGINT])
    p = argparse.ArgumentParser(prog="python -m bench.raw_db", description=__doc__)
    p.add_argument("--dsn", required=True)
    p.add_argument("--batch", type=int, default=500, help="events claimed per round")
    p.add_argument("--workers", type=int, default=2, help="concurrent connections")
    args = p.parse_args(argv)
    result = uvloop.run(run(args.dsn, args.batch, args.workers))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    sys.stdout.flush()
    signal.sigtimedwait([signal.SIGTERM, signal.SIGINT], 60.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
