"""Which wake-up machinery the installed hookd.publish uses, and how to tell the daemon is asleep.

Two forms exist (hookd/sql/001 and 004):

  waker table     `IF (SELECT sleeping FROM hookd.waker) THEN PERFORM pg_notify(...); END IF;`
                  the daemon sets `hookd.waker.sleeping` before it sleeps;
  advisory lock   `IF pg_try_advisory_xact_lock(KEY) THEN PERFORM pg_notify(...); END IF;`
                  every awake daemon holds `pg_advisory_lock_shared(KEY)` on its LISTEN
                  connection, so the lock can be taken only while all daemons sleep.

The benchmark reads the function's definition and adapts: the publish-overhead scenario strips the
block, and the idle-latency scenario waits until the daemon is asleep before each event.
"""

from __future__ import annotations

import re

import asyncpg

from bench.common import BenchError

AWAKE_LOCK_KEY = 114827819967585
"""hookd.listener.AWAKE_LOCK_KEY (the advisory lock an awake daemon holds in share mode)."""

_BLOCK = re.compile(
    r"(?:[ \t]*--[^\n]*\n)*"  # the comment lines right above the block
    r"[ \t]*IF\b[^;]*?(?:hookd\.waker|pg_try_advisory_xact_lock)[^;]*?\bTHEN\s+"
    r"PERFORM\s+pg_notify\([^;]*\);\s*END\s+IF\s*;[ \t]*\n",
    flags=re.IGNORECASE,
)

ASLEEP_SQL = {
    "waker": "SELECT sleeping FROM hookd.waker",
    "advisory_lock": (
        "SELECT NOT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted"
        " AND mode = 'ShareLock'"
        f" AND ((classid::bigint << 32) | objid::bigint) = {AWAKE_LOCK_KEY})"
    ),
}
"""Per form: a query that returns true while no daemon is awake (publishers would NOTIFY)."""


async def publish_definition(conn: asyncpg.Connection) -> str:
    """pg_get_functiondef of hookd.publish."""
    text: str = await conn.fetchval("SELECT pg_get_functiondef('hookd.publish'::regproc)")
    return text


def form_of(definition: str) -> str:
    """ "advisory_lock" or "waker": which wake-up machinery a hookd.publish definition uses."""
    if "pg_try_advisory_xact_lock" in definition:
        return "advisory_lock"
    if "hookd.waker" in definition:
        return "waker"
    raise BenchError("hookd.publish has no known wake-up block; update bench/wakeup.py")


async def form(conn: asyncpg.Connection) -> str:
    """The installed form."""
    return form_of(await publish_definition(conn))


def strip_wakeup(definition: str) -> str:
    """hookd.publish's definition as `bench.publish`, without its wake-up block.

    The copy keeps the function's name (in schema `bench`) because its body qualifies parameters
    as `publish.event_type`. Raises BenchError if the block is not found exactly once, so a change
    to hookd.publish cannot silently turn this variant into a copy of the real one.
    """
    stripped, n = _BLOCK.subn("", definition)
    if (
        n != 1
        or "pg_notify" in stripped
        or "waker" in stripped
        or "pg_try_advisory_xact_lock" in stripped
    ):
        raise BenchError(
            "cannot find exactly one wake-up block (IF pg_try_advisory_xact_lock(...) THEN PERFORM "
            "pg_notify(...); END IF; or the older IF (SELECT sleeping FROM hookd.waker) ...) in "
            "hookd.publish; update bench/wakeup.py"
        )
    renamed, n = re.subn(
        r"^CREATE OR REPLACE FUNCTION hookd\.publish\(",
        "CREATE OR REPLACE FUNCTION bench.publish(",
        stripped,
        flags=re.MULTILINE,
    )
    if n != 1:
        raise BenchError("unexpected pg_get_functiondef output for hookd.publish")
    return renamed
