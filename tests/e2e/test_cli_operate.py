"""Operating hookd from the real `hookd` command: show, update, settings, deliveries, attempts,
test events, retry, resend, replay and status, against a real database and (where attempts are
needed) a real daemon and receiver."""

from __future__ import annotations

import re
from pathlib import Path

import asyncpg
import orjson

from hookd.secretbox import generate_key

from support.daemon import running_daemon, wait_until
from support.proc import CliResult, run_cli, write_config
from support.receiver import Receiver


def ok(result: CliResult) -> str:
    assert result.returncode == 0, result.describe()
    assert "Traceback" not in result.stderr, result.describe()
    return result.stdout


def nothing(result: CliResult, *needles: str) -> None:
    """Exit 1 and one line on stderr that says what matched nothing."""
    assert result.returncode == 1, result.describe()
    assert "Traceback" not in result.stderr, result.describe()
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("hookd: "), result.describe()
    assert not lines[0].startswith("hookd: error:"), result.describe()
    for needle in needles:
        assert needle in lines[0], result.describe()


def error(result: CliResult, *needles: str) -> None:
    assert result.returncode == 2, result.describe()
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("hookd: error: "), result.describe()
    for needle in needles:
        assert needle in lines[0], result.describe()


async def _add(dsn: str, *args: str) -> int:
    out = ok(await run_cli("endpoint", "add", "--dsn", dsn, *args))
    m = re.match(r"endpoint (\d+)\n", out)
    assert m, out
    return int(m.group(1))


async def test_settings_merge_keeps_the_retry_schedule(dsn: str, db: asyncpg.Connection) -> None:
    ep = await _add(dsn, "--url", "https://receiver.example/h", "--retry-schedule", "0,5,300")
    ok(await run_cli("endpoint", "settings", str(ep), "--dsn", dsn, "--timeout", "5"))
    settings = orjson.loads(await db.fetchval("SELECT settings FROM hookd.endpoints"))
    assert settings == {"retry_schedule_s": [0.0, 5.0, 300.0], "total_timeout_s": 5.0}

    out = ok(await run_cli("endpoint", "settings", str(ep), "--dsn", dsn, "--unset", "timeout"))
    assert "retry_schedule_s=0,5,300" in out, out
    settings = orjson.loads(await db.fetchval("SELECT settings FROM hookd.endpoints"))
    assert settings == {"retry_schedule_s": [0.0, 5.0, 300.0]}
    error(
        await run_cli("endpoint", "settings", str(ep), "--dsn", dsn, "--unset", "nope"),
        "--unset",
        "nope",
    )
    ok(await run_cli("endpoint", "settings", str(ep), "--dsn", dsn, "--clear"))
    assert orjson.loads(await db.fetchval("SELECT settings FROM hookd.endpoints")) == {}


async def test_show_and_update(dsn: str, db: asyncpg.Connection) -> None:
    ep = await _add(
        dsn,
        "--url", "https://receiver.example/h", "--event-types", "order.*",
        "--description", "orders", "--metadata", "team=billing", "--max-attempts", "3",
    )  # fmt: skip
    secret = await db.fetchval("SELECT secret FROM hookd.endpoints")
    ok(await run_cli("endpoint", "auth", str(ep), "--dsn", dsn, "--bearer", "t0p-s3cret"))

    text = ok(await run_cli("endpoint", "show", str(ep), "--dsn", dsn))
    assert secret not in text and "t0p-s3cret" not in text, text
    for needle in ("https://receiver.example/h", "order.*", "orders", "team", "billing"):
        assert needle in text, (needle, text)
    assert re.search(r"\*retry_max_attempts\s+3\b", text), text
    assert re.search(r"authentication\s+bearer", text), text
    assert re.search(r"breaker\s+closed", text), text
    data = orjson.loads(ok(await run_cli("endpoint", "show", str(ep), "--dsn", dsn, "--json")))
    assert data["overrides"] == {"retry_max_attempts": 3}
    assert data["authentication"] == ["bearer"] and data["secret"] == "whsec_…"
    assert data["metadata"] == {"team": "billing"}

    ok(
        await run_cli(
            "endpoint", "update", str(ep), "--dsn", dsn, "--event-types", "user.*,order.paid",
            "--tenant", "acme", "--metadata", "tier=gold", "--timeout", "4",
        )
    )  # fmt: skip
    row = await db.fetchrow("SELECT * FROM hookd.endpoints")
    assert row["event_types"] == ["user.*", "order.paid"] and row["tenant"] == "acme"
    assert orjson.loads(row["metadata"]) == {"team": "billing", "tier": "gold"}
    assert orjson.loads(row["settings"]) == {"retry_max_attempts": 3, "total_timeout_s": 4.0}
    assert row["url"] == "https://receiver.example/h" and row["description"] == "orders"
    assert row["credentials"] is not None, "authentication kept"

    ok(
        await run_cli(
            "endpoint", "update", str(ep), "--dsn", dsn, "--no-tenant", "--clear-metadata",
            "--unset", "max-attempts", "--description", "",
        )
    )  # fmt: skip
    row = await db.fetchrow("SELECT * FROM hookd.endpoints")
    assert row["tenant"] is None and row["description"] is None
    assert orjson.loads(row["metadata"]) == {}
    assert orjson.loads(row["settings"]) == {"total_timeout_s": 4.0}

    error(await run_cli("endpoint", "update", str(ep), "--dsn", dsn), "at least one change")
    error(await run_cli("endpoint", "show", "999", "--dsn", dsn), "no endpoint with id 999")
    error(
        await run_cli("endpoint", "update", str(ep), "--dsn", dsn, "--event-types", "not a type"),
        "event_types",
    )


async def test_add_refuses_what_the_ssrf_guard_refuses_and_warns_without_a_key(
    dsn: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    # The default policy: loopback, link-local and localhost are refused at add time.
    for url in ("https://127.0.0.1/h", "https://localhost/h", "https://169.254.169.254/h"):
        error(await run_cli("endpoint", "add", "--dsn", dsn, "--url", url), "url")
    assert await db.fetchval("SELECT count(*) FROM hookd.endpoints") == 0
    ep = await _add(dsn, "--url", "https://receiver.example/h")
    error(
        await run_cli("endpoint", "update", str(ep), "--dsn", dsn, "--url", "https://[::1]/h"),
        "url",
    )
    error(
        await run_cli("endpoint", "set-url", str(ep), "--dsn", dsn, "--url", "https://10.0.0.1/"),
        "url",
    )

    opened = write_config(tmp_path / "open.toml")  # allows 127.0.0.0/8 and ::1
    added = await run_cli(
        "endpoint", "add", "--dsn", dsn, "--config", str(opened), "--url", "http://127.0.0.1:9/h"
    )
    ok(added)
    assert "signing secret stored unencrypted" in added.stderr, added.describe()
    assert "hookd keygen" in added.stderr, added.describe()

    key_file = tmp_path / "secret.key"
    key_file.write_text(generate_key() + "\n", encoding="utf-8")
    keyed = write_config(tmp_path / "keyed.toml", {"security": {"secret_key_file": str(key_file)}})
    added = await run_cli(
        "endpoint", "add", "--dsn", dsn, "--config", str(keyed), "--url", "http://127.0.0.1:9/k"
    )
    ok(added)
    assert added.stderr == "", added.describe()


async def test_deliveries_attempts_resend_test_and_retry(
    dsn: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    cfg = str(write_config(tmp_path / "hookd.toml"))
    async with Receiver() as rx:
        rx.script("/bad", [500])
        good = await _add(dsn, "--config", cfg, "--url", rx.url_for("/good"))
        bad = await _add(dsn, "--config", cfg, "--url", rx.url_for("/bad"), "--max-attempts", "1")
        event_id = await db.fetchval("SELECT hookd.publish('order.paid', '{\"n\": 1}')")
        async with running_daemon(dsn):
            await wait_until(
                db,
                "SELECT count(*) = 2 FROM hookd.deliveries WHERE state IN ('delivered', 'failed')",
            )
            good_d = await db.fetchval(
                "SELECT id FROM hookd.deliveries WHERE endpoint_id = $1", good
            )
            bad_d = await db.fetchval("SELECT id FROM hookd.deliveries WHERE endpoint_id = $1", bad)

            table = ok(await run_cli("deliveries", "--dsn", dsn, "--event", str(event_id)))
            assert re.search(rf"^\s*{good_d}\s+{event_id}\s+{good}\s+delivered\b", table, re.M)
            assert re.search(rf"^\s*{bad_d}\s+{event_id}\s+{bad}\s+failed\b", table, re.M)
            rows = orjson.loads(
                ok(await run_cli("deliveries", "--dsn", dsn, "--id", str(bad_d), "--json"))
            )
            assert [(r["id"], r["state"], r["last_status"]) for r in rows] == [
                (bad_d, "failed", 500)
            ]
            assert re.fullmatch(
                r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|\+00:00)", rows[0]["created_at"]
            )
            nothing(
                await run_cli(
                    "deliveries", "--dsn", dsn, "--event", str(event_id), "--state", "paused"
                ),
                "no deliveries match",
            )

            log = ok(await run_cli("attempts", str(bad_d), "--dsn", dsn))
            assert re.search(r"^\s*1\s+\S+ \S+\s+\d+\s+500\b", log, re.M), log
            entries = orjson.loads(
                ok(await run_cli("attempts", str(bad_d), "--dsn", dsn, "--json"))
            )
            assert [(a["attempt"], a["status"]) for a in entries] == [(1, 500)]

            # A delivered or unknown id: nothing to retry, exit 1, said on stderr.
            nothing(
                await run_cli("retry", "--dsn", dsn, "--id", str(good_d)),
                "no failed deliveries match",
                f"--id {good_d}",
            )
            error(
                await run_cli("retry", "--dsn", dsn, "--id", "99999"), "no delivery with id 99999"
            )
            nothing(
                await run_cli("replay", "--dsn", dsn, "--endpoint", str(good), "--dry-run"),
                "no failed deliveries match",
                "--state failed, the default",
            )

            # Resend the delivered one: a second request with the same webhook-id.
            out = ok(await run_cli("resend", str(good_d), "--dsn", dsn))
            assert "same webhook-id" in out, out
            got = await rx.wait_for(2, path="/good", timeout_s=10)
            assert got[0].webhook_id == got[1].webhook_id
            error(await run_cli("resend", "99999", "--dsn", dsn), "no delivery with id 99999")

            # Replay: the dry run counts exactly what the replay then does.
            await wait_until(
                db, "SELECT state = 'delivered' FROM hookd.deliveries WHERE id = $1", good_d
            )
            dry = ok(
                await run_cli(
                    "replay", "--dsn", dsn, "--endpoint", str(good), "--state", "delivered",
                    "--dry-run",
                )
            )  # fmt: skip
            assert dry.startswith("1 delivered delivery would be replayed"), dry
            assert await db.fetchval(
                "SELECT state = 'delivered' FROM hookd.deliveries WHERE id = $1", good_d
            )

            # The test event: a 2xx, so exit 0; a 500 exits 1.
            out = ok(await run_cli("endpoint", "test", str(good), "--dsn", dsn, "--wait", "10"))
            assert re.search(r"attempt 1: HTTP 204 in \d+ ms", out), out
            failed = await run_cli("endpoint", "test", str(bad), "--dsn", dsn, "--wait", "10")
            assert failed.returncode == 1 and "HTTP 500" in failed.stdout, failed.describe()

            out = ok(await run_cli("retry", "--dsn", dsn, "--id", str(bad_d)))
            assert out.startswith("1 failed delivery queued"), out
            await rx.wait_for(2, path="/bad", timeout_s=10)
    pings = [r.path for r in rx.requests if r.json["type"] == "hookd.ping"]
    assert sorted(pings) == ["/bad", "/good"]


async def test_status_is_a_readable_table(dsn: str, db: asyncpg.Connection) -> None:
    off = await _add(dsn, "--url", "https://off.example/h")
    broken = await _add(dsn, "--url", "https://broken.example/h")
    failing = await _add(dsn, "--url", "https://failing.example/h")
    await _add(dsn, "--url", "https://fine.example/h")
    ok(await run_cli("endpoint", "disable", str(off), "--dsn", dsn))
    await db.execute(
        "UPDATE hookd.endpoints SET breaker_open_until = now() + interval '5 minutes'"
        " WHERE id = $1",
        broken,
    )
    event_id = await db.fetchval("SELECT hookd.publish('order.paid', '{}')")
    await db.execute("UPDATE hookd.events SET fanned_out_at = now()")
    failing_d = await db.fetchval(
        "INSERT INTO hookd.deliveries (event_id, endpoint_id, attempts, next_attempt_at,"
        " lease_owner, event_created_at) VALUES ($1, $2, 1, now() + interval '30 seconds',"
        " gen_random_uuid(), (SELECT created_at FROM hookd.events WHERE id = $1))"
        " RETURNING id",
        event_id,
        failing,
    )
    await db.execute(
        "INSERT INTO hookd.attempts (delivery_id, attempt, started_at, duration_s, status)"
        " VALUES ($1, 1, now(), 0.1, 503)",
        failing_d,
    )

    text = ok(await run_cli("status", "--dsn", dsn))
    for repr_mark in ("{", "[", "datetime(", "None"):
        assert repr_mark not in text, (repr_mark, text)
    assert re.search(r"^pending\s+1 deliveries", text, re.M), text
    assert re.search(r"^failed attempts\s+1 in the last hour", text, re.M), text
    assert re.search(rf"^\s*{off}\s+disabled: disabled by operator\s+0\s", text, re.M), text
    assert re.search(rf"^\s*{broken}\s+breaker open until \S+ \S+\s+0\s", text, re.M), text
    assert re.search(rf"^\s*{failing}\s+failing\s+1\s+https://failing", text, re.M), text
    assert "fine.example" not in text, text
    assert re.search(
        r"^1 deliveries are leased by a daemon; if it stopped without handing them back"
        r" \(kill -9\), they are attempted again when their lease expires, by \S+ \S+ at the"
        r" latest \(daemon.lease_s\)$",
        text,
        re.M,
    ), text

    data = orjson.loads(ok(await run_cli("status", "--dsn", dsn, "--json")))
    assert data["leased"] == 1 and data["leases_expire_by"] is not None
    assert [(e["id"], e["failed_attempts_last_hour"]) for e in data["endpoints"]] == [
        (off, 0),
        (broken, 0),
        (failing, 1),
    ]


async def test_tables_show_the_whole_error_naming_the_timeout_setting(
    dsn: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    cfg = str(write_config(tmp_path / "hookd.toml"))
    async with Receiver() as rx:
        rx.script("/slow", ["hang"])
        ep = await _add(dsn, "--config", cfg, "--url", rx.url_for("/slow"), "--max-attempts", "1")
        ok(await run_cli("endpoint", "settings", str(ep), "--timeout", "0.5", "--dsn", dsn))
        await db.execute("SELECT hookd.publish('order.paid', '{}')")
        async with running_daemon(dsn):
            await wait_until(db, "SELECT count(*) = 1 FROM hookd.deliveries WHERE state = 'failed'")
        d, last_error = await db.fetchrow("SELECT id, last_error FROM hookd.deliveries")
        assert "timeout" in last_error and f"endpoint {ep}" in last_error, last_error
        for args in (("attempts", str(d)), ("deliveries", "--id", str(d)), ("deliveries",)):
            out = ok(await run_cli(*args, "--dsn", dsn))
            assert " ".join(last_error.split()) in out, out


async def test_retry_of_one_delivery_is_singular(dsn: str, db: asyncpg.Connection) -> None:
    ep = await _add(dsn, "--url", "https://receiver.example/h")
    event_id = await db.fetchval(
        "INSERT INTO hookd.events (event_type, payload, fanned_out_at)"
        " VALUES ('order.paid', '{}', now()) RETURNING id"
    )
    d = await db.fetchval(
        "INSERT INTO hookd.deliveries (event_id, endpoint_id, state, attempts, finished_at,"
        " event_created_at)"
        " VALUES ($1, $2, 'failed', 1, now(), (SELECT created_at FROM hookd.events WHERE id = $1))"
        " RETURNING id",
        event_id,
        ep,
    )
    out = ok(await run_cli("retry", "--id", str(d), "--dsn", dsn))
    assert out.startswith("1 failed delivery queued for another attempt"), out


async def test_an_unknown_id_is_a_mistake_an_empty_selection_is_not(
    dsn: str, db: asyncpg.Connection
) -> None:
    """Exit 2 for an id given explicitly that does not exist; exit 1 for a valid selection
    (existing ids) that matches nothing (hookd/cli.py's docstring, README)."""
    ep = str(await _add(dsn, "--url", "https://receiver.example/h"))
    for args, needle in (
        (("deliveries", "--id", "999"), "no delivery with id 999"),
        (("deliveries", "--endpoint", "999"), "no endpoint with id 999"),
        (("deliveries", "--event", "999"), "no event with id 999"),
        (("attempts", "999"), "no delivery with id 999"),
        (("retry", "--id", "999"), "no delivery with id 999"),
        (("retry", "--endpoint", "999"), "no endpoint with id 999"),
        (("replay", "--endpoint", "999", "--dry-run"), "no endpoint with id 999"),
        (("resend", "999"), "no delivery with id 999"),
    ):
        error(await run_cli(*args, "--dsn", dsn), needle)
    for args in (
        ("deliveries", "--endpoint", ep),
        ("deliveries", "--state", "failed"),
        ("retry", "--endpoint", ep),
        ("replay", "--endpoint", ep, "--dry-run"),
    ):
        nothing(await run_cli(*args, "--dsn", dsn), "match")
