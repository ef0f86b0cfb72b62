"""Final answers: statuses that end a delivery at once (`http.final_statuses`, an endpoint's
`final_statuses` setting), with a real daemon and receiver."""

from __future__ import annotations

import asyncpg
import pytest

from hookd import config
from hookd.endpoints import validate_settings
from hookd.errors import ConfigError, InvalidEndpoint

from support.daemon import add_endpoint, publish, running_daemon, wait_until
from support.receiver import Receiver

DELIVERY = (
    "SELECT state, attempts, last_status, last_error FROM hookd.deliveries WHERE endpoint_id = $1"
)
ATTEMPTS = (
    "SELECT count(*) FROM hookd.attempts a JOIN hookd.deliveries d ON d.id = a.delivery_id"
    " WHERE d.endpoint_id = $1"
)


async def _settings(db: asyncpg.Connection, endpoint_id: int, settings: str) -> None:
    """Per-endpoint overrides, written the way `hookd endpoint settings` stores them."""
    await db.execute(
        "UPDATE hookd.endpoints SET settings = $2::jsonb WHERE id = $1", endpoint_id, settings
    )


async def test_413_is_dead_lettered_after_one_attempt_and_other_statuses_are_retried(
    dsn: str, db: asyncpg.Connection
) -> None:
    async with Receiver() as rx:
        big, _ = await add_endpoint(dsn, rx.url_for("/big"))
        bad, _ = await add_endpoint(dsn, rx.url_for("/bad"))
        rx.script("/big", [413])
        rx.script("/bad", [422, 422, 204])
        await publish(db, "order.paid", {"id": 1})
        # The default configuration: http.final_statuses = [413].
        async with running_daemon(dsn):
            await wait_until(
                db,
                "SELECT count(*) = 2 FROM hookd.deliveries WHERE state IN ('delivered', 'failed')",
            )
            # The retried one needed three attempts, 0.2 s apart: time enough for a second
            # attempt of the 413 if there were one.
            await rx.wait_for(3, path="/bad", timeout_s=5)
        assert len(rx.requests_for("/big")) == 1, rx.requests_for("/big")
        state, attempts, status, error = await db.fetchrow(DELIVERY, big)
        assert (state, attempts, status) == ("failed", 1, 413)
        assert error == "HTTP 413, a final answer: not retried (http.final_statuses)"
        assert await db.fetchval(ATTEMPTS, big) == 1
        state, attempts, status, _ = await db.fetchrow(DELIVERY, bad)
        assert (state, attempts, status) == ("delivered", 3, 204)


async def test_an_endpoints_final_statuses_replace_the_configured_ones(
    dsn: str, db: asyncpg.Connection
) -> None:
    async with Receiver() as rx:
        strict, _ = await add_endpoint(dsn, rx.url_for("/strict"))
        lenient, _ = await add_endpoint(dsn, rx.url_for("/lenient"))
        # 422 is not final in the configuration but is for /strict; 413 is final in the
        # configuration but not for /lenient, whose empty list retries every status.
        await _settings(db, strict, '{"final_statuses": [422]}')
        await _settings(db, lenient, '{"final_statuses": []}')
        rx.script("/strict", [422])
        rx.script("/lenient", [413, 204])
        await publish(db, "order.paid", {"id": 1})
        async with running_daemon(dsn, {"http": {"final_statuses": [413]}}):
            await wait_until(
                db,
                "SELECT count(*) = 2 FROM hookd.deliveries WHERE state IN ('delivered', 'failed')",
            )
            await rx.wait_for(2, path="/lenient", timeout_s=5)
        assert len(rx.requests_for("/strict")) == 1
        state, attempts, status, error = await db.fetchrow(DELIVERY, strict)
        assert (state, attempts, status) == ("failed", 1, 422)
        assert error == (
            f"HTTP 422, a final answer: not retried (endpoint {strict} setting final_statuses)"
        )
        state, attempts, status, _ = await db.fetchrow(DELIVERY, lenient)
        assert (state, attempts, status) == ("delivered", 2, 204)


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ([503], "503 cannot be final: 503 Service Unavailable is temporary"),
        ([429], "429 cannot be final: 429 Too Many Requests"),
        ([410], "410 cannot be final: 410 Gone has its own rule"),
        ([200], "200 cannot be final: give 4xx or 5xx"),
        (["413"], "expected an integer"),
        (413, "expected a list"),
    ],
)
def test_configured_final_statuses_are_checked(value: object, needle: str) -> None:
    with pytest.raises(ConfigError, match=r"^http\.final_statuses") as info:
        config.from_mapping({"http": {"final_statuses": value}})
    assert needle in str(info.value)


def test_default_final_statuses_and_endpoint_settings() -> None:
    assert config.from_mapping({}).http.final_statuses == (413,)
    assert config.from_mapping({"http": {"final_statuses": []}}).http.final_statuses == ()
    assert validate_settings({"final_statuses": [422, 413, 422]}) == {"final_statuses": [413, 422]}
    with pytest.raises(InvalidEndpoint, match=r"^settings\.final_statuses: 408 cannot be final"):
        validate_settings({"final_statuses": [408]})
    with pytest.raises(InvalidEndpoint, match=r"^settings\.final_statuses: expected a list"):
        validate_settings({"final_statuses": 413})
