"""The PGQueuer peer: a worker whose job POSTs one webhook through one shared aiohttp session.

Runs in PGQueuer's own virtualenv (`bench/.peers/pgqueuer`), so it imports nothing from bench:
`python bench/peer_pgqueuer.py --dsn DSN [--batch-size N] [--max-tasks N] [--per-host N]`.

Each job's payload is `{"url", "id", "body"}` (see bench/producer.py). The job signs the body the
way hookd does (Standard Webhooks v1: HMAC-SHA256 of "id.timestamp.body", fresh timestamp), POSTs
it with hookd's header set, never follows redirects, reads the (empty) response, and raises on a
non-2xx answer. Sessions: one aiohttp ClientSession for all jobs, at most `--per-host` connections
per origin (hookd's per-origin limit). Prints "ready" once the QueueManager is about to run; on
SIGTERM it shuts down.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import signal
import sys
import time
from collections.abc import Sequence
from datetime import timedelta

import aiohttp
import asyncpg
import uvloop
from pgqueuer import PgQueuer
from pgqueuer.db import AsyncpgDriver, AsyncpgPoolDriver
from pgqueuer.models import Job

SECRET = base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw7oKm6gcbmk4=")
"""A fixed signing secret (32 bytes), as `whsec_` secrets are."""


async def run(args: argparse.Namespace) -> None:
    """Set up the queue manager and run it until SIGTERM."""
    if args.pool > 0:
        pool = await asyncpg.create_pool(args.dsn, min_size=args.pool, max_size=args.pool)
        pgq = PgQueuer(AsyncpgPoolDriver(pool))
    else:
        conn = await asyncpg.connect(args.dsn)
        pgq = PgQueuer(AsyncpgDriver(conn))
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=args.per_host, keepalive_timeout=30)
    session = aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=30, sock_connect=5),
        auto_decompress=False,
        headers={"User-Agent": "pgqueuer-bench"},
        skip_auto_headers=("Accept-Encoding",),
    )

    @pgq.entrypoint("webhook")
    async def webhook(job: Job) -> None:
        assert job.payload is not None
        job_data = json.loads(job.payload)
        body = job_data["body"].encode()
        msg_id = f"msg_peer_{job_data['id']}"
        ts = str(int(time.time()))
        mac = hmac.new(SECRET, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()
        headers = {
            "Content-Type": "application/json",
            "webhook-id": msg_id,
            "webhook-timestamp": ts,
            "webhook-signature": "v1," + base64.b64encode(mac).decode(),
        }
        async with session.post(
            job_data["url"], data=body, headers=headers, allow_redirects=False
        ) as resp:
            await resp.read()
            if not 200 <= resp.status < 300:
                raise RuntimeError(f"HTTP {resp.status}")

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, pgq.shutdown.set)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    try:
        await pgq.run(
            batch_size=args.batch_size,
            max_concurrent_tasks=args.max_tasks or None,
            dequeue_timeout=timedelta(seconds=args.dequeue_timeout_s),
        )
    finally:
        await session.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    p = argparse.ArgumentParser(prog="bench/peer_pgqueuer.py", description=__doc__)
    p.add_argument("--dsn", required=True)
    p.add_argument("--batch-size", type=int, default=10, help="jobs per dequeue (PGQueuer: 10)")
    p.add_argument("--max-tasks", type=int, default=0, help="max_concurrent_tasks (0: no cap)")
    p.add_argument("--pool", type=int, default=0, help="asyncpg pool size (0: one connection)")
    p.add_argument("--per-host", type=int, default=64, help="connections per origin")
    p.add_argument("--dequeue-timeout-s", type=float, default=30.0)
    args = p.parse_args(argv)
    uvloop.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
