"""`hookd retention`: the partitions of the history, and a step on demand with [retention]."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from support.proc import run_cli, write_config


async def test_retention_lists_partitions_and_applies_the_configured_step(
    dsn: str, tmp_path: Path
) -> None:
    cfg = write_config(tmp_path / "hookd.toml", {"retention": {"partitions_ahead": 5}})
    applied = await run_cli("retention", "--apply", "--dsn", dsn, "--config", str(cfg))
    assert applied.returncode == 0, applied.describe()
    day = (datetime.now(UTC).date() + timedelta(days=5)).strftime("%Y%m%d")
    # The migration made today and two more days; the step adds up to day 5.
    assert f"create events_{day}" in applied.stdout.splitlines(), applied.describe()

    shown = await run_cli("retention", "--dsn", dsn, "--config", str(cfg))
    assert shown.returncode == 0, shown.describe()
    assert "open (any age)" in shown.stdout
    assert "delivered kept 7 days, dead letters 30 days" in shown.stdout.splitlines()[-1]

    listed = await run_cli("retention", "--json", "--dsn", dsn)
    parts = orjson.loads(listed.stdout)
    assert {"parent": "deliveries", "name": "deliveries_open"}.items() <= next(
        p for p in parts if p["name"] == "deliveries_open"
    ).items()
    assert f"attempts_{day}" in {p["name"] for p in parts}


async def test_a_bad_retention_setting_is_one_line(dsn: str, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "hookd.toml", {"retention": {"partitions_ahead": 0}})
    result = await run_cli("retention", "--apply", "--dsn", dsn, "--config", str(cfg))
    assert result.returncode == 2, result.describe()
    assert result.stderr.strip() == (
        "hookd: error: retention.partitions_ahead: must be 1-60 days, got 0"
    ), result.describe()
