"""Watching a daemon subprocess in fault tests: fail at once, with its stderr, if it exits early.

Used with `support.proc.DaemonProcess` (or any launcher with the same `lines`, `name`,
`returncode`, `running` and `wait_exit`). Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from typing import Protocol


class Watched(Protocol):
    """What these helpers need of a daemon subprocess."""

    name: str
    lines: list[str]
    returncode: int | None

    @property
    def running(self) -> bool: ...

    async def wait_exit(self, timeout_s: float) -> int: ...


def report(proc: Watched, tail: int = 60) -> str:
    """The daemon's stderr for a failure message: each traceback's last line, then the tail."""
    lines = proc.lines
    ends = [
        line.strip()
        for i, line in enumerate(lines)
        if re.match(r"^\s*[|]?\s*[A-Za-z_][\w.]*(Error|Exception|Group)\b.*:", line)
        and any("Traceback" in earlier for earlier in lines[max(0, i - 200) : i])
    ]
    head = f"{proc.name} exit status {proc.returncode}; {len(lines)} stderr lines"
    if ends:
        head += "; exceptions in tracebacks:\n  " + "\n  ".join(dict.fromkeys(ends))
    return f"{head}\n--- last {tail} stderr lines ---\n" + "\n".join(lines[-tail:])


def assert_no_traceback(proc: Watched) -> None:
    stderr = "\n".join(proc.lines)
    assert "Traceback" not in stderr, f"a traceback on stderr: {report(proc, 200)}"


async def died(proc: Watched, when: str) -> AssertionError:
    """The error for a daemon that exited `when` (reaped first, bounded, so its status is known)."""
    await proc.wait_exit(10)
    return AssertionError(f"{proc.name} exited {when}: {report(proc)}")


async def alive_for(proc: Watched, seconds: float, when: str) -> None:
    """Let `seconds` pass (the scenario's length, not a readiness wait); fail at once if the
    daemon exits meanwhile."""
    try:
        await proc.wait_exit(seconds)
    except AssertionError:
        return  # still running `seconds` later, as it should
    raise await died(proc, when)


async def wait_for(
    proc: Watched,
    check: Callable[[], Awaitable[bool]],
    what: str,
    timeout_s: float,
    *,
    pause_s: float = 0.1,
) -> None:
    """Poll `check()` with short pauses until it holds (a condition with no event of its own);
    fail at once if the daemon exits, or after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        if not proc.running:
            raise await died(proc, f"while waiting for {what}")
        if await check():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s}s; {report(proc)}")
        await asyncio.sleep(pause_s)
