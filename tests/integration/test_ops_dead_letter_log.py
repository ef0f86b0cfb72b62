"""A dead-lettered delivery logs exactly one line; a retry logs only the rate-limited failure line.

A real daemon delivers to a receiver that always answers 500 until the retries run out, and to one
that recovers, and the test reads the daemon's own log records.
"""

from __future__ import annotations

import logging

import asyncpg
import pytest

from support.daemon import add_endpoint, publish, running_daemon, wait_until
from support.receiver import Receiver

SETTINGS = {"retry": {"schedule_s": [0.0, 0.1, 0.1], "max_attempts": 3, "jitter": 0.0}}


def lines(caplog: pytest.LogCaptureFixture, delivery_id: int) -> list[logging.LogRecord]:
    """The hookd log records at WARNING or above that name delivery `delivery_id`."""
    return [
        r
        for r in caplog.records
        if r.name.startswith("hookd")
        and r.levelno >= logging.WARNING
        and f"delivery {delivery_id} " in r.getMessage() + " "
    ]


async def test_dead_letter_logs_one_line_with_ids_event_type_and_last_error(
    dsn: str, db: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with Receiver() as rx:
        rx.script("/down", [500])
        rx.script("/flaky", [500, 204])
        down, _ = await add_endpoint(dsn, rx.url_for("/down"), ("order.*",))
        flaky, _ = await add_endpoint(dsn, rx.url_for("/flaky"), ("user.*",))
        await publish(db, "order.paid", {"id": 1})
        await publish(db, "user.created", {"id": 2})
        async with running_daemon(dsn, SETTINGS):
            await wait_until(
                db,
                "SELECT count(*) FILTER (WHERE state = 'failed') = 1"
                " AND count(*) FILTER (WHERE state = 'delivered') = 1 FROM hookd.deliveries",
                timeout_s=15,
            )
    dead = await db.fetchrow(
        "SELECT id, last_error FROM hookd.deliveries WHERE endpoint_id = $1", down
    )
    retried = await db.fetchval("SELECT id FROM hookd.deliveries WHERE endpoint_id = $1", flaky)
    assert dead is not None and dead["last_error"] == "HTTP 500"

    dead_lines = [r.getMessage() for r in lines(caplog, dead["id"])]
    dead_letter = [m for m in dead_lines if "dead-letter" in m]
    assert dead_letter == [
        f"endpoint {down} delivery {dead['id']} (order.paid) dead-lettered after 3 attempts:"
        " HTTP 500"
    ], dead_lines
    # Attempts 1 and 2 were retried: one (rate-limited) failure line each, nothing more; the
    # third ended in the dead letter, whose one line says so.
    assert sorted(m for m in dead_lines if m not in dead_letter) == [
        f"endpoint {down} delivery {dead['id']} attempt {n} failed: HTTP 500" for n in (1, 2)
    ], dead_lines
    assert [r.getMessage() for r in lines(caplog, retried)] == [
        f"endpoint {flaky} delivery {retried} attempt 1 failed: HTTP 500"
    ]


async def test_a_delivery_that_cannot_be_sent_logs_its_dead_letter_too(
    dsn: str, db: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with Receiver() as rx:
        ep, _ = await add_endpoint(dsn, rx.url_for("/never"))
        # A secret hookd cannot sign with (written behind the CLI's back): nothing can be sent.
        await db.execute("UPDATE hookd.endpoints SET secret = 'not-a-secret' WHERE id = $1", ep)
        await publish(db, "invoice.sent", {"id": 3})
        async with running_daemon(dsn, SETTINGS):
            await wait_until(db, "SELECT state = 'failed' FROM hookd.deliveries", timeout_s=15)
        assert rx.count == 0
    delivery_id = await db.fetchval("SELECT id FROM hookd.deliveries")
    found = [r.getMessage() for r in lines(caplog, delivery_id)]
    assert len(found) == 1, found
    assert found[0].startswith(
        f"endpoint {ep} delivery {delivery_id} (invoice.sent) dead-lettered: cannot send: "
    ), found


async def test_one_attempt_is_singular_in_the_dead_letter_line(
    dsn: str, db: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with Receiver() as rx:
        rx.script("/down", [500])
        down, _ = await add_endpoint(dsn, rx.url_for("/down"), ("order.*",))
        await publish(db, "order.paid", {"id": 1})
        async with running_daemon(dsn, {"retry": {"max_attempts": 1}}):
            dead = await wait_until(
                db, "SELECT id FROM hookd.deliveries WHERE state = 'failed'", timeout_s=15
            )
    assert [r.getMessage() for r in lines(caplog, dead) if "dead-letter" in r.getMessage()] == [
        f"endpoint {down} delivery {dead} (order.paid) dead-lettered after 1 attempt: HTTP 500"
    ]
