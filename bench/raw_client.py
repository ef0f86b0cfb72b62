"""The raw aiohttp client ceiling: POST hookd-shaped bodies to the sink with no database at all.

Run as its own process on uvloop (as hookd is), so it has a core to itself exactly like the
daemon: `python -m bench.raw_client --url URL [--url URL ...] --events N`. Every event is POSTed
once to every URL, like a burst of N events fanned out to one endpoint per URL; each origin gets
its own ClientSession with a connector limit and as many workers as `--per-host` (hookd's
per-origin pools, same limit). Headers mirror hookd's (webhook-id, -timestamp, -signature of the
same lengths, User-Agent, no Accept-Encoding) but carry precomputed values: the ceiling is the
client alone. Prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson
import uvloop

from bench.common import BenchError, stop_process
from bench.payload import DEFAULT_BODY_BYTES, payload_json, request_body

_SIGNATURE = "v1," + "A" * 43 + "="
"""Same length as a real Standard Webhooks v1 signature (base64 of 32 bytes)."""


async def _origin_load(
    urls: Sequence[str], bodies: Sequence[bytes], per_host: int, deadline: float
) -> tuple[int, int, int]:
    """POST every body to each of `urls` (one origin) with `per_host` workers.

    Returns (2xx responses, other responses, errors).
    """
    counts = [0, 0, 0]
    jobs = [(url, no) for no in range(len(bodies)) for url in urls]
    next_job = 0
    connector = aiohttp.TCPConnector(limit=per_host, limit_per_host=0, keepalive_timeout=30)
    timeout = aiohttp.ClientTimeout(total=30, sock_connect=5)
    async with aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        auto_decompress=False,
        headers={"User-Agent": "hookd"},
        skip_auto_headers=("Accept-Encoding",),
    ) as session:

        async def worker() -> None:
            nonlocal next_job
            while next_job < len(jobs) and time.monotonic() < deadline:
                url, no = jobs[next_job]
                next_job += 1
                headers = {
                    "Content-Type": "application/json",
                    "webhook-id": f"msg_0123456789_{no}",
                    "webhook-timestamp": str(int(time.time())),
                    "webhook-signature": _SIGNATURE,
                }
                try:
                    async with session.post(
                        url, data=bodies[no], headers=headers, allow_redirects=False
                    ) as resp:
                        await resp.read()
                        counts[0 if 200 <= resp.status < 300 else 1] += 1
                except (aiohttp.ClientError, OSError, TimeoutError):
                    counts[2] += 1

        async with asyncio.TaskGroup() as tg:
            for _ in range(per_host):
                tg.create_task(worker())
    return counts[0], counts[1], counts[2]


async def measure(
    urls: Sequence[str], events: int, per_host: int, body_bytes: int, max_s: float
) -> dict[str, Any]:
    """POST `events` bodies to each URL; return requests/s and CPU seconds per 1,000 requests.

    URLs on the same origin share one session and its `per_host` limit, as in hookd.
    """
    bodies = [request_body(payload_json(i, body_bytes), position=i) for i in range(1, events + 1)]
    by_origin: dict[str, list[str]] = {}
    for url in urls:
        parts = urlsplit(url)
        by_origin.setdefault(f"{parts.scheme}://{parts.netloc}", []).append(url)
    cpu0, t0 = time.process_time(), time.perf_counter()
    deadline = time.monotonic() + max_s
    async with asyncio.TaskGroup() as tg:
        tasks = [
            tg.create_task(_origin_load(same, bodies, per_host, deadline))
            for same in by_origin.values()
        ]
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    ok = sum(t.result()[0] for t in tasks)
    other = sum(t.result()[1] for t in tasks)
    errors = sum(t.result()[2] for t in tasks)
    done = ok + other + errors
    return {
        "requests": done,
        "expected": events * len(urls),
        "ok": ok,
        "non_2xx": other,
        "errors": errors,
        "elapsed_s": round(elapsed, 3),
        "requests_per_s": round(ok / elapsed, 1) if elapsed > 0 else None,
        "cpu_s": round(cpu, 3),
        "cpu_s_per_1000": round(cpu / done * 1000, 4) if done else None,
        "body_bytes": len(bodies[0]) if bodies else 0,
        "per_host": per_host,
        "origins": len(by_origin),
        "timed_out": done < events * len(urls),
    }


REPO_ROOT = Path(__file__).resolve().parents[1]


async def run_subprocess(
    urls: Sequence[str], events: int, per_host: int, body_bytes: int, max_s: float
) -> dict[str, Any]:
    """Measure the ceiling in a child process (its own core, like the daemon); return its JSON.

    Raises BenchError if the child fails or overruns `max_s` by more than a minute.
    """
    args = [f"--url={u}" for u in urls]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.raw_client",
        *args,
        f"--events={events}",
        f"--per-host={per_host}",
        f"--body-bytes={body_bytes}",
        f"--max-s={max_s}",
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), max_s + 60.0)
    finally:
        await stop_process(proc, signal.SIGTERM, 5.0)
    if proc.returncode != 0:
        raise BenchError(f"raw client failed: {err.decode(errors='replace').strip()}")
    result: dict[str, Any] = orjson.loads(out)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse arguments, measure, print one JSON object."""
    p = argparse.ArgumentParser(prog="python -m bench.raw_client", description=__doc__)
    p.add_argument("--url", action="append", required=True, help="sink URL (repeat per host)")
    p.add_argument("--events", type=int, required=True, help="bodies POSTed to each URL")
    p.add_argument("--per-host", type=int, default=64, help="concurrent requests per origin")
    p.add_argument("--body-bytes", type=int, default=DEFAULT_BODY_BYTES)
    p.add_argument("--max-s", type=float, default=600.0, help="stop after this many seconds")
    args = p.parse_args(argv)
    result = uvloop.run(measure(args.url, args.events, args.per_host, args.body_bytes, args.max_s))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
