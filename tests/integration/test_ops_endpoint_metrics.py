"""Per-endpoint figures in /metrics, so an operator sees which endpoint fails, with a bounded
number of series: the first `[admin] max_endpoint_labels` endpoints attempted get their id as the
`endpoint` label, the rest share "other".

A real daemon delivers to real receivers; /metrics is scraped over HTTP and read with
prometheus_client's own parser, and every figure is checked against the database.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import aiohttp
import asyncpg
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from hookd import config
from hookd.classify import STATUS_CLASSES
from hookd.daemon import Daemon
from hookd.errors import ConfigError
from hookd.metrics import Metrics

from support.daemon import add_endpoint, publish, running_daemon, wait_until
from support.receiver import Receiver

SETTINGS: dict[str, dict[str, Any]] = {
    "admin": {"max_endpoint_labels": 2},
    "retry": {"schedule_s": [0.0, 0.1, 0.1], "max_attempts": 3, "jitter": 0.0},
    # The failing endpoints must not trip their breaker within three attempts.
    "breaker": {"failure_threshold": 10},
}


async def scrape(daemon: Daemon) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """/metrics as {sample name: {sorted label pairs: value}}."""
    assert daemon.admin is not None
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{daemon.admin.port}/metrics") as resp,
    ):
        assert resp.status == 200
        text = await resp.text()
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = defaultdict(dict)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[s.name][tuple(sorted(s.labels.items()))] = s.value
    return samples


def value(samples: dict[str, Any], name: str, **labels: str) -> float:
    return float(samples[name][tuple(sorted(labels.items()))])


async def test_per_endpoint_attempts_outcomes_and_failure_streaks(
    dsn: str, db: asyncpg.Connection
) -> None:
    async with Receiver() as rx:
        rx.script("/down", [500])
        rx.script("/also-down", [503])
        ok, _ = await add_endpoint(dsn, rx.url_for("/ok"), ("a.*",))
        down, _ = await add_endpoint(dsn, rx.url_for("/down"), ("a.*", "b.*"))
        # Published later, so attempted after the two labels are taken: it becomes "other".
        beyond, _ = await add_endpoint(dsn, rx.url_for("/also-down"), ("c.*",))
        for i in range(3):
            await publish(db, "a.x", {"i": i})
        async with running_daemon(dsn, SETTINGS) as daemon:
            await wait_until(
                db,
                "SELECT count(*) FILTER (WHERE state = 'delivered') = 3"
                " AND count(*) FILTER (WHERE state = 'failed') = 3 FROM hookd.deliveries",
                timeout_s=15,
            )
            await publish(db, "c.x", {})
            await wait_until(
                db,
                "SELECT state = 'failed' FROM hookd.deliveries WHERE endpoint_id = $1",
                beyond,
                timeout_s=15,
            )
            samples = await scrape(daemon)

    attempts = "hookd_endpoint_attempts_total"
    labels = {dict(k)["endpoint"] for k in samples[attempts]}
    assert labels == {str(ok), str(down), "other"}, "two endpoints labelled, the rest other"
    # Every status class of a label value is exported from the start (rates need the zeros).
    for label in labels:
        assert {
            dict(k)["status_class"] for k in samples[attempts] if dict(k)["endpoint"] == label
        } == set(STATUS_CLASSES)

    by_endpoint = {
        r["endpoint_id"]: r
        for r in await db.fetch(
            "SELECT d.endpoint_id, count(*) FILTER (WHERE a.status BETWEEN 200 AND 299) AS ok,"
            " count(*) FILTER (WHERE a.status BETWEEN 500 AND 599) AS err"
            " FROM hookd.attempts a JOIN hookd.deliveries d ON d.id = a.delivery_id"
            " GROUP BY d.endpoint_id"
        )
    }
    assert (
        value(samples, attempts, endpoint=str(ok), status_class="2xx") == by_endpoint[ok]["ok"] == 3
    )
    assert value(samples, attempts, endpoint=str(ok), status_class="5xx") == 0
    assert (
        value(samples, attempts, endpoint=str(down), status_class="5xx")
        == by_endpoint[down]["err"]
        == 9
    )
    assert (
        value(samples, attempts, endpoint="other", status_class="5xx")
        == by_endpoint[beyond]["err"]
        == 3
    )

    deliveries = "hookd_endpoint_deliveries_total"
    assert value(samples, deliveries, endpoint=str(ok), outcome="delivered") == 3
    assert value(samples, deliveries, endpoint=str(ok), outcome="failed") == 0
    assert value(samples, deliveries, endpoint=str(down), outcome="failed") == 3
    assert value(samples, deliveries, endpoint=str(down), outcome="delivered") == 0
    assert value(samples, deliveries, endpoint="other", outcome="failed") == 1

    streak = "hookd_endpoint_consecutive_failures"
    assert value(samples, streak, endpoint=str(ok)) == 0
    assert value(samples, streak, endpoint=str(down)) == 9, "every attempt since the start failed"
    assert value(samples, streak, endpoint="other") == 3


def test_endpoint_labels_are_capped_and_other_shows_the_worst_streak() -> None:
    m = Metrics(max_endpoint_labels=2)
    assert [m.endpoint(e).label for e in (7, 3, 9, 7, 4)] == ["7", "3", "other", "7", "other"]
    other = m.endpoint(9)
    gauge = m.endpoint_consecutive_failures
    other.set_consecutive_failures(9, 5)
    other.set_consecutive_failures(4, 2)
    assert gauge.labels("other")._value.get() == 5
    other.set_consecutive_failures(9, 0)  # the worst recovers: the next worst shows
    assert gauge.labels("other")._value.get() == 2
    other.set_consecutive_failures(4, 0)
    assert gauge.labels("other")._value.get() == 0

    # A deleted endpoint frees its label for the next endpoint seen.
    m.forget_endpoint(3)
    assert m.endpoint(11).label == "11"
    assert m.endpoint(12).label == "other"
    families = {f.name: f for f in m.registry.collect()}
    seen = {s.labels["endpoint"] for s in families["hookd_endpoint_attempts"].samples}
    assert seen == {"7", "11", "other"}


def test_no_endpoint_labels_at_all() -> None:
    m = Metrics(max_endpoint_labels=0)
    assert {m.endpoint(e).label for e in range(1, 100)} == {"other"}


def test_max_endpoint_labels_is_validated() -> None:
    with pytest.raises(ConfigError, match=r"^admin\.max_endpoint_labels: must be 0 or more"):
        config.from_mapping({"admin": {"max_endpoint_labels": -1}})
    with pytest.raises(ConfigError, match=r"^admin\.max_endpoint_labels: expected an integer"):
        config.from_mapping({"admin": {"max_endpoint_labels": "50"}})
    assert config.from_mapping({}).admin.max_endpoint_labels == 50


def test_a_labelled_endpoint_costs_ten_series() -> None:
    """As documented: seven status classes, two outcomes and one gauge, and no `_created`
    series beside the counters."""
    m = Metrics(max_endpoint_labels=5)
    m.endpoint(7).attempts["5xx"].inc()
    text = generate_latest(m.registry).decode()
    mine = [line for line in text.splitlines() if 'endpoint="7"' in line]
    assert len(mine) == 10, mine
    assert not [line for line in text.splitlines() if "_created" in line.split(" ")[0]], text
