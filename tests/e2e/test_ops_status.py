"""`hookd status [--json]` as an operator runs it: figures read from the database only."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from typing import Any

import asyncpg
import orjson

from support.daemon import add_endpoint, running_daemon, wait_until
from support.receiver import Receiver

_PUBLISH_MANY = (
    "SELECT hookd.publish('order.paid', jsonb_build_object('i', i)) FROM generate_series(1, $1) i"
)


async def _hookd(*args: str) -> tuple[int, str, str]:
    """Run `python -m hookd ARGS` (bounded); return (exit status, stdout, stderr)."""
    env = {k: v for k, v in os.environ.items() if k != "HOOKD_DSN"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hookd",
        *args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    async with asyncio.timeout(30):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def _set_up_every_state(dsn: str, db: asyncpg.Connection, rx: Receiver) -> dict[str, int]:
    """Endpoints and deliveries in every state the status reports; returns endpoint ids by role.

    Every receiver answers 500. `dead` allows one attempt: its deliveries end `failed`. `flaky`
    retries in an hour: `pending`, and its breaker is open. `off` likewise, then an operator
    disables it: `paused`. Then 3 more events with no daemon running: the outbox backlog.
    """
    roles = ("dead", "flaky", "off")
    for role in roles:
        rx.script(f"/{role}", [500])
    ids = {role: (await add_endpoint(dsn, rx.url_for(f"/{role}")))[0] for role in roles}
    settings = {
        "dead": '{"retry_max_attempts": 1}',
        "flaky": '{"retry_schedule_s": [0, 3600]}',
        "off": '{"retry_schedule_s": [0, 3600]}',
    }
    for role, value in settings.items():
        await db.execute(
            "UPDATE hookd.endpoints SET settings = $2::jsonb WHERE id = $1", ids[role], value
        )
    await db.execute(_PUBLISH_MANY, 2)
    async with running_daemon(dsn):
        await wait_until(
            db,
            "SELECT count(*) FILTER (WHERE state = 'failed') = 2"
            " AND count(*) FILTER (WHERE state = 'pending' AND attempts = 1) = 4"
            " AND (SELECT count(*) FROM hookd.attempts) = 6"
            " FROM hookd.deliveries",
            timeout_s=10,
        )
    code, out, err = await _hookd("endpoint", "disable", "--dsn", dsn, str(ids["off"]))
    assert code == 0 and "2 deliveries paused" in out, out + err
    # What the daemon records when a breaker opens; set directly so the test need not wait for
    # [breaker] failure_threshold failures.
    await db.execute(
        "UPDATE hookd.endpoints SET breaker_open_until = now() + interval '10 minutes'"
        " WHERE id = $1",
        ids["flaky"],
    )
    await db.execute(_PUBLISH_MANY, 3)
    return ids


async def test_status_reports_backlog_states_failures_and_endpoints(
    dsn: str, db: asyncpg.Connection
) -> None:
    async with Receiver() as rx:
        ids = await _set_up_every_state(dsn, db, rx)

    code, out, err = await _hookd("status", "--dsn", dsn, "--json")
    assert code == 0, err
    data: dict[str, Any] = orjson.loads(out)
    assert data["outbox_backlog"] == 3
    assert (data["pending"], data["paused"], data["failed"]) == (2, 2, 2)
    assert data["oldest_pending_s"] is not None and data["oldest_pending_s"] >= 0
    assert [e["id"] for e in data["disabled_endpoints"]] == [ids["off"]]
    assert data["disabled_endpoints"][0]["reason"] == "disabled by operator"

    code, text, err = await _hookd("status", "--dsn", dsn)
    assert code == 0, err
    assert re.search(r"^outbox backlog\s+3 events", text, re.M), text
    assert re.search(r"^pending\s+2 deliveries", text, re.M), text
    assert re.search(r"^paused\s+2 deliveries", text, re.M), text
    assert re.search(r"^failed\s+2 deliveries", text, re.M), text
    # One line per endpoint that needs a look: disabled (with its reason), breaker open, failing.
    assert re.search(rf"^\s*{ids['off']}\s+disabled: disabled by operator\s+2\s", text, re.M)
    assert re.search(rf"^\s*{ids['flaky']}\s+breaker open until ", text, re.M), text
    assert re.search(rf"^\s*{ids['dead']}\s+failing\s+2\s", text, re.M), text

    assert data["failed_attempts_last_hour"] == 6
    assert [e["id"] for e in data["open_breakers"]] == [ids["flaky"]], data["open_breakers"]
    assert re.search(r"^failed attempts\s+6 in the last hour", text, re.M), text


async def test_status_without_a_database_is_one_line_and_exit_2() -> None:
    code, out, err = await _hookd(
        "status", "--dsn", "postgresql://nobody@127.0.0.1:1/none?connect_timeout=2", "--json"
    )
    assert code == 2 and out == ""
    assert err.startswith("hookd: error:") and err.count("\n") == 1, err
