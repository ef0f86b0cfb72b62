"""Small helpers shared by the scenarios: ports, percentiles, bounded waits, process accounting."""

from __future__ import annotations

import asyncio
import math
import signal
import socket
import statistics
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path

import psutil

LOOPBACK_HOSTS = ("127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4")
"""The sink's hosts: one origin (and so one hookd connection pool) per host, all on loopback."""


class BenchError(Exception):
    """A benchmark could not run (a component failed to start or answer in time)."""


def free_port(hosts: Sequence[str] = ("127.0.0.1",), attempts: int = 20) -> int:
    """A TCP port that is free on every host in `hosts` right now (all loopback addresses).

    The port may be taken between this call and its use; callers that bind it retry on failure.
    Raises BenchError after `attempts` tries.
    """
    for _ in range(attempts):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((hosts[0], 0))
            port = int(probe.getsockname()[1])
        if all(_can_bind(h, port) for h in hosts[1:]):
            return port
    raise BenchError(f"no port free on all of {', '.join(hosts)} after {attempts} tries")


def _can_bind(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def latency_summary_ms(seconds: Sequence[float]) -> dict[str, float | int | None]:
    """p50/p90/p99/max (milliseconds, rounded to 3 decimals) and count of latencies in seconds."""

    def ms(v: float | None) -> float | None:
        return None if v is None else round(v * 1000.0, 3)

    data = sorted(seconds)
    return {
        "n": len(data),
        "p50_ms": ms(_sorted_quantile(data, 0.50)),
        "p90_ms": ms(_sorted_quantile(data, 0.90)),
        "p99_ms": ms(_sorted_quantile(data, 0.99)),
        "max_ms": ms(data[-1] if data else None),
    }


def _sorted_quantile(data: Sequence[float], q: float) -> float | None:
    if not data:
        return None
    pos = (len(data) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def median(values: Iterable[float]) -> float:
    """The median of a non-empty iterable."""
    return float(statistics.median(list(values)))


def ratio(num: float | None, den: float | None, digits: int = 4) -> float | None:
    """num / den rounded, or None when either is missing or den is 0."""
    if num is None or den is None or den == 0:
        return None
    return round(num / den, digits)


async def wait_for(
    check: Callable[[], Awaitable[bool]], timeout_s: float, interval_s: float, what: str
) -> None:
    """Call `check` every `interval_s` seconds until it returns True.

    Raises BenchError naming `what` if it is still False after `timeout_s` seconds.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        if await check():
            return
        if time.monotonic() >= deadline:
            raise BenchError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        await asyncio.sleep(interval_s)


def peak_rss_bytes(pid: int) -> int | None:
    """The peak resident set size of `pid` so far (VmHWM from /proc, bytes); None if unknown."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def tree_cpu_seconds(pid: int | None) -> float:
    """CPU seconds (user + system) of `pid`, its live descendants and its reaped children.

    A PostgreSQL backend that exits during a measurement is reaped by the postmaster, and its CPU
    time moves to the postmaster's children_user/children_system; counting both keeps the delta
    between two calls exact for process trees whose members come and go.
    """
    if pid is None:
        return 0.0
    try:
        root = psutil.Process(pid)
        t = root.cpu_times()
        total = t.user + t.system + t.children_user + t.children_system
        kids = root.children(recursive=True)
    except psutil.Error:
        return 0.0
    for child in kids:
        try:
            c = child.cpu_times()
        except psutil.Error:
            continue
        total += c.user + c.system
    return total


def rss_bytes(pid: int) -> int | None:
    """The current resident set size of `pid` (VmRSS, bytes); None if unknown."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


async def stop_process(
    proc: asyncio.subprocess.Process, sig: signal.Signals, timeout_s: float
) -> int | None:
    """Send `sig` to a child and wait up to `timeout_s` seconds, then SIGKILL; return its status.

    If the waiting task is cancelled, the child is killed before the cancellation propagates, so
    no child outlives the benchmark.
    """
    try:
        if proc.returncode is None:
            proc.send_signal(sig)
            try:
                await asyncio.wait_for(proc.wait(), timeout_s)
            except TimeoutError:
                proc.kill()
                await asyncio.wait_for(proc.wait(), timeout_s)
    finally:
        if proc.returncode is None:
            proc.kill()
    return proc.returncode
