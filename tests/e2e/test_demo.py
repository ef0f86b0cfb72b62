"""`hookd demo`: the whole path on its own throwaway PostgreSQL, as a new user runs it."""

from __future__ import annotations

import asyncio
import sys


async def test_demo_delivers_everything_and_cleans_up() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hookd",
        "demo",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(90):
        out, err = await proc.communicate()
    text = out.decode()
    assert proc.returncode == 0, text + err.decode()
    assert "MISMATCH" not in text
    assert "8 deliveries expected, 8 received and verified" in text
    assert "0 failed verification" in text
    assert "4 secrets encrypted at rest" in text
    assert "removed the data directory" in text
    assert "Traceback" not in err.decode()
